"""Data-parallel training through PyTorch's own launcher (``torchrun``), and what ranks share.

A run is distributed when torchrun started it (``WORLD_SIZE`` > 1 in the environment). Every
process then takes ``cuda:LOCAL_RANK`` when it has a CUDA device, joins a process group (NCCL when
every process has a CUDA device, gloo otherwise, or ``training_params.backend``), and trains its
share of each batch; rank 0 alone writes. In a single process every helper here is a no-op, so the
loop reads the same either way.

``dlscaffold train --nproc N`` starts torchrun itself through :func:`torch.distributed.run.run`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlscaffold.records.rundir import CONFIG_FILE
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


def check_launch(nproc: int, config: Path | None, overrides: list[str], resume: Path | None) -> None:
    """What :func:`check_sync_batchnorm` would refuse in every process, said once before torchrun
    starts them. A config that cannot be read is left to the processes, which say why.

    Raises:
        UserError: ``sync_batchnorm`` with processes that would train on the CPU.
    """
    from dlscaffold.config import load_raw, validate_raw

    path = resume / CONFIG_FILE if resume is not None else config
    try:
        checked, _ = validate_raw(load_raw(path, overrides)) if path is not None else (None, [])
    except UserError:
        return
    if checked is not None:
        tp = checked.training_params
        problem = sync_batchnorm_problem(tp.sync_batchnorm, tp.use_GPU, nproc)
        if problem is not None:
            raise UserError(problem)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def launch_args(
    config: Path | None,
    overrides: list[str],
    *,
    project: Path | None = None,
    resume: Path | None = None,
    dev: bool = False,
    no_save: bool = False,
    debug: bool = False,
    device: str | None = None,
    sweep_trial: str | None = None,
) -> list[str]:
    """The ``dlscaffold`` arguments that run ``train`` with these options in each process :func:`launch` starts.

    Every option of the ``train`` command is forwarded except ``--nproc`` (a process torchrun started
    has ``LOCAL_RANK`` set and trains instead of launching). Options come first, then ``--``, so that
    a config path or an override is never read as an option.
    """
    flags = [flag for flag, on in (("--dev", dev), ("--no-save", no_save), ("--debug", debug)) if on]
    valued = [
        *(["--project", str(project)] if project is not None else []),
        *(["--resume", str(resume)] if resume is not None else []),
        *(["--device", device] if device is not None else []),
        *(["--sweep-trial", sweep_trial] if sweep_trial is not None else []),
    ]
    return ["train", *flags, *valued, "--", *([str(config)] if config is not None else []), *overrides]


def launch(nproc: int, args: list[str]) -> int:
    """Run ``dlscaffold ARGS`` in ``nproc`` processes on this machine, through torchrun's own code.

    Returns the exit code: 0, or the first failed process's (its error line is already printed).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    options = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", "dlscaffold", *args]
    )
    try:
        run(options)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return next((c for c in codes if c and c > 0), 1)
    return 0
