"""Starting data-parallel processes through PyTorch's own launcher (``torchrun``).

``dlscaffold train --nproc N`` calls :func:`launch_train`: what every process would refuse is said
once, first (:func:`check_launch`), then torchrun's own code starts N processes on this machine,
each running ``dlscaffold train`` with every option of the command (:func:`launch_args`) but
``--nproc``; a process torchrun started has ``LOCAL_RANK`` set and trains instead of launching. A
sweep's data-parallel trial starts its processes through :func:`launch` too, each running the
experiments' worker entry. What the processes share once started (the world, the process group,
the collectives) is :mod:`dlscaffold.parts.distributed`.

A stop signal (:data:`~dlscaffold.run.stops.STOP_SIGNALS`) to the launching process, alone or with
its process group (Ctrl-C at a terminal, a scheduler cancelling the job), is passed on to every
process once; the launcher then waits, however long they take, for them to save their position and
end, and returns the stop's exit code, without a word of its own: rank 0 says what happens. The same
signal again is passed on too (they exit at once).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from dlscaffold.errors import UserError
from dlscaffold.parts.distributed import process_batch_size, sync_batchnorm_problem
from dlscaffold.records.rundir import CONFIG_FILE
from dlscaffold.run.stops import EXIT_CODES, STOP_SIGNALS, first_reason

# How long, after a stop signal, torchrun waits for its processes to save and end before it kills
# them: they finish a step, reach a log point and write a checkpoint. A process that hangs is ended
# by the same signal again, and a scheduler kills what overstays its job anyway.
STOP_WAIT_S = 24 * 3600
# torchrun's modules that log its shutdown on a signal (which this launcher's stop makes no news).
_TORCHRUN_LOGGERS = ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api")
_SIGNALS_ENV = "TORCHELASTIC_SIGNALS_TO_HANDLE"  # torchrun's record of the signals it handles


def launch_train(
    nproc: int, config: Path | None, overrides: list[str], *, resume: Path | None = None, **flags: Any
) -> int:
    """``dlscaffold train --nproc N``: train in ``nproc`` processes started through torchrun;
    returns the exit code (0, the first failed process's, or a stop signal's: :func:`launch`).
    ``flags``: the other ``train`` options, as :func:`launch_args` takes them.

    Raises:
        UserError: what :func:`check_launch` refuses, before any process starts.
    """
    from dlscaffold.run.summary import ARGV0_ENV

    check_launch(nproc, config, overrides, resume)  # what every process would refuse: said once, first
    args = launch_args(config, overrides, resume=resume, **flags)
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
        UserError: ``sync_batchnorm`` with processes that would train on the CPU; a
            ``global_batch_size`` that ``nproc`` does not divide.
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
        dl = checked.dataloading_params
        process_batch_size(dl.batch_size, dl.global_batch_size, nproc)  # raises when nproc does not divide it


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

    Returns the exit code: 0, the first failed process's (its error line is already printed), or a
    stop signal's (128 + its number) once every process has saved and ended (see the module's
    docstring).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import run

    options = _torchrun_options(nproc, module, args)
    with _LauncherStop() as stop:
        try:
            stop.raising = True
            run(options)
        except ChildFailedError as exc:
            codes = [f.exitcode for f in exc.failures.values()]
            return next((c for c in codes if c and c > 0), 1)
        except SignalException as exc:
            return stop.end(int(exc.sigval))
        finally:
            stop.raising = False
    return 0


def _torchrun_options(nproc: int, module: str, args: list[str]) -> Any:
    """torchrun's parsed options: standalone, no restarts; where this torch has the options, the
    stop signals handled here (torchrun keeps SIGQUIT) and a wait for the processes to save."""
    from torch.distributed.launcher.api import LaunchConfig
    from torch.distributed.run import get_args_parser

    fields = {field.name for field in dataclasses.fields(LaunchConfig)}
    extra = ["--signals-to-handle=SIGQUIT"] if "signals_to_handle" in fields else []
    extra += [f"--shutdown-timeout={STOP_WAIT_S}"] if "shutdown_timeout" in fields else []
    return get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", *extra, "-m", module, *args]
    )


class _LauncherStop:
    """The launching process's stop signals while torchrun's agent runs in it (a context manager).

    The first one, while ``raising``, is raised as torchrun's own ``SignalException``: its agent then
    sends that signal to every process and waits for them all (without stopping those left when one
    has ended, as it does otherwise). Each later one is sent to the processes directly. A torch whose
    torchrun handles these signals itself does the first part alone: :meth:`end` does the rest.
    """

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.raising = False
        self._previous: dict[int, Any] = {}
        self._quiet = _QuietShutdown(self)
        self._env = os.environ.get(_SIGNALS_ENV)

    def __enter__(self) -> _LauncherStop:
        self._install()
        for name in _TORCHRUN_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            _set_handler(signum, handler)
        for name in _TORCHRUN_LOGGERS:
            logging.getLogger(name).removeFilter(self._quiet)
        if self._env is None:  # torchrun records its signals in the environment: as it was
            os.environ.pop(_SIGNALS_ENV, None)
        else:
            os.environ[_SIGNALS_ENV] = self._env

    def _install(self) -> None:
        for signum in (*STOP_SIGNALS, signal.SIGQUIT):  # SIGQUIT: torchrun's, put back on exit
            original = self._previous.setdefault(signum, signal.getsignal(signum))
            if signum in STOP_SIGNALS and original is not signal.SIG_IGN:  # nohup: a closed terminal stops nothing
                _set_handler(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen.append(signum)
        if len(self.seen) == 1 and self.raising:
            from torch.distributed.elastic.multiprocessing.api import SignalException

            raise SignalException(f"stopped by {signal.Signals(signum).name}", sigval=signal.Signals(signum))
        _send_children(signum)

    def end(self, signum: int) -> int:
        """After torchrun's agent stopped on ``signum``: the processes it left running (a second
        signal cut its wait short) get ``signum`` and are waited for; returns the stop's exit code."""
        self.raising = False
        if signum not in self.seen:  # torchrun's own handler caught it
            self.seen.append(signum)
        self._install()  # torchrun's own handlers, if it installed them, are done
        children = _children()
        for pid in children:
            _signal(pid, signum)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        reason = first_reason(self.seen)
        return EXIT_CODES.get(reason, 128 + reason)


class _QuietShutdown(logging.Filter):
    """Drops torchrun's log lines once a stop signal came: its shutdown is that stop, which rank 0 reports."""

    def __init__(self, stop: _LauncherStop) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.stop.seen


def _children() -> list[int]:
    """This process's child processes (torchrun's processes): from ``/proc``, else ``pgrep -P``."""
    me, proc = os.getpid(), Path("/proc")
    if not (proc / "self" / "stat").is_file():
        try:
            found = subprocess.run(["pgrep", "-P", str(me)], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [int(pid) for pid in found.split() if pid.isdigit()]
    children = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after the name, which may hold spaces
        except OSError:  # ended meanwhile
            continue
        if len(fields) > 1 and fields[1] == str(me):
            children.append(int(stat.parent.name))
    return children


def _set_handler(signum: int, handler: Any) -> None:
    try:
        signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        pass


def _send_children(signum: int) -> None:
    for pid in _children():
        _signal(pid, signum)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:  # ended meanwhile
        pass
