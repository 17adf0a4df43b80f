"""The entry of a worker process: ``python -m dlscaffold.experiments.worker TASK``.

``TASK`` is one task of :mod:`dlscaffold.experiments.engine` as JSON, or the path of a file
holding it. The worker runs it and exits as ``dlscaffold train`` would: 0 when it completed, 2 with
``error:`` lines for a problem or a failed run, 128 + the signal's number when a signal stopped its
run with the position saved (124 at the job's end time).

A data-parallel sweep trial (``nproc`` above 1) started without ``LOCAL_RANK`` starts its processes
through torchrun, each ``python -m dlscaffold.experiments.worker TASK`` again, now with its rank:
each makes the trial's run options, and rank 0 alone reports to the study.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlscaffold.experiments.engine import Task

USAGE = "usage: python -m dlscaffold.experiments.worker TASK (a task as JSON, or a file holding it)"


def main(argv: list[str] | None = None) -> int:
    """Run the task ``argv`` names (default: ``sys.argv[1:]``); returns the exit code."""
    from dlscaffold.errors import QuietExit, UserError
    from dlscaffold.run.stops import RunInterrupted

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args[0])
    except UserError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
        return 2
    except (RunInterrupted, QuietExit) as exc:  # a signal ended a run after saving it; another process failed
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130


def task_from_json(text: str) -> Task:
    """The task :meth:`~dlscaffold.experiments.engine.Task.to_json` wrote."""
    from dlscaffold.experiments.engine import TrainTask
    from dlscaffold.experiments.sweep import SweepWorkerTask, TrialTask

    kinds: dict[str, type[Task]] = {kind.kind: kind for kind in (TrainTask, SweepWorkerTask, TrialTask)}
    data = json.loads(text)
    return kinds[data.pop("kind")](**data)


def _run(text: str) -> int:
    from dlscaffold.errors import UserError

    if not text.lstrip().startswith("{"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise UserError(f"worker: cannot read the task file '{text}' ({exc.strerror or exc})") from None
    try:
        task = task_from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"worker: not a task ({type(exc).__name__}: {exc}); {USAGE}") from None
    if getattr(task, "nproc", 1) > 1 and "LOCAL_RANK" not in os.environ:  # a data-parallel trial: its processes
        from dlscaffold.experiments.engine import WORKER_MODULE
        from dlscaffold.run.launch import launch

        return launch(task.nproc, [task.to_json()], module=WORKER_MODULE)
    task.run(functools.partial(print, flush=True))
    return 0


def _exit(code: int) -> None:
    """Exit with ``code``; a stop signal while Python shuts down (most of a second after a run) no
    longer kills the process with a signal's status."""
    import signal

    from dlscaffold.run.stops import STOP_SIGNALS

    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
