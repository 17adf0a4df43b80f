"""Starting data-parallel processes through PyTorch's own launcher (``torchrun``).

``dlscaffold train --nproc N`` calls :func:`launch_train`: what every process would refuse is said
once, first (:func:`check_launch`), then torchrun's own code starts N processes on this machine,
each running ``dlscaffold train`` with every option of the command (:func:`launch_args`) but
``--nproc``; a process torchrun started has ``LOCAL_RANK`` set and trains instead of launching. A
sweep's data-parallel trial starts its processes through :func:`launch` too, each running the
experiments' worker entry. What the processes share once started (the world, the process group,
the collectives) is :mod:`dlscaffold.parts.distributed`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dlscaffold.errors import UserError
from dlscaffold.parts.distributed import sync_batchnorm_problem
from dlscaffold.records.rundir import CONFIG_FILE


def launch_train(
    nproc: int,
    config: Path | None,
    overrides: list[str],
    *,
    project: Path | None = None,
    resume: Path | None = None,
    dev: bool = False,
    no_save: bool = False,
    debug: bool = False,
    device: str | None = None,
) -> int:
    """``dlscaffold train --nproc N``: train in ``nproc`` processes started through torchrun;
    returns the exit code (0, or the first failed process's).

    Raises:
        UserError: what :func:`check_launch` refuses, before any process starts.
    """
    from dlscaffold.run.summary import ARGV0_ENV

    check_launch(nproc, config, overrides, resume)  # what every process would refuse: said once, first
    args = launch_args(
        config, overrides, project=project, resume=resume, dev=dev, no_save=no_save, debug=debug, device=device
    )
    before = os.environ.get(ARGV0_ENV)
    os.environ[ARGV0_ENV] = before or sys.argv[0]  # the processes print a --resume command like this one
    try:
        return launch(nproc, args)
    finally:
        if before is None:
            os.environ.pop(ARGV0_ENV, None)


def check_launch(nproc: int, config: Path | None, overrides: list[str], resume: Path | None) -> None:
    """What :func:`~dlscaffold.parts.distributed.check_sync_batchnorm` would refuse in every process,
    said once before torchrun starts them. A config that cannot be read is left to the processes,
    which say why.

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
    ]
    return ["train", *flags, *valued, "--", *([str(config)] if config is not None else []), *overrides]


def launch(nproc: int, args: list[str], module: str = "dlscaffold") -> int:
    """Run ``python -m MODULE ARGS`` in ``nproc`` processes on this machine, through torchrun's own code.

    Returns the exit code: 0, or the first failed process's (its error line is already printed).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    options = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", module, *args]
    )
    try:
        run(options)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return next((c for c in codes if c and c > 0), 1)
    return 0
