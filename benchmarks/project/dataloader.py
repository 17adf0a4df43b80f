"""Synthetic CIFAR-shaped data, generated in memory from a seed: no download, no files.

``num_points`` uint8 images ``(3, 32, 32)`` in 10 classes (``dataset_args``: ``num_points``,
default 5120, and ``seed``). Each class has its own random colour pattern; an image is its class's
pattern plus noise, so that the model learns something and both arms' accuracies can be compared.
Batches are scaled and normalised on the device (``transform_batch``), as in the CIFAR-10 example.
Plain PyTorch: the hand-written loop imports this file too.
"""

from __future__ import annotations

import torch

NUM_CLASSES = 10


def synthetic_cifar(num_points: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,))``, the same for the same arguments."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(NUM_CLASSES, 3, 32, 32, generator=gen) * 255  # one pattern per class
    labels = torch.randint(0, NUM_CLASSES, (num_points,), generator=gen)
    noise = torch.randn(num_points, 3, 32, 32, generator=gen) * 96
    images = (0.5 * patterns[labels] + 64 + noise).clamp_(0, 255).to(torch.uint8)
    return images, labels


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, 32, 32)`` -> float, zero mean and unit scale, channels-last (what the model expects)."""
    return ((images.float() - 127.5) / 64.0).contiguous(memory_format=torch.channels_last)


class CustomDataSet(torch.utils.data.Dataset):
    """``{"image": uint8 (3, 32, 32), "class_idx": int64 ()}`` per item."""

    def __init__(self, cfg):
        args = cfg["dataloading_params"].get("dataset_args") or {}
        self.images, self.labels = synthetic_cifar(int(args.get("num_points", 5120)), int(args.get("seed", 0)))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "class_idx": self.labels[i]}

    def transform_batch(self, batch, train):
        batch["image"] = normalise(batch["image"])
        return batch
