"""Where tensors live: one small object the loop asks, so that it never branches on CPU/GPU.

``use_GPU: true`` on a machine without CUDA computes on the CPU. The note saying so
(:data:`CPU_FALLBACK`) is printed once per run, when a new run starts (``dlscaffold train``): a
``--resume`` of it, ``evaluate`` and ``load_run`` use the CPU without repeating it (``run.json``
records the device of the run's latest session). ``--device cuda`` on such a machine is an error instead.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from dlscaffold.errors import UserError

CPU_FALLBACK = "use_GPU is set but CUDA is not available here: training on the CPU"


@dataclass(frozen=True)
class Placement:
    """The device a run computes on, and how batches get there."""

    device: torch.device
    channels_last: bool = False  # 4-D batch tensors in channels-last memory format (training_params.channels_last)
    cpu_fallback: bool = False  # use_GPU asked for CUDA, which this machine does not have (see CPU_FALLBACK)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        # Pinned host memory makes host->GPU copies asynchronous; useless on CPU.
        return self.is_cuda

    def move(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move every tensor of a batch to the device (non-blocking from pinned memory)."""
        moved = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }
        if self.channels_last:
            moved = {
                k: v.contiguous(memory_format=torch.channels_last)
                if isinstance(v, torch.Tensor) and v.dim() == 4
                else v
                for k, v in moved.items()
            }
        return moved


def select_placement(use_gpu: bool, override: str | None = None, channels_last: bool = False) -> Placement:
    """Pick the device: ``--device`` if given, else CUDA when ``use_GPU`` and available, else CPU
    (with ``cpu_fallback`` set when ``use_GPU`` asked for CUDA; the caller says so where it should).

    Raises:
        UserError: for a ``--device`` torch does not know or cannot use.
    """
    if override:
        try:
            device = torch.device(override)
        except RuntimeError:
            raise UserError(f"--device: found '{override}'; expected cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise UserError(f"--device: found '{override}'; expected cpu, cuda or cuda:N (or mps)")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device: found '{override}' but CUDA is not available here; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device: found '{override}'; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return Placement(device, channels_last)
    if use_gpu and torch.cuda.is_available():
        return Placement(torch.device("cuda"), channels_last)
    return Placement(torch.device("cpu"), channels_last, cpu_fallback=use_gpu)


# glibc's mallopt parameters (malloc.h) and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


@contextmanager
def kept_cpu_memory(enabled: bool) -> Iterator[bool]:
    """With ``enabled`` (``training_params.keep_cpu_memory``), glibc's malloc keeps freed memory
    for reuse during the block: no ``mmap`` for large blocks, no trimming of the heap, then
    glibc's defaults again. Without it, every tensor over 32 MB (a large batch's activations on the
    CPU) is mapped fresh and page-faulted in at each step, which costs a CPU training step about
    10% at batch 1024 of a small conv net. The process keeps its peak memory while it runs. Yields
    whether it applies (glibc only: elsewhere nothing changes)."""
    mallopt = _mallopt() if enabled else None
    if mallopt is None:
        yield False
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        for option, value in _GLIBC_DEFAULTS.items():
            mallopt(option, value)


@contextmanager
def frozen_setup() -> Iterator[None]:
    """During the block, Python's garbage collector leaves alone the objects that exist when it
    starts (``gc.freeze``), and takes them back after it (``gc.unfreeze``).

    A run's set-up leaves hundreds of thousands of objects behind (torch's and the other libraries'
    modules, the project's, the config, the data). Every full collection walks all of them: 50 to
    100 ms on a CPU, at whatever step the collector's counters pick. For a model whose step takes a
    millisecond, one such collection costs a long run about 0.1 ms a step, and whether it falls in a
    run or not is most of the difference between two runs of the same config. Frozen, they are
    skipped; what training makes is collected as always. Processes a DataLoader forks share them
    with fewer copied pages, too. A process that had frozen objects itself keeps them frozen, and
    the run's with them."""
    theirs = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not theirs:
            gc.unfreeze()


def _mallopt() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt if hasattr(libc, "gnu_get_libc_version") else None
    except OSError:  # another C library (musl): it has no such switches
        return None
