"""The GAN benchmark's data, generated in memory from a seed: no download, no files.

``num_points`` images ``(3, 32, 32)`` in [-1, 1] (``dataset_args``: ``num_points``, default 2560,
and ``seed``): each a random colour pattern of 10 plus noise, so that the generator has something to
learn. Each index also has its own noise vector for the generator, drawn from the same seed:
dcgan/main.py draws fresh noise each step; a noise per index makes every phase of a step, and both
arms, read the same noise. Plain PyTorch: the hand-written loop imports this file too.
"""

from __future__ import annotations

import torch
from models import NOISE_DIM


def synthetic_images(num_points: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float (N, 3, 32, 32) in [-1, 1], noise float (N, NOISE_DIM, 1, 1))``, the same for the
    same arguments."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 3, 32, 32, generator=gen) * 2 - 1
    kinds = torch.randint(0, 10, (num_points,), generator=gen)
    images = (0.7 * patterns[kinds] + 0.3 * torch.randn(num_points, 3, 32, 32, generator=gen)).clamp_(-1, 1)
    return images, torch.randn(num_points, NOISE_DIM, 1, 1, generator=gen)


class CustomDataSet(torch.utils.data.Dataset):
    """``{"image": (3, 32, 32), "noise": (NOISE_DIM, 1, 1)}`` per item."""

    def __init__(self, cfg):
        args = cfg["dataloading_params"].get("dataset_args") or {}
        self.images, self.noise = synthetic_images(int(args.get("num_points", 2560)), int(args.get("seed", 0)))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "noise": self.noise[i]}
