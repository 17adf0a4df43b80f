"""Clean stops: a signal, or the end of a cluster job drawing near, ends a run at a step boundary.

The signals are SIGTERM (what job schedulers send), SIGINT (Ctrl-C), SIGHUP (a closed terminal;
left alone under ``nohup``) and SIGUSR1 / SIGUSR2 (what a scheduler sends before a time limit:
``dlscaffold submit --signal``). The first sets a flag that the training loop reads after each step
(a Python attribute, no GPU sync); the loop then writes a checkpoint of its exact position and ends
with exit code 128 + the signal's number (:data:`EXIT_CODES`). The same signal again ends the
process at once; a different one changes nothing but the reason (a scheduler often sends two: SIGTERM
and its own, which then names the reason). A repeat within :data:`REPEAT_WINDOW_S` of the first is the
same stop delivered twice (a scheduler signals every process of a job, and torchrun passes the
signal it got on to its processes), and once the run has saved its position and is ending a signal
changes nothing. The stop message is printed once: by the main process of a run (rank 0 of a
data-parallel one); a process forked from it (a DataLoader worker) leaves stops to it.

With ``SLURM_JOB_END_TIME`` (unix seconds) in the environment, the flag also rises by itself
``training_params.stop_before_end`` seconds before that time (:func:`stop_time`), in case the
scheduler's signal never comes: the run ends the same way, with exit code 124.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

END_TIME = 0  # not a signal: the reason of a stop because the job's end time is near
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
EXIT_CODES = {**{signum: 128 + int(signum) for signum in STOP_SIGNALS}, END_TIME: 124}
END_TIME_ENV = "SLURM_JOB_END_TIME"
# A repeat of a signal within this many seconds of its first arrival is the same stop delivered twice,
# not a request to exit at once: a user's second Ctrl-C comes later.
REPEAT_WINDOW_S = 2.0
# When several reasons to stop come (a scheduler's SIGTERM and its own signal; data-parallel processes
# that saw different ones), the run stops for the first of these: a scheduler's own signal names it.
_PRECEDENCE = (END_TIME, signal.SIGUSR2, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def reason_name(signum: int) -> str:
    """``SIGTERM``, ... or, for :data:`END_TIME`, what it stands for."""
    return f"the job's end time ({END_TIME_ENV})" if signum == END_TIME else signal.Signals(signum).name


def from_exit_code(code: int | None) -> int | None:
    """The stop reason (a signal number or :data:`END_TIME`) a ``dlscaffold train`` exit code stands
    for, or None when the code is no such stop."""
    return next((reason for reason, value in EXIT_CODES.items() if value == code), None)


def first_reason(reasons: list[int]) -> int:
    """The reason a stop is for when several came (signal numbers, :data:`END_TIME`): the first in
    the order of precedence (a scheduler's own signal, then SIGHUP, SIGTERM, SIGINT), any other last."""
    return min(reasons, key=lambda r: _PRECEDENCE.index(r) if r in _PRECEDENCE else len(_PRECEDENCE))


def stop_time(stop_before_end: float) -> float | None:
    """When a run must stop: ``stop_before_end`` seconds before ``SLURM_JOB_END_TIME``; None
    without one (a value that is no number is ignored)."""
    try:
        end = float(os.environ.get(END_TIME_ENV, ""))
    except ValueError:
        return None
    return end - stop_before_end


class RunInterrupted(Exception):
    """The run stopped after saving its position: on a signal, or before the job's end time
    (``signum`` :data:`END_TIME`). ``exit_code`` is :data:`EXIT_CODES`' value; ``run_dir`` the
    run's folder, where there is one."""

    def __init__(self, signum: int, message: str = "", run_dir: Path | None = None):
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 130)
        self.run_dir = run_dir
        what = "stopped before" if signum == END_TIME else "interrupted by"
        super().__init__(message or f"{what} {reason_name(signum)}")


class StopFlag:
    """Catches the stop signals while installed (a context manager); ``requested`` says whether one
    came, or whether ``deadline`` (a ``time.time()``, set by :func:`stop_time`) has passed."""

    # False in a cluster job's process: there the same signal may come twice (a scheduler, submitit's
    # local controller), and what does not stop in time is killed by the scheduler anyway.
    repeat_exits = True

    def __init__(self, deadline: float | None = None) -> None:
        self.signum: int | None = None
        self.deadline = deadline
        self.setting_up = False  # True while a run is set up: Ctrl-C at a terminal aborts it at once
        self.ending = False  # True once a stopped run has saved its position: a signal changes nothing
        # Other data-parallel ranks stop as rank 0 does, without a word: rank 0 says it once.
        self.quiet = os.environ.get("RANK", "0").strip() not in ("", "0")
        self._pid = os.getpid()  # a process forked from this one (a DataLoader worker) leaves stops to it
        self._arrived: dict[int, float] = {}  # each signal's first arrival (time.monotonic())
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        if self.signum is None and self.deadline is not None and time.time() >= self.deadline:
            self.signum = END_TIME
            self._say(f"\nthe job's end time ({END_TIME_ENV}) is near: saving the run's position")
        return self.signum is not None

    def _say(self, line: str) -> None:
        if not self.quiet:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid or self.ending:  # a forked worker; a run that saved and is ending
            return
        now, first = time.monotonic(), self._arrived.get(signum)
        if first is None:
            self._arrived[signum] = now
        elif now - first < REPEAT_WINDOW_S:  # the same stop delivered twice
            return
        if self.setting_up and signum == signal.SIGINT and self.repeat_exits and self.signum is None:
            raise KeyboardInterrupt  # nothing trained yet, nothing to save: stop now, as Ctrl-C always did
        if self.signum == signum and self.repeat_exits:  # the same signal again: no more waiting
            self._say("second signal: exiting now, without saving")
            os._exit(EXIT_CODES.get(signum, 130))
        if self.signum is not None:  # another one (a scheduler's SIGTERM and its own): already stopping
            if _PRECEDENCE.index(signum) < _PRECEDENCE.index(self.signum):
                self.signum = signum
            return
        self.signum = signum
        again = " (send it again to exit at once)" if self.repeat_exits else ""
        self._say(f"\n{signal.Signals(signum).name}: finishing the current step, then saving the run's position{again}")

    def __enter__(self) -> StopFlag:
        for signum in STOP_SIGNALS:
            try:
                if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # nohup: a closed terminal does not stop the run
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with whoever owns them
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def raise_if_requested(self) -> None:
        if self.requested:
            raise RunInterrupted(self.signum)

    def votes(self) -> list[float]:
        """This process's stop reason as one count per reason, for data-parallel processes to sum."""
        self.requested  # noqa: B018 - reads the clock
        return [float(self.signum == reason) for reason in _PRECEDENCE]

    def agree(self, counts: list[float]) -> bool:
        """Whether any process wants to stop, from the summed :meth:`votes`; a process that did not
        see a reason itself takes the first one another saw."""
        if self.signum is None:
            self.signum = next((reason for reason, n in zip(_PRECEDENCE, counts, strict=True) if n), None)
        return self.signum is not None


class Pruned(Exception):
    """Raised by a ``TrainOptions.on_validation`` callback (a sweep's pruner) to end a run after a
    validation: its checkpoints are kept and it ends with status ``pruned``."""
