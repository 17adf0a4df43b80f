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
    """All CIFAR-10 images: ``{"image": uint8 (3, 32, 32), "class_idx": int, "index": int}`` per item.

    ``dataset_args`` (in the config):

    - ``augment`` (default true): augment training batches;
    - ``flip``: ``random`` (default: each image mirrored with probability 1/2, every batch) or
      ``alternating`` (a random half of the images mirrored in odd epochs, the other half in
      even ones: every image is seen both ways in every two epochs, as airbench does);
    - ``translate`` (default 4): random shifts of up to this many pixels;
    - ``padding`` (default ``zeros``): what the shifts bring in, ``zeros`` or ``reflect``.

    ``tta_views`` gives the views test-time augmentation averages over (``training_params.tta_outputs``):
    each image and its mirror image, and both shifted by one pixel up-left and down-right.
    """

    def __init__(self, cfg):
        (train_x, train_y), (test_x, test_y) = load_cifar10(Path(cfg["dataloading_params"]["dataset_path"]))
        images = torch.from_numpy(np.concatenate([train_x, test_x]))  # (N, 3, 32, 32) uint8
        self.setup(images, np.concatenate([train_y, test_y]).astype(np.int64), len(train_y), cfg)

    def setup(self, images, labels, num_train, cfg):
        """Hold ``images`` uint8 (N, 3, 32, 32) and ``labels`` (N,), the first ``num_train`` of them
        the training images, with the config's ``dataset_args``."""
        args = cfg["dataloading_params"].get("dataset_args") or {}
        self.augment = bool(args.get("augment", True))
        self.flip, self.translate = args.get("flip", "random"), int(args.get("translate", 4))
        self.padding = args.get("padding", "zeros")
        if self.flip not in ("random", "alternating") or self.padding not in ("zeros", "reflect"):
            raise UserError(
                f"dataloading_params.dataset_args: found flip: {self.flip!r}, padding: {self.padding!r}; "
                "expected flip: random or alternating, padding: zeros or reflect"
            )
        self.images, self.labels, self.num_train = images, labels, num_train
        # which images the alternating flip mirrors in even epochs: fixed by the run's seed
        seed = int(cfg.get("training_params", {}).get("seed", 0))
        self.mirrored = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed)) < 0.5
        self.epoch = 1
        self._on_device = {}  # device -> (MEAN, STD, mirrored) there: no host-to-device copy per batch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "class_idx": self.labels[i], "index": i}

    def test_indices(self):
        """The official test images: kept out of train / val / dev, evaluated with --split test."""
        return range(self.num_train, len(self.labels))

    def set_epoch(self, epoch):
        """Called by the runtime before each training epoch (from 1): the alternating flip's parity."""
        self.epoch = epoch

    def _constants(self, device):
        if device not in self._on_device:
            self._on_device[device] = (MEAN.to(device), STD.to(device), self.mirrored.to(device))
        return self._on_device[device]

    def transform_batch(self, batch, train):
        """Scale to 0..1, augment training batches, normalise; on whatever device the batch is."""
        mean, std, mirrored = self._constants(batch["image"].device)
        images = batch["image"].float().div_(255)  # (B, 3, 32, 32)
        if train and self.augment and self.flip == "random":
            images = random_crop_flip(images, self.translate, self.padding)
        elif train and self.augment:  # alternating: the image's fixed half, swapped every other epoch
            flip = mirrored[batch["index"]] ^ (self.epoch % 2 == 0)
            images = mirror(random_translate(images, self.translate, self.padding), flip)
        images = (images - mean) / std
        batch["image"] = images.contiguous(memory_format=torch.channels_last)
        return batch

    def tta_views(self, batch):
        """``[(weight, view)]``: the batch (1/4) and its mirror image (1/4), and each shifted by one
        pixel up-left and down-right (1/8 each), reflected at the border (airbench's level 2)."""
        images = batch["image"]  # (B, 3, 32, 32), normalised
        padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
        size = images.shape[-1]
        shifted = [padded[:, :, :size, :size], padded[:, :, 2:, 2:]]
        views = [(0.25, images), (0.25, images.flip(3))]
        views += [(0.125, view) for s in shifted for view in (s, s.flip(3))]
        return [(w, {**batch, "image": v.contiguous(memory_format=torch.channels_last)}) for w, v in views]


def random_crop_flip(images: torch.Tensor, padding: int, mode: str = "zeros") -> torch.Tensor:
    """Per-image random crop of a padded batch, then a random horizontal flip, vectorised."""
    shifted = random_translate(images, padding, mode)
    return mirror(shifted, torch.rand(len(images), device=images.device) < 0.5)


def mirror(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """The batch with the images where ``which`` (B,) is true mirrored left to right."""
    return torch.where(which.view(-1, 1, 1, 1), images.flip(3), images)


def random_translate(images: torch.Tensor, pixels: int, padding: str = "zeros") -> torch.Tensor:
    """Per-image random shift by up to ``pixels`` in each direction, vectorised; ``padding``:
    ``zeros`` or ``reflect`` fills what comes in from outside."""
    if pixels <= 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pixels,) * 4, mode="constant" if padding == "zeros" else padding)
    dy = torch.randint(0, 2 * pixels + 1, (b, 1, 1), device=images.device)
    dx = torch.randint(0, 2 * pixels + 1, (b, 1, 1), device=images.device)
    rows = (torch.arange(h, device=images.device).view(1, h, 1) + dy).expand(b, h, w)  # (B, H, W)
    cols = (torch.arange(w, device=images.device).view(1, 1, w) + dx).expand(b, h, w)
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
