"""What a run records after each validation and epoch, besides ``metrics.jsonl``: its best weights
(``<Model>_best.pt`` and ``run.json``'s ``best``) and ``run.json``'s training time.

Each of these writes waits for the disk (``fsync``), a millisecond or several. An epoch of a small
model can take less than that, so the writes are paced: at most one every
:data:`WRITE_EVERY_SECONDS`, and always right after a checkpoint and when the run ends, however it
ends. Between two writes the newest best weights wait in memory, copied to the CPU. A best
validation that has its own checkpoint is written at once (a hard link to the checkpoint's file).

What a crash can lose is therefore at most :data:`WRITE_EVERY_SECONDS` of best weights, never a
checkpoint, and nothing a resume needs: the records on disk always match the last checkpoint or a
later epoch, and ``--resume`` retrains, bitwise, whatever followed the checkpoint. The environment
variable ``DLSCAFFOLD_WRITE_EVERY_SECONDS`` sets another pace (``0``: after every epoch).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlscaffold.errors import UserError
from dlscaffold.records.checkpoint import save_best, snapshot_weights, write_best
from dlscaffold.records.rundir import update_run_info

if TYPE_CHECKING:
    from torch import nn

WRITE_EVERY_SECONDS = 10.0  # the most often run.json and the best weights are written between checkpoints
WRITE_EVERY_ENV = "DLSCAFFOLD_WRITE_EVERY_SECONDS"


def write_every_seconds() -> float:
    """The pace: :data:`WRITE_EVERY_SECONDS`, or the environment's ``DLSCAFFOLD_WRITE_EVERY_SECONDS``."""
    text = os.environ.get(WRITE_EVERY_ENV, "").strip()
    if not text:
        return WRITE_EVERY_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise UserError(f"{WRITE_EVERY_ENV}={text!r}: expected seconds, 0 or more (0: write after every epoch)")
    return seconds


class PacedRecords:
    """The best weights and the training time of one run folder, written when due."""

    def __init__(self, run_dir: Path, every: float):
        self.run_dir, self.every = run_dir, every  # every: write_every_seconds(), read before the run folder exists
        self.written = -math.inf  # time.monotonic() of the last write: the first one is never held back
        self.waiting: dict[str, Any] = {}  # run.json fields not written yet ({"best": ...})
        self.best_weights: tuple[int, dict[str, dict[str, Any]]] | None = None  # (epoch, each model's weights)

    def due(self) -> bool:
        return time.monotonic() - self.written >= self.every

    def keep_best(self, epoch: int, models: dict[str, nn.Module], record: dict[str, Any], at_once: bool) -> bool:
        """A new best validation after ``epoch``: its weights, written at once when due or ``at_once``
        (its checkpoint was just saved), or copied to wait for the next write. ``record``: run.json's
        ``best``. False, keeping nothing, when a model holds NaN or inf (one warning says so)."""
        if at_once or self.due():
            if not save_best(self.run_dir, epoch, models):
                return False
            self.best_weights = None
        else:
            weights = snapshot_weights(models, f"the best weights of epoch {epoch}")
            if weights is None:
                return False
            self.best_weights = (epoch, weights)
        self.waiting["best"] = record
        return True

    def write(self, train_seconds: float, force: bool = False) -> None:
        """The waiting best weights and run.json's fields with the training time: when due, or now
        when ``force`` (after a checkpoint, at the run's end)."""
        if not (force or self.due()):
            return
        if self.best_weights is not None:
            write_best(self.run_dir, *self.best_weights)
            self.best_weights = None
        update_run_info(self.run_dir, train_seconds=round(train_seconds, 3), **self.waiting)
        self.waiting, self.written = {}, time.monotonic()
