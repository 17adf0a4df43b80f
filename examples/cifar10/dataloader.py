"""CIFAR-10 for dlscaffold: the 60,000 images in memory as uint8, augmented on the device.

``dataset_path`` may hold either layout, detected automatically:

- the official python batches: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
  ``batches.meta`` (directly, or in a ``cifar-10-batches-py`` subfolder);
- an ImageFolder tree: ``train/<class>/*.jpg|png`` and ``test/<class>/*.jpg|png``.

Items 0..49,999 are the official training images (split by the runtime into train / val / dev);
the official 10,000 test images follow and form the ``test`` split (``test_indices``), so that
``dlscaffold evaluate RUN --split test`` reports test accuracy.

No data is downloaded unless you ask: ``python dataloader.py download DIR`` fetches the official
files with torchvision (internet needed).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from dlscaffold.errors import UserError  # a one-line error for the CLI, no traceback

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# per-channel statistics of the CIFAR-10 training images, on the 0..1 scale
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


class CustomDataSet(torch.utils.data.Dataset):
    """All CIFAR-10 images: ``{"image": uint8 (3, 32, 32), "class_idx": int}`` per item.

    ``dataset_args`` (in the config): ``augment`` (default true): random crop with 4-pixel
    padding and horizontal flips on training batches.
    """

    def __init__(self, cfg):
        params = cfg["dataloading_params"]
        self.augment = bool(params.get("dataset_args", {}).get("augment", True))
        (train_x, train_y), (test_x, test_y) = load_cifar10(Path(params["dataset_path"]))
        self.images = torch.from_numpy(np.concatenate([train_x, test_x]))  # (N, 3, 32, 32) uint8
        self.labels = np.concatenate([train_y, test_y]).astype(np.int64)  # (N,)
        self.num_train = len(train_y)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "class_idx": self.labels[i]}

    def test_indices(self):
        """The official test images: kept out of train / val / dev, evaluated with --split test."""
        return range(self.num_train, len(self.labels))

    def transform_batch(self, batch, train):
        """Scale to 0..1, augment training batches, normalise; on whatever device the batch is."""
        images = batch["image"].float().div_(255)  # (B, 3, 32, 32)
        if train and self.augment:
            images = random_crop_flip(images, padding=4)
        images = (images - MEAN.to(images.device)) / STD.to(images.device)
        batch["image"] = images.contiguous(memory_format=torch.channels_last)
        return batch


def random_crop_flip(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-image random crop of a zero-padded batch and random horizontal flip, vectorised."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=images.device)
    rows = (torch.arange(h, device=images.device).view(1, h, 1) + dy).expand(b, h, w)  # (B, H, W)
    cols = (torch.arange(w, device=images.device).view(1, 1, w) + dx).expand(b, h, w)
    flip = torch.rand(b, 1, 1, device=images.device) < 0.5
    cols = torch.where(flip, dx + (w - 1) - torch.arange(w, device=images.device).view(1, 1, w), cols)
    batch_idx = torch.arange(b, device=images.device).view(b, 1, 1).expand(b, h, w)
    return padded.permute(0, 2, 3, 1)[batch_idx, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


# ----------------------------------------------------------------------------- the two layouts


def load_cifar10(path: Path):
    """``((train_images, train_labels), (test_images, test_labels))`` from either layout.

    Images are uint8 ``(N, 3, 32, 32)``, labels int ``(N,)`` in the official class order.
    """
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "test_batch").is_file() and _batch_files(folder):
            return load_python_batches(folder)
    if (path / "train").is_dir() and (path / "test").is_dir():
        return load_image_folder(path / "train"), load_image_folder(path / "test")
    raise UserError(
        f"dataloading_params.dataset_path: no CIFAR-10 found in '{path}'; expected the official python batches "
        "(data_batch_1..5, test_batch, batches.meta) or an ImageFolder tree (train/<class>/*.jpg|png, test/<class>/*)"
    )


def _read_batch(file: Path):
    with open(file, "rb") as fh:
        entry = pickle.load(fh, encoding="bytes")  # the official format is a pickle: only open files you trust
    images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(entry[b"labels"], dtype=np.int64)


def _batch_files(folder: Path) -> list[Path]:
    """``data_batch_1`` .. ``data_batch_5`` (or however many there are), in numeric order."""
    files = [f for f in folder.glob("data_batch_*") if f.name.split("_")[-1].isdigit()]
    return sorted(files, key=lambda f: int(f.name.split("_")[-1]))


def load_python_batches(folder: Path):
    train = [_read_batch(file) for file in _batch_files(folder)]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return (train_x, train_y), _read_batch(folder / "test_batch")


def load_image_folder(folder: Path):
    """Images of ``folder/<class>/*`` in class order, files sorted by name within a class."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if set(classes) == set(CLASSES):
        classes = list(CLASSES)  # the official label numbering
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).iterdir()):
            if file.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(file) as image:
                    images.append(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
                labels.append(label)
    if not images:
        raise UserError(f"dataloading_params.dataset_path: no .jpg or .png images under '{folder}/<class>/'")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def download(dest: str) -> None:
    """Fetch the official python batches into ``dest`` with torchvision (opt-in; needs internet)."""
    try:
        from torchvision.datasets import CIFAR10
    except ImportError:
        sys.exit("download needs torchvision: pip install torchvision")
    CIFAR10(dest, train=True, download=True)
    print(f"CIFAR-10 is in {Path(dest) / 'cifar-10-batches-py'}; set dataloading_params.dataset_path to it")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "download":
        sys.exit("usage: python dataloader.py download DIR")
    download(sys.argv[2])
