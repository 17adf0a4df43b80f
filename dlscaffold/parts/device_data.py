"""Data held on the device (``dataloading_params.device_data: true``): no DataLoader, no copies per step.

:class:`DeviceLoader` stacks a split's items once (the same :func:`~dlscaffold.data.collate` rule
as the DataLoader path) and moves them to the run's device; each batch is then an index selection
in exactly the order of the split's :class:`~dlscaffold.data.EpochSampler`. So a run gives the
same batches, and on the CPU bitwise the same weights, as with the DataLoader; ``--resume``
continues mid-epoch at the same position; data-parallel ranks take their own shards. Like a
DataLoader's iterator it draws one number from torch's RNG each epoch, so the RNG stream (and the
augmentation of ``transform_batch``) is the same on both paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from dlscaffold.data import Collate, EpochSampler, _NamedErrors, epoch_sampler, make_loader
from dlscaffold.errors import UserError

MEMORY_SHARE = 0.5  # a split may take at most this share of the device's free memory


def _bytes(batch: dict[str, Any]) -> int:
    return sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf: no bound
        return 1 << 62


def split_loader(on_device: bool, *args: Any, split: str, device: torch.device) -> DataLoader | DeviceLoader:
    """The loader of ``split``: :func:`~dlscaffold.data.make_loader`'s DataLoader of ``args`` (its
    parameters, in its order), or with ``on_device`` the same batches from a :class:`DeviceLoader`
    on ``device`` (``num_workers`` and ``pin_memory`` have nothing to do there)."""
    if not on_device:
        return make_loader(*args)
    dataset, indices, batch_size, shuffle, seed, _num_workers, _pin_memory, *world = args
    sampler = epoch_sampler(indices, batch_size, shuffle, seed, *world)
    return DeviceLoader(_NamedErrors(dataset), split, sampler, batch_size, device)


class DeviceLoader:
    """A split's items stacked on ``device``, batched in the sampler's order (see the module)."""

    def __init__(self, dataset: Any, split: str, sampler: EpochSampler, batch_size: int, device: torch.device):
        self.sampler, self.batch_size, self.device = sampler, batch_size, device
        self.collate_fn = Collate()  # its limits (class index ranges) are checked once on the whole split
        self._checked: dict[str, Any] = {}
        self._fixed_rows: tuple[int, tuple[torch.Tensor, list[int]]] | None = None  # see _epoch_rows
        indices = sampler.indices
        self.rows = torch.zeros(max(indices, default=-1) + 1, dtype=torch.long)  # dataset index -> row of the stack
        self.rows[indices] = torch.arange(len(indices))
        first = self.collate_fn([dataset[indices[0]]]) if indices else {}
        needed, free = _bytes(first) * len(indices), free_memory(device)
        if needed > MEMORY_SHARE * free:
            raise UserError(
                f"dataloading_params.device_data: the '{split}' split stacks to {needed / 1e9:.2f} GB, more than "
                f"{MEMORY_SHARE:.0%} of the {free / 1e9:.2f} GB free on {device}; set device_data: false to load "
                "batches with the DataLoader"
            )
        stacked = self.collate_fn([dataset[i] for i in indices]) if indices else {}
        self.data = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in stacked.items()}

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def _check_limits(self) -> None:
        """The class index ranges the pre-run check learned, over the whole split, once each."""
        if self._checked != self.collate_fn.limits:
            self.collate_fn.check(self.data)
            self._checked = dict(self.collate_fn.limits)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # the draw a DataLoader's iterator makes when it is created: the same RNG stream on both paths
        torch.empty((), dtype=torch.int64).random_()
        self._check_limits()
        return self._batches(*self._epoch_rows())

    def _epoch_rows(self) -> tuple[torch.Tensor, list[int]]:
        """The epoch's rows of the stack in the sampler's order, on the device (one copy an epoch),
        and as numbers when some values are lists. An unshuffled split's (validation's) are the same
        every epoch: made once."""
        fixed = None if self.sampler.shuffle else self.sampler.start
        if fixed is not None and self._fixed_rows is not None and self._fixed_rows[0] == fixed:
            return self._fixed_rows[1]
        order = self.rows[self.sampler.order()]
        rows = order.to(self.device, non_blocking=True)
        listed = order.tolist() if any(not isinstance(v, torch.Tensor) for v in self.data.values()) else []
        if fixed is not None:
            self._fixed_rows = (fixed, (rows, listed))
        return rows, listed

    def _batches(self, rows: torch.Tensor, listed: list[int]) -> Iterator[dict[str, Any]]:
        """``listed``: the rows as numbers, for the values that are lists (strings, ...)."""
        for start in range(0, len(rows), self.batch_size):
            chosen = rows[start : start + self.batch_size]
            yield {
                k: v.index_select(0, chosen)
                if isinstance(v, torch.Tensor)
                else [v[r] for r in listed[start : start + self.batch_size]]
                for k, v in self.data.items()
            }
