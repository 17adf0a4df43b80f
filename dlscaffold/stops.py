"""Clean stops: SIGTERM (what job schedulers send) and SIGINT (Ctrl-C) end a run at a step boundary.

The first signal sets a flag that the training loop reads after each step (a Python attribute, no
GPU sync); the loop then writes a checkpoint of its exact position and ends with exit code 143
(SIGTERM) or 130 (SIGINT). A second signal ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class RunInterrupted(Exception):
    """The run stopped on a signal after saving its position; ``exit_code`` is 143 or 130."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 130)
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


class StopFlag:
    """Catches SIGTERM and SIGINT while installed (a context manager); ``requested`` says whether one came."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: no more waiting
            sys.stderr.write("second signal: exiting now, without saving\n")
            sys.stderr.flush()
            os._exit(EXIT_CODES.get(signum, 130))
        self.signum = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: finishing the current step, then saving the run's "
            "position (send it again to exit at once)\n"
        )
        sys.stderr.flush()

    def __enter__(self) -> StopFlag:
        for signum in EXIT_CODES:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with whoever owns them
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def raise_if_requested(self) -> None:
        if self.signum is not None:
            raise RunInterrupted(self.signum)


class Pruned(Exception):
    """Raised by a ``TrainOptions.on_validation`` callback (a sweep's pruner) to end a run after a
    validation: its checkpoints are kept and it ends with status ``pruned``."""
