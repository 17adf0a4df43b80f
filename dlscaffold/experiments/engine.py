"""One engine for many runs: a seed group's runs and a sweep's workers are a list of tasks, run in
this process, in worker processes, or as cluster jobs.

A task is one unit of work, a small dataclass (:class:`Task`) that writes itself as JSON and runs:

- :class:`TrainTask`: train one run, or resume one (what ``dlscaffold train`` does with these
  arguments): a seed group's run (:mod:`dlscaffold.experiments.groups`), a run submitted as a job;
- :class:`~dlscaffold.experiments.sweep.SweepWorkerTask`: one worker of a sweep;
- :class:`~dlscaffold.experiments.sweep.TrialTask`: one run of a sweep trial trained data-parallel
  (``sweep --nproc K``): it starts its K processes through torchrun, each running the task.

:func:`run` runs a list of tasks in this process, one after the other, or in worker processes, at
most ``workers`` at once: each is ``python -m dlscaffold.experiments.worker TASK`` (the one entry
of a worker process, :mod:`dlscaffold.experiments.worker`), with one GPU where there are GPUs and
an equal share of the CPU threads otherwise. A task with a ``label`` has its output relayed, each
line prefixed (``[seed 3] ...``); others write to this process's output directly. Cluster jobs
(:mod:`dlscaffold.experiments.jobs`) run the same tasks, one a job.

Workers run in their own session, so a Ctrl-C at the terminal reaches this process only, which
passes SIGINT and SIGTERM on, once (a worker that received it twice would exit without saving). On
Linux a worker also ends when its parent does, however that ends (``kill -9`` of the parent's
process group).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

Echo = Callable[[str], None]
WORKER_MODULE = "dlscaffold.experiments.worker"  # the entry of a worker process


def optional_path(value: Any) -> Path | None:
    """A path read back from JSON (None stays None)."""
    return None if value is None else Path(value)


@dataclasses.dataclass(kw_only=True)
class Task:
    """What every task shares: its kind (the worker entry's name for its class), a label, its JSON
    (:func:`dlscaffold.experiments.worker.task_from_json` reads it back), and :meth:`run`."""

    kind: ClassVar[str] = ""
    label: str = ""  # the prefix of its lines in a worker process ("seed 3"); empty: not relayed

    def to_json(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps({"kind": self.kind, **fields}, default=str)

    def run(self, echo: Echo) -> Any:
        """Do the work in this process, its lines through ``echo``."""
        raise NotImplementedError


@dataclasses.dataclass(kw_only=True)
class TrainTask(Task):
    """Train one run from ``config`` with ``overrides`` (or resume the run folder ``resume``), with
    the ``train`` command's flags and a seed group's ``run_info`` and folder-name suffix."""

    kind: ClassVar[str] = "train"
    config: Path | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    resume: Path | None = None
    project: Path | None = None
    run_info: dict[str, Any] = dataclasses.field(default_factory=dict)  # more keys for run.json ("group", "job")
    run_notes_suffix: str = ""  # appended to the run folder's name ("seed3")
    dev: bool = False
    no_save: bool = False
    device: str | None = None
    progress_bar: bool = False

    def __post_init__(self) -> None:
        self.config, self.resume = optional_path(self.config), optional_path(self.resume)
        self.project = optional_path(self.project)

    def run(self, echo: Echo) -> Any:
        """Train; returns the run's :class:`~dlscaffold.train.RunResult`."""
        from dlscaffold.train import TrainOptions, train

        options = TrainOptions(
            dev=self.dev,
            no_save=self.no_save,
            device=self.device,
            progress_bar=self.progress_bar,
            run_info=dict(self.run_info),
            run_notes_suffix=self.run_notes_suffix,
        )
        return train(
            self.config, self.overrides, project_dir=self.project, resume=self.resume, options=options, echo=echo
        )


# ---------------------------------------------------------------------------------- running


@dataclasses.dataclass
class Ended:
    """How a list of tasks ended: each started task's exit code, in order, and the signal that
    stopped them (None when none came)."""

    codes: list[int]
    signum: int | None = None

    def exit_code(self, total: int) -> int:
        """The command's exit code for ``total`` tasks: a signal's (as a run it stopped exits), the
        first failed task's, 2 when not every task started, else 0."""
        if self.signum is not None:
            from dlscaffold.run.stops import EXIT_CODES

            return EXIT_CODES.get(self.signum, 130)
        failed = [code for code in self.codes if code != 0]
        return failed[0] if failed else (0 if len(self.codes) == total else 2)


def run(tasks: list[Task], workers: int, echo: Echo) -> Ended:
    """Run the tasks: in this process, one after the other, for ``workers`` 1 (an error or a stop
    is raised as the task raised it); else in worker processes, at most ``workers`` at once."""
    if workers <= 1:
        for task in tasks:
            task.run(echo)
        return Ended([0] * len(tasks))
    return in_processes(tasks, workers, echo)


def in_processes(tasks: list[Task], workers: int, echo: Echo, share: bool = True) -> Ended:
    """Each task in a worker process, at most ``workers`` at once; with ``share``, each worker gets
    its GPU or its share of the CPU threads (else this process's environment, as it is)."""
    gpus, procs, relays = gpu_count(), [], []
    with Forwarding(procs, echo) as forwarding:
        for index, task in enumerate(tasks):
            while sum(p.poll() is None for p in procs) >= workers and forwarding.signum is None:
                time.sleep(0.2)
            if forwarding.signum is not None:
                break
            env = worker_env(index, workers, gpus) if share else _env()
            procs.append(start(task, env))
            if task.label:
                relays.append(threading.Thread(target=_relay, args=(procs[-1], task.label, echo), daemon=True))
                relays[-1].start()
        codes = [proc.wait() for proc in procs]
        for relay in relays:
            relay.join()
    return Ended(codes, forwarding.signum)


def _relay(proc: subprocess.Popen, label: str, echo: Echo) -> None:
    for line in proc.stdout:
        line = line.rstrip("\n")
        echo(f"[{label}] {line}")


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def gpu_count() -> int:
    with contextlib.suppress(Exception):
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return 0


def _env() -> dict[str, str]:
    """This process's environment for a worker: unbuffered output, and the program this command was
    started as, so that the commands a worker prints (``--resume``) read like the user's own."""
    from dlscaffold.run.summary import ARGV0_ENV

    return {**os.environ, "PYTHONUNBUFFERED": "1", ARGV0_ENV: os.environ.get(ARGV0_ENV) or sys.argv[0]}


def worker_env(index: int, workers: int, gpus: int) -> dict[str, str]:
    """The environment of worker ``index`` of ``workers``: its GPU, or its share of the CPU threads."""
    env = _env()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    else:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def start(task: Task, env: dict[str, str]) -> subprocess.Popen:
    """``python -m dlscaffold.experiments.worker TASK`` as a worker process; its output is a pipe
    for a labelled task (to relay), this process's own otherwise."""
    return subprocess.Popen(
        [sys.executable, "-m", WORKER_MODULE, task.to_json()],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if task.label else None,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


class Forwarding:
    """While installed, SIGINT and SIGTERM to this process are passed on, once, to the workers in
    ``procs`` (a list that may grow); ``signum`` is the signal that came, or None."""

    def __init__(self, procs: list[subprocess.Popen], echo: Echo):
        self.procs, self.echo, self.signum = procs, echo, None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        self.echo(f"{signal.Signals(signum).name}: stopping the workers; each saves its run's exact position")
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def __enter__(self) -> Forwarding:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
