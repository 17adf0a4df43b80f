"""The dataset side of a run: the ``idx_dict`` split, collation, samplers and loaders.

The split (the older deep_learning tool's ``idx_dict``) divides ``range(len(dataset))`` into ``train`` / ``val`` /
``dev`` index lists, deterministically from the seed; it is saved as JSON with every run and can be
reused through ``idx_dict_path``. A project may also provide a ``test`` split (see
:func:`project_test_indices`).

Collation rule (:func:`collate`): values of a sample dict are stacked per name. NumPy arrays and
Python numbers become tensors by kind: floating -> ``float32``, signed/unsigned integer -> ``int64``,
bool -> ``bool``. Torch tensors keep their dtype (the project chose it, e.g. ``uint8`` images).
Strings are gathered into a list.

A dataset that defines ``__getitems__(indices)`` returning a dict of batched values (arrays, tensors
or lists whose first dimension is the batch) is read a batch at a time: the DataLoader calls it with
each batch's indices (torch's batched fetch), and :func:`collate_batch` applies the same rule to the
whole batch. It must give what :func:`collate` gives for ``[dataset[i] for i in indices]`` (the
runtime reads single points through ``__getitem__`` too: the pre-run check, ``device_data``). A
``__getitems__`` returning a list of sample dicts (torch's own convention) is collated point by point.
"""

from __future__ import annotations

import json
import math
import operator
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dlscaffold.errors import CodeError, UserError, first_line
from dlscaffold.records.rundir import write_text_atomic

SPLITS = ("train", "val", "dev")

# ------------------------------------------------------------------------------------ split


def make_idx_dict(num_points: int, val_ratio: float, dev_num: int, seed: int) -> dict[str, Any]:
    """Split ``range(num_points)`` into train / val / dev index lists.

    ``val`` holds ``round(val_ratio * N)`` points (at least one when ``val_ratio > 0``), ``train``
    the rest; ``dev`` is a small subset of ``train`` (about ``dev_num`` points) for CPU debugging.
    """
    if num_points < 2:
        raise UserError(f"dataset: found {num_points} points; expected at least 2 to split into train and val")
    order = np.random.default_rng(seed).permutation(num_points)
    num_val = min(max(round(val_ratio * num_points), 1 if val_ratio > 0 else 0), num_points - 1)
    val, train = order[:num_val], order[num_val:]
    dev = train[: min(dev_num, len(train))]
    return {
        "train": sorted(int(i) for i in train),
        "val": sorted(int(i) for i in val),
        "dev": sorted(int(i) for i in dev),
        "num_points": int(num_points),
        "seed": int(seed),
    }


def save_idx_dict(idx_dict: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, json.dumps(idx_dict))


def split_problem(idx_dict: dict[str, Any], num_points: int | None) -> str | None:
    """What is wrong with a saved split, in one line (None when it is sound).

    Each split must hold unique integer indices in ``[0, num_points)``, and ``train`` and ``val``
    must not share a point. ``num_points`` None: the range is checked later, against the dataset.
    """
    for name in (*SPLITS, "test"):
        indices = idx_dict.get(name)
        if indices is None and name in ("dev", "test"):
            continue
        problem = indices_problem(indices, num_points)
        if problem is not None:
            return f"split '{name}': {problem}"
    shared = sorted(set(idx_dict["train"]) & set(idx_dict["val"]))
    if shared:
        return f"splits 'train' and 'val' share {len(shared)} point(s), the first {shared[0]}; expected disjoint splits"
    return None


def indices_problem(indices: Any, num_points: int | None) -> str | None:
    """What is wrong with one list of dataset indices, in one phrase (None when it is sound): each
    must be an integer in ``[0, num_points)`` (``num_points`` None: from 0), each point once."""
    if not isinstance(indices, list):
        return f"found {type(indices).__name__}; expected a list of dataset indices"
    seen: set[int] = set()
    for i in indices:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0 or (num_points is not None and i >= num_points):
            limit = f" below {num_points}" if num_points is not None else ""
            return f"index {i!r} is not a dataset index; expected integers from 0{limit}"
        if i in seen:
            return f"index {i} appears twice; expected each point once"
        seen.add(i)
    return None


# What splitting costs per point, at the least: the shuffled order, the index lists and their JSON,
# the loaders' orders (measured: about 44 bytes for the split and its JSON alone).
SPLIT_BYTES_PER_POINT = 64


def dataset_size(dataset: Dataset) -> int:
    """``len(dataset)``; a ``__len__`` that raises, or returns no whole number of at least 0, is one
    line, and so is a length whose split would not fit in the memory available (a ``__len__`` that
    returns 10**12 is refused here, before anything is allocated)."""
    try:
        size = len(dataset)
    except Exception as exc:  # raised inside __len__, or a negative or non-integer result (len's own check)
        raise UserError(
            f"CustomDataSet.__len__ failed: {first_line(exc)}; it must return the number of points, "
            "a whole number of at least 0"
        ) from exc
    available = available_memory()
    if available is not None and size * SPLIT_BYTES_PER_POINT > available:
        raise UserError(
            f"CustomDataSet.__len__ returned {size:,}: splitting that many points needs at least "
            f"{_gib(size * SPLIT_BYTES_PER_POINT)} of memory, more than the {_gib(available)} available; "
            "check that __len__ returns the number of points (e.g. len(self.files), not a size in bytes)"
        )
    return size


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux's MemAvailable, else the machine's
    physical memory), or None when neither can be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf: no bound
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def _as_index(value: Any) -> Any:
    """An integer-like value (NumPy integer, 0-d integer tensor) as an ``int``; anything else as it is."""
    try:
        return value if isinstance(value, bool) else operator.index(value)
    except TypeError:
        return value


def project_test_indices(dataset: Dataset) -> list[int] | None:
    """The project's test points, if its dataset names them.

    A ``CustomDataSet`` with a ``test_indices()`` method returning dataset indices provides a
    ``test`` split: those points never enter train / val / dev and ``dlscaffold evaluate --split
    test`` reads them. They are checked as a saved split is: each an index of the dataset, once.

    Raises:
        UserError: the method fails, or returns an index twice or one outside the dataset.
    """
    method = getattr(dataset, "test_indices", None)
    if not callable(method):
        return None
    try:
        found = method()
        indices = [_as_index(i) for i in (found.tolist() if hasattr(found, "tolist") else found)]  # or an array
    except Exception as exc:  # raised inside test_indices(), or a result that is not iterable
        raise UserError(
            f"CustomDataSet.test_indices() failed: {first_line(exc)}; it must return the test points' dataset indices"
        ) from exc
    problem = indices_problem(indices, dataset_size(dataset))
    if problem is not None:
        raise UserError(
            f"CustomDataSet.test_indices(): the test split does not fit the dataset: {problem}; "
            "fix test_indices() in dataloader.py"
        )
    return indices


def batch_transform(dataset: Dataset) -> Any:
    """The dataset's ``transform_batch(batch, train) -> batch``, or the identity.

    A ``CustomDataSet`` may define it to normalise and augment whole batches after they reach the
    device (cheap, vectorised, and on the GPU when there is one); ``train`` is True for training
    batches only, so augmentation can be skipped for validation and evaluation.
    """
    method = getattr(dataset, "transform_batch", None)
    return method if callable(method) else (lambda batch, train: batch)


# -------------------------------------------------------------------------------- collation


def _to_tensor(values: list[Any], name: str) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, str):
        return list(values)
    array = np.asarray(values) if not isinstance(first, np.ndarray) else np.stack(values)
    kind = array.dtype.kind
    if kind == "f":
        return torch.from_numpy(array.astype(np.float32, copy=False))
    if kind in "iu":
        return torch.from_numpy(array.astype(np.int64, copy=False))
    if kind == "b":
        return torch.from_numpy(array)
    raise UserError(
        f"dataset item '{name}': found values of dtype {array.dtype}; expected numbers, arrays, tensors or strings"
    )


class DatasetItemError(CodeError):
    """An item that could not be read or stacked; the message names the index (or key) and the cause."""

    where = "the dataset"  # a class attribute: it survives a DataLoader worker's re-raise


_BATCH_DTYPES = {"f": np.float32, "i": np.int64, "u": np.int64, "b": np.bool_}  # by kind, as _to_tensor


def _batch_to_tensor(value: Any, name: str) -> Any:
    """One value of a batch read whole (``__getitems__``), by :func:`_to_tensor`'s rule. A view of
    other memory (a slice of the dataset's array) is copied, as stacking points copies: a batch never
    shares memory with the dataset (``transform_batch`` may change it in place)."""
    if isinstance(value, torch.Tensor):  # the project's dtype
        return value.clone() if value._base is not None else value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return list(value)
    array = np.asarray(value)
    if array.ndim == 0:
        raise DatasetItemError(
            f"CustomDataSet.__getitems__: '{name}' is a single {array.dtype} value; expected one value per point "
            "of the batch (an array, a tensor or a list whose first dimension is the batch)"
        )
    if array.dtype.kind == "U":  # strings: a list, as points' strings are gathered
        return array.tolist()
    dtype = _BATCH_DTYPES.get(array.dtype.kind)
    if dtype is None:
        raise UserError(
            f"dataset item '{name}': found values of dtype {array.dtype}; expected numbers, arrays, tensors or strings"
        )
    fresh = array.base is None and array.flags.c_contiguous  # its own memory, laid out as a stack's
    return torch.from_numpy(array.astype(dtype, order="C", copy=not fresh))


def collate_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch read whole (a dict of batched values from ``__getitems__``) as tensors, by the rule of
    :func:`collate`: the same tensors as collating its points one by one."""
    return {name: _batch_to_tensor(value, name) for name, value in batch.items()}


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of sample dicts into a dict of batched tensors (see the module's rule)."""
    first = samples[0]
    if not isinstance(first, dict):
        raise UserError(f"CustomDataSet.__getitem__ returned {type(first).__name__}; expected a dict of named values")
    batch = {}
    for name in first:
        try:
            batch[name] = _to_tensor([s[name] for s in samples], name)
        except UserError:
            raise
        except Exception as exc:  # a missing key, values of different shapes, ...
            raise DatasetItemError(
                f"the items' '{name}' values do not stack into a batch ({first_line(exc)}); "
                "every item must hold the same keys with values of one shape"
            ) from exc
    return batch


class Collate:
    """:func:`collate`, then the class indices' ranges the pre-run check learned (:meth:`limit`):
    a dataset tensor a built-in reads as class indices must hold values in ``[0, K)``, K the classes
    the model's logits give. Checked on the CPU batch, before it reaches the device, so a label out
    of range is one line at its batch: never a device sync, never a CUDA device-side assert."""

    def __init__(self) -> None:
        self.limits: dict[str, tuple[int, str, str]] = {}  # dataset tensor -> (K, whose classes, the reader)

    def limit(self, name: str, k: int, owner: str, where: str) -> None:
        """Require ``name``'s values in ``[0, k)``: ``where`` (a loss's key path) reads them as
        indices of the classes ``owner`` gives (``"Classifier outputs"``)."""
        if name not in self.limits or k < self.limits[name][0]:
            self.limits[name] = (k, owner, where)

    def __call__(self, samples: Sequence[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        batch = collate_batch(samples) if isinstance(samples, dict) else collate(samples)
        self.check(batch)
        return batch

    def check(self, batch: dict[str, Any]) -> None:
        """Raise :class:`DatasetItemError` when a limited tensor of ``batch`` holds a value outside
        its ``[0, K)`` (one min/max each: no sync for a CPU batch, one for a split on the device)."""
        for name, (k, owner, where) in self.limits.items():
            value = batch.get(name)
            if isinstance(value, torch.Tensor) and value.numel():
                low, high = (int(x) for x in torch.aminmax(value))
                if low < 0 or high >= k:
                    raise DatasetItemError(
                        f"{where}: the dataset's '{name}' holds {low if low < 0 else high} but {owner} {k} "
                        f"classes; expected class indices in [0, {k}): fix the labels, or the model's number of classes"
                    )


class _NamedErrors(Dataset):
    """The project's dataset, with an error in ``__getitem__`` naming the index it failed on."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:
            raise DatasetItemError(f"CustomDataSet[{index}] failed: {first_line(exc)}") from exc


class _NamedBatchErrors(_NamedErrors):
    """:class:`_NamedErrors` for a dataset with ``__getitems__``: the DataLoader reads a batch at a
    time through it (see the module); a batch whose values do not hold one entry per point is refused."""

    def __getitems__(self, indices: list[int]) -> Any:
        try:
            batch = self.dataset.__getitems__(indices)
        except Exception as exc:
            raise DatasetItemError(f"CustomDataSet.__getitems__({_shown(indices)}) failed: {first_line(exc)}") from exc
        if isinstance(batch, dict):
            for name, value in batch.items():
                size = len(value) if hasattr(value, "__len__") and getattr(value, "ndim", 1) else None
                if size != len(indices):
                    raise DatasetItemError(
                        f"CustomDataSet.__getitems__({_shown(indices)}): '{name}' holds "
                        f"{'no batch' if size is None else size} value(s) for {len(indices)} points; "
                        "expected one per point, in the order of the indices"
                    )
        return batch


def _shown(indices: list[int]) -> str:
    """A batch's indices for a message: ``[4, 17, 3, ...]``."""
    return f"[{', '.join(map(str, indices[:3]))}{', ...' if len(indices) > 3 else ''}]"


def named_errors(dataset: Dataset) -> _NamedErrors:
    """The dataset as the loaders read it: errors name the point (or batch); a dataset with
    ``__getitems__`` is read a batch at a time."""
    return _NamedBatchErrors(dataset) if callable(getattr(dataset, "__getitems__", None)) else _NamedErrors(dataset)


# ---------------------------------------------------------------------------------- loading


class EpochSampler(Sampler[int]):
    """Yields a fixed list of dataset indices, reshuffled each epoch from ``(seed, epoch)``.

    The order depends on nothing but the seed and the epoch, so a resumed run sees the same data
    order as an uninterrupted one. Under data-parallel training, rank ``r`` of ``N`` takes positions
    ``r, r+N, r+2N, ...`` of the epoch's order: the ranks' ``k``-th batches together are the
    ``k``-th batch a single process with an ``N`` times larger batch would draw, and no point is
    repeated. With ``batch_size`` given (training), a rank whose share ends a batch early gets one
    padding batch (a repeated point that :meth:`share` weighs 0), so every rank takes the same
    number of steps. Without it (validation, evaluation) there is no padding: each point of the
    split is read once, by one rank.

    With a global batch of ``G = N x batch_size`` points, the epoch's ``k``-th global batch is
    positions ``[kG, (k+1)G)`` of its order whatever ``N`` (any that divides ``G``), so a run
    resumed on another number of processes with the same global batch goes on with exactly the
    points it had not trained on (:meth:`skip_batches`).
    """

    def __init__(
        self,
        indices: Sequence[int],
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
    ):
        self.indices = list(indices)
        self.index_tensor = torch.tensor(self.indices, dtype=torch.long)  # made once: order() indexes it
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch, self.start = 1, 0
        self.num_samples = len(range(rank, len(self.indices), world_size))
        if batch_size is not None and world_size > 1:
            steps = math.ceil(math.ceil(len(self.indices) / world_size) / batch_size)  # rank 0's, the most
            self.num_samples = max(self.num_samples, (steps - 1) * batch_size + 1)  # + a padding batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use the order of ``epoch``, from position ``start`` of this process's share (a run
        resumed mid-epoch continues where it stopped)."""
        self.epoch, self.start = epoch, start

    def skip_batches(self, batches: int) -> None:
        """Start the epoch after its first ``batches`` global batches (a run resumed mid-epoch, on
        this number of processes or another with the same global batch): ``batches`` of this
        process's batches into its share."""
        self.start = batches * (self.batch_size or len(self.indices))

    def share(self, batch: int) -> tuple[int, int]:
        """``(points of this rank, points of all ranks)`` in the epoch's ``batch``-th batch; a padding
        batch has 0 points of this rank."""
        per_step = self.world_size * (self.batch_size or len(self.indices))
        total = min(per_step, len(self.indices) - batch * per_step)
        return len(range(self.rank, max(total, 0), self.world_size)), total

    def order(self) -> torch.Tensor:
        """This process's indices of the epoch, from ``start``, as one tensor: what :meth:`__iter__` yields."""
        order = self.index_tensor
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % 2**63)
            order = order[torch.randperm(len(self.indices), generator=generator)]
        mine = order[self.rank :: self.world_size]
        mine = torch.cat([mine, order[: self.num_samples - len(mine)]])  # the padding point, if any
        return mine[self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def epoch_sampler(
    indices: Sequence[int], batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
) -> EpochSampler:
    """The sampler of a split's loader, either kind (training ones, ``shuffle=True``, give every
    rank the same number of steps)."""
    return EpochSampler(indices, shuffle, seed, rank, world_size, batch_size if shuffle else None)


class _Loader(DataLoader):
    """A DataLoader whose every ``iter()`` draws the one number from torch's RNG that a new iterator
    draws for its workers' seeds, also when ``persistent_workers`` reuses the iterator (and its
    workers): the main process's RNG stream (dropout, ``transform_batch``) is then the same with and
    without persistent workers, in an uninterrupted run and in a resumed one."""

    def __iter__(self) -> Any:
        if self.persistent_workers and self._iterator is not None:  # torch reuses it: no draw of its own
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return super().__iter__()


def make_loader(
    dataset: Dataset,
    indices: Sequence[int],
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
    *,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """A DataLoader over ``indices`` of ``dataset`` with :func:`collate` and :func:`epoch_sampler`.

    ``pin_memory``: page-locked batches (for copies to a CUDA device). ``persistent_workers`` and
    ``prefetch_factor`` act on worker processes: without workers (``num_workers`` 0) they are left
    out. Workers that are not persistent restart each epoch and draw their seeds from the
    (checkpointed) torch RNG, so a resumed run sees the same augmentation as an uninterrupted one;
    persistent workers keep their RNG streams from their first epoch.
    """
    workers = num_workers > 0
    return _Loader(
        named_errors(dataset),
        batch_size=batch_size,
        sampler=epoch_sampler(indices, batch_size, shuffle, seed, rank, world_size),
        num_workers=num_workers,
        collate_fn=Collate(),
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers,
        prefetch_factor=prefetch_factor if workers else None,
        worker_init_fn=quiet_worker,
    )


# The runtime's stop signals (dlscaffold.run.stops.STOP_SIGNALS, which this layer cannot import).
WORKER_IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)  # and SIGTERM but its parent's
WORKER_STOP_SIGNALS = (signal.SIGTERM, *WORKER_IGNORED)


def quiet_worker(worker_id: int) -> None:
    """A DataLoader worker's start: it leaves the stop signals to the main process, which stops the
    run and then ends its workers. One Ctrl-C, or a scheduler's SIGTERM, reaches every process of a
    process group, and a worker would otherwise report the stop too, or die of it (and the main
    process fail with it). SIGTERM from the worker's parent (the loader ending its workers) still
    ends it, where Python can tell who sent it; elsewhere SIGTERM keeps torch's own handling."""
    for signum in WORKER_IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    if not (hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask")):  # e.g. macOS
        return
    import os
    import threading

    parent = os.getppid()

    def wait_for_the_parents() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)  # as torch's worker does on its parent's SIGTERM

    # Blocked here, before the worker has other threads (they inherit the mask): only the thread reads it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=wait_for_the_parents, name="sigterm-from-parent", daemon=True).start()


def chosen_split_problem(idx_dict: dict[str, Any], split: str, what: str = "--split") -> str | None:
    """Why ``split`` cannot be read from a run's split (not one of its splits, or empty), as one
    line, or None when it can: the one message ``train``, ``evaluate`` and ``load_run`` give."""
    indices = idx_dict.get(split)
    if not isinstance(indices, list):
        names = ", ".join(k for k, v in idx_dict.items() if isinstance(v, list))
        return f"{what}: found '{split}'; this run has splits: {names}"
    if not indices:
        return f"split '{split}' holds no points; an empty split has no metrics: choose another split"
    return None


def split_indices(idx_dict: dict[str, Any], split: str, what: str = "--split") -> list[int]:
    """The points of ``split``; a split that is not there, or empty, is a one-line ``UserError``."""
    problem = chosen_split_problem(idx_dict, split, what)
    if problem is not None:
        raise UserError(problem)
    return idx_dict[split]
