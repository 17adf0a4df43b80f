"""The run directory and what is written into it for machines: ``metrics.jsonl`` and TensorBoard.

``<logging_dir>/<YYYYMMDD>_<N>_<run_notes>/`` is created with one ``mkdir`` (atomic: two runs never
share a folder; N counts that day's runs). ``run.json`` records the run's status, provenance and
the project folder it was trained from. :class:`RunLog` writes the machines' record of a run;
:class:`NullLog` takes the same calls and writes nothing (``--debug`` runs), so the loop never asks
whether it has a log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dlscaffold.config import safe_run_notes
from dlscaffold.errors import UserError


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write to ``<path>.tmp``, flush it to disk, then rename it over ``path``, so that a crash
    never leaves a half-written file under a good name."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk (ENOSPC), a read-only one (EROFS), no permission
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path.parent}: cannot write {path.name} ({exc.strerror or exc}); files written before "
                        "are intact: free space or make the folder writable, then resume the run") from None


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def create_run_dir(logging_dir: Path, run_notes: str, today: dt.date | None = None) -> Path:
    """Create and return a fresh ``<YYYYMMDD>_<N>[_<run_notes>]`` folder under ``logging_dir``."""
    try:
        logging_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"logging_params.logging_dir: cannot create '{logging_dir}' ({exc.strerror}); "
                        "choose a writable folder") from None
    date = (today or dt.date.today()).strftime("%Y%m%d")
    notes = safe_run_notes(run_notes)
    taken = [int(m.group(1)) for p in logging_dir.iterdir() if (m := re.match(rf"{date}_(\d+)(_|$)", p.name))]
    number = max(taken, default=0) + 1
    while True:
        path = logging_dir / (f"{date}_{number}_{notes}" if notes else f"{date}_{number}")
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took this number first
            number += 1


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """A run's ``run.json`` (empty when it has none or it cannot be read)."""
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def update_run_info(run_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into the run's ``run.json`` (written atomically)."""
    info = {**read_run_info(run_dir), **fields}
    write_text_atomic(run_dir / "run.json", json.dumps(info, indent=2, allow_nan=False))


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run folder (it holds the run's config and split)."""
    return (path / "config.yml").is_file() and (path / "idx_dict.json").is_file()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All rows of a run's ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLog:
    """Writes ``metrics.jsonl`` rows and TensorBoard scalars (tags ``<split>/<Model>/<name>``).

    Rows are strict JSON: a NaN or infinite value is written as ``null``.

    Args:
        run_dir: the run folder.
        resume: ``(epoch, step)`` of the checkpoint a resumed run starts from: rows after that epoch
            (written before the interruption, past the checkpoint) are dropped, and TensorBoard
            events after that step purged.
    """

    def __init__(self, run_dir: Path, resume: tuple[int, int] | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow, so only here

        self.path = run_dir / "metrics.jsonl"
        if resume is not None:
            kept = [r for r in read_metrics(run_dir) if r["epoch"] <= resume[0]]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.writer = SummaryWriter(str(run_dir), purge_step=resume[1] if resume is not None else None)

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"train_step/{name}", value, step)

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        row = {"epoch": epoch, "split": split, "step": step,
               **{k: v if math.isfinite(v) else None for k, v in values.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
        for name, value in values.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)
        self.writer.flush()

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's hyper-parameters with its final metrics (TensorBoard's HPARAMS tab)."""
        from torch.utils.tensorboard.summary import hparams

        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        for summary in hparams(clean, metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def images(self, step: int, grids: dict[str, Any]) -> None:
        """Write images to TensorBoard (its IMAGES tab): ``{tag: grid}``, each grid a ``(C, H, W)``
        tensor, ``C`` 1 or 3, of floats in [0, 1] (:func:`dlscaffold.images.image_grids`)."""
        for tag, grid in grids.items():
            self.writer.add_image(tag, grid, step, dataformats="CHW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullLog:
    """A :class:`RunLog` that writes nothing (a ``--debug`` run keeps no record)."""

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        pass

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def images(self, step: int, grids: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/.lock``, held for the whole run.

    The operating system releases the lock when its process ends, however it ends, so the lock of
    a killed run is simply taken over. The file records the holder's PID for the refusal message.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._fh: IO | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise a one-line :class:`UserError` naming the process that holds it."""
        import fcntl

        fh = open(self.path, "a+")  # noqa: SIM115 - held open until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise UserError(f"{self.path.parent}: in use by process {holder} (another train or --resume of this "
                            "run); wait for it to end, or stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the flock
            self._fh = None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``*.tmp`` files that a killed run left behind (never a finished file)."""
    for path in run_dir.rglob("*.tmp"):
        path.unlink(missing_ok=True)
