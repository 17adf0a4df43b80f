"""What runs inside a cluster job made by ``dlscaffold submit``: submitit loads a job and calls it.

Each job runs one task of :mod:`dlscaffold.experiments.engine`, the tasks that also run in one
process or in worker processes: a :class:`TrainJob` trains one run, or resumes it; a
:class:`SweepWorkerJob` is one worker of a sweep (:func:`dlscaffold.experiments.sweep.work`),
which resumes a trial a stopped worker left. Both train in the job's own process, and the run's
stops are the runtime's (:mod:`dlscaffold.run.stops`): the scheduler's signal, SIGTERM or SIGINT
end the run at a step boundary with its exact position saved.

When the job's time is up (the signal chosen with ``submit --signal``, or ``SLURM_JOB_END_TIME``
drawing near), the job then sends itself that signal once more, now outside the run, where
submitit's handler takes it: it calls :meth:`_Job.checkpoint` (this job, which knows its run folder,
with one requeue more), requeues the job (a timeout counts against ``--max-requeues``, a preemption
does not), and the requeued job continues the run in its folder, as ``train --resume`` does. A run
stopped by SIGTERM or SIGINT alone (``scancel``, a local job's cancel) is not requeued.

With several scheduler tasks (nodes x GPUs per node) each is one process of a data-parallel run: rank,
world size, local rank and the first node as the master come from the scheduler's environment
(submitit's ``TorchDistributedEnvironment``), as ``torchrun`` would set them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from submitit import JobEnvironment
from submitit.core.utils import UncompletedJobError
from submitit.helpers import Checkpointable, TorchDistributedEnvironment

from dlscaffold.errors import QuietExit, UserError
from dlscaffold.experiments.engine import TrainTask
from dlscaffold.experiments.sweep import SweepWorkerTask
from dlscaffold.run.stops import END_TIME, RunInterrupted, StopFlag

RESTART_COUNT_ENV = "SLURM_RESTART_COUNT"  # how often SLURM restarted the job (requeues of any kind)


def _remove_literal_folder() -> None:
    """submitit's local controller makes the log folder's pattern (``jobs/%j``) as a folder too; an
    empty one is removed."""
    import contextlib

    pattern = Path(os.environ.get("SUBMITIT_FOLDER", ""))
    if "%" in pattern.name:
        with contextlib.suppress(OSError):
            pattern.rmdir()


def job_signal() -> signal.Signals:
    """The signal the scheduler sends before the job's time limit (``submit --signal``)."""
    return signal.Signals["SIG" + JobEnvironment.USR_SIG]


class _Job(Checkpointable):
    """What the jobs share: the outcome, the requeue count, and the way into submitit's requeue."""

    def __init__(self) -> None:
        self.requeues = 0  # how often the job was requeued so far
        self.outcome: dict[str, Any] | None = None  # once the work is over: a requeue after it does nothing

    def __call__(self) -> dict[str, Any]:
        """Do the job's work; returns its outcome: ``status``, ``exit_code`` (as ``dlscaffold train``
        would exit), ``requeues``, and where the run is."""
        if self.outcome is None:
            import logging

            logger = logging.getLogger("dlscaffold")  # its warnings in the job's log, as train prints them
            logger.addHandler(logging.StreamHandler(sys.stderr))
            logger.setLevel(logging.INFO)
            env, requeues = JobEnvironment(), self.requeues
            StopFlag.repeat_exits = False
            _remove_literal_folder()
            if env.num_tasks > 1:  # one data-parallel process per task
                TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            self.outcome = {**self._outcome(env), "requeues": requeues}
        return self.outcome

    def _outcome(self, env: JobEnvironment) -> dict[str, Any]:
        try:
            return {"status": "completed", "exit_code": 0, **self.work(env)}
        except RunInterrupted as exc:
            self.stopped(exc)
            return self._requeue(exc, env)
        except UserError as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr, flush=True)
            return {"status": "failed", "exit_code": 2, "error": exc.problems[0] if exc.problems else str(exc)}
        except QuietExit as exc:  # another data-parallel process failed and said why
            return {"status": "failed", "exit_code": exc.exit_code}
        except UncompletedJobError as exc:  # submitit's handler, outside a run: timed out too often
            return self._not_requeued(exc, 1, "")

    def _requeue(self, exc: RunInterrupted, env: JobEnvironment) -> dict[str, Any]:
        """After the run stopped with its position saved: requeue through submitit when the job's
        time is up (rank 0 does, for every task); else end here."""
        sig = job_signal()
        if exc.signum in (sig, END_TIME) and env.global_rank == 0 and callable(signal.getsignal(sig)):
            try:
                signal.raise_signal(sig)  # submitit's handler: checkpoint(), requeue, exit
                time.sleep(10)  # the handler runs at the latest here
            except UncompletedJobError as error:
                return self._not_requeued(error, exc.exit_code, "; the run's position is saved")
        return {"status": "interrupted", "exit_code": exc.exit_code, "error": str(exc)}

    def _not_requeued(self, error: Exception, code: int, saved: str) -> dict[str, Any]:
        reason = str(error).strip().splitlines()[-1].removeprefix("Job not requeued because: ").rstrip(".")
        line = f"not requeued: {reason} (submit --max-requeues){saved}"
        print(line, file=sys.stderr, flush=True)
        return {"status": "interrupted", "exit_code": code, "error": line}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: this job (its run folder known), one requeue more."""
        self.requeues += 1
        return super().checkpoint(*args, **kwargs)

    def work(self, env: JobEnvironment) -> dict[str, Any]:
        raise NotImplementedError

    def record(self, env: JobEnvironment) -> dict[str, Any]:
        """What a run's run.json records of the job that trains it: its id, and how often it was
        requeued (through submitit, or by the scheduler itself)."""
        restarts = int(os.environ.get(RESTART_COUNT_ENV) or 0)
        return {"job": {"id": env.job_id, "requeues": max(self.requeues, restarts)}}

    def stopped(self, exc: RunInterrupted) -> None:
        """The run stopped with its position saved (``exc.run_dir``), before a requeue."""


class TrainJob(_Job):
    """A :class:`~dlscaffold.experiments.engine.TrainTask` (``dlscaffold train CONFIG [overrides]``,
    or one run of a seed group) as a job; a requeued one resumes the run in place.

    A job the scheduler requeued by itself (a preemption without the job's signal, a node failure:
    ``SLURM_RESTART_COUNT`` > 0), which submitit never told its run folder, finds its run in
    ``logging_dir`` by the job id its run.json records, and resumes it from the newest checkpoint.

    Args:
        task: the run to train; its ``project`` is ``--project`` (the resumed run uses the project
            its run.json records, refused in one line where its code has changed since).
        logging_dir: where the run folder is made (the config's ``logging_dir``, overrides applied).
    """

    def __init__(self, task: TrainTask, logging_dir: Path) -> None:
        super().__init__()
        self.task, self.logging_dir = task, logging_dir
        self.run_dir: Path | None = None  # known once the run stopped: the requeued job resumes it

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A job pickled by an earlier version held the task's fields as its own attributes."""
        if "task" not in state:
            fields = {"config": "config", "overrides": "overrides", "project_dir": "project"}
            fields.update(run_info="run_info", run_notes_suffix="run_notes_suffix")
            state["task"] = TrainTask(**{name: state.pop(old) for old, name in fields.items() if old in state})
        self.__dict__.update(state)

    def work(self, env: JobEnvironment) -> dict[str, Any]:
        task = dataclasses.replace(self.task, run_info={**self.task.run_info, **self.record(env)})
        self.run_dir = self.run_dir or self.earlier_run(env.job_id)
        if self.run_dir is not None:  # the run's own config; the job's project, its code checked as a resume's
            from dlscaffold.prepare import check_project_code

            project = check_project_code(Path(self.task.project or Path(self.task.config).parent), self.run_dir)
            task = dataclasses.replace(task, config=None, overrides=[], project=project, resume=self.run_dir)
        result = task.run(print)
        return {"status": result.status, "run_dir": str(result.run_dir)}

    def stopped(self, exc: RunInterrupted) -> None:
        self.run_dir = exc.run_dir or self.run_dir

    def earlier_run(self, job_id: str) -> Path | None:
        """After a restart the scheduler made by itself, the run folder this job made before."""
        from dlscaffold.records.rundir import read_run_info

        if not int(os.environ.get(RESTART_COUNT_ENV) or 0) or not self.logging_dir.is_dir():
            return None
        made = [p for p in sorted(self.logging_dir.iterdir()) if read_run_info(p).get("job", {}).get("id") == job_id]
        return made[-1] if made else None


class SweepWorkerJob(_Job):
    """A :class:`~dlscaffold.experiments.engine.SweepWorkerTask` as a job: one worker of the sweep
    in its folder, claiming and running trials until the sweep has them all; a trial a stopped
    worker left is claimed again and its runs resume exactly."""

    def __init__(self, task: SweepWorkerTask) -> None:
        super().__init__()
        self.task = task

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A job pickled by an earlier version held the sweep folder as ``folder``."""
        if "task" not in state:
            state["task"] = SweepWorkerTask(folder=state.pop("folder"))
        self.__dict__.update(state)

    def work(self, env: JobEnvironment) -> dict[str, Any]:
        from dlscaffold.experiments import sweep

        dataclasses.replace(self.task, run_info=self.record(env)).run(print)  # sweep.work
        state = sweep.report(sweep.Sweep.open(self.task.folder), print)
        return {"sweep": str(self.task.folder), "sweep_status": state["status"]}
