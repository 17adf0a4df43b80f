"""The CIFAR-10 example's ``CustomDataSet`` (its fast augmentation: alternating flip, reflected
2-pixel shifts, normalisation, and its test-time augmentation views) on synthetic CIFAR-shaped
images from ``benchmarks/project``'s generator instead of files. Plain PyTorch: the hand-written
loop uses this class too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from example_code import BENCHMARKS, example, load  # noqa: E402  (benchmarks/example_code.py)

# the resnet benchmark's generator of synthetic CIFAR-shaped images
synthetic_cifar = load(BENCHMARKS / "project" / "dataloader.py", "dlscaffold_benchmark_data").synthetic_cifar


class CustomDataSet(example("dataloader").CustomDataSet):
    """``{"image": uint8 (3, 32, 32), "class_idx": int64, "index": int}`` per item; ``dataset_args``:
    ``num_points`` (default 10752), ``seed``, and the example's ``augment``, ``flip``, ``translate``,
    ``padding``."""

    def __init__(self, cfg):
        args = cfg["dataloading_params"].get("dataset_args") or {}
        images, labels = synthetic_cifar(int(args.get("num_points", 10752)), int(args.get("seed", 0)))
        self.setup(images, labels.numpy(), len(labels), cfg)  # every point a training point: no test split
