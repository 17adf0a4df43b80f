"""Data-parallel training through PyTorch's own launcher (``torchrun``), and what ranks share.

A run is distributed when torchrun started it (``WORLD_SIZE`` > 1 in the environment). Every
process then takes ``cuda:LOCAL_RANK`` when it has a CUDA device, joins a process group (NCCL when
every process has a CUDA device, gloo otherwise, or ``training_params.backend``), and trains its
share of each batch; rank 0 alone writes. In a single process every helper here is a no-op, so the
loop reads the same either way.

``dlscaffold train --nproc N`` starts the processes through torchrun's own code
(:mod:`dlscaffold.run.launch`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch

from dlscaffold.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in the environment (a single process when it does not)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def _cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def init(world: World, use_gpu: bool, backend: str | None) -> str | None:
    """Join the process group (once); returns the device this rank computes on (None: the default)."""
    if not world.distributed:
        return None
    import torch.distributed as dist

    cuda = use_gpu and _cuda_devices() > world.local_rank
    device = f"cuda:{world.local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        # A short timeout: a rank that died leaves the others waiting at most this long.
        dist.init_process_group(
            backend or ("nccl" if cuda else "gloo"),
            timeout=dt.timedelta(minutes=5),
            device_id=torch.device(device) if cuda else None,
        )
    return device


def process_batch_size(batch_size: int, global_batch_size: int | None, world_size: int) -> int:
    """The batch each of ``world_size`` processes takes: ``global_batch_size / world_size`` when the
    config sets a global batch, else ``batch_size`` (per process).

    Raises:
        UserError: ``world_size`` does not divide ``global_batch_size`` (one line naming both and
            the process counts that do).
    """
    if global_batch_size is None:
        return batch_size
    if global_batch_size % world_size == 0:
        return global_batch_size // world_size
    limit = min(global_batch_size, max(64, 2 * world_size))  # the counts worth naming
    counts = [str(n) for n in range(1, limit + 1) if global_batch_size % n == 0]
    shown = ", ".join(counts) + (", ..." if limit < global_batch_size else "")
    raise UserError(
        f"dataloading_params.global_batch_size: {global_batch_size} does not divide among {world_size} processes; "
        f"use a number of processes that divides it ({shown}), or a global_batch_size that {world_size} divides"
    )


def _on_cpu(use_gpu: bool, processes: int) -> int:
    """How many of a machine's ``processes`` take the CPU: all without ``use_GPU`` or CUDA, else
    those beyond its CUDA devices (process ``i`` takes ``cuda:i``, as :func:`init` does)."""
    return processes - (min(processes, _cuda_devices()) if use_gpu else 0)


def sync_batchnorm_problem(sync_batchnorm: bool, use_gpu: bool, processes: int) -> str | None:
    """Why ``training_params.sync_batchnorm`` cannot work for ``processes`` processes on this
    machine: some would train on the CPU, and SyncBatchNorm has no CPU (gloo) implementation."""
    on_cpu = _on_cpu(use_gpu, processes)
    if not (sync_batchnorm and processes > 1 and on_cpu):
        return None
    why = "use_GPU is false" if not use_gpu else f"this machine has {_cuda_devices() or 'no'} CUDA device(s)"
    return (
        f"training_params.sync_batchnorm: found true, but {on_cpu} of the {processes} processes on this machine "
        f"would train on the CPU ({why}), and SyncBatchNorm needs CUDA: it has no CPU (gloo) implementation; "
        "set sync_batchnorm: false or train on GPUs (use_GPU: true, one GPU per process)"
    )


def check_sync_batchnorm(world: World, sync_batchnorm: bool, use_gpu: bool) -> None:
    """Refuse ``sync_batchnorm`` when a process of this machine would train on the CPU: in every
    process, before it joins the process group or builds anything (each process of the machine
    finds the same, so rank 0 says it).

    Raises:
        UserError: the one line of :func:`sync_batchnorm_problem`.
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world.world_size))  # torchrun's processes on this machine
    problem = sync_batchnorm_problem(sync_batchnorm, use_gpu, local) if world.distributed else None
    if problem is not None:
        raise UserError(problem)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here; nothing in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over the ranks in place (one collective); unchanged in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the run folder it created)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (e.g. RNG states for a checkpoint)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
