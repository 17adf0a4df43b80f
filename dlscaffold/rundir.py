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
import os
import re
from pathlib import Path
from typing import IO, Any, Iterator

from dlscaffold.errors import UserError


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write to ``<path>.tmp``, flush it to disk, then rename it over ``path``, so that a crash
    never leaves a half-written file under a good name."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def create_run_dir(logging_dir: Path, run_notes: str, today: dt.date | None = None) -> Path:
    """Create and return a fresh ``<YYYYMMDD>_<N>[_<run_notes>]`` folder under ``logging_dir``."""
    try:
        logging_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"logging_params.logging_dir: cannot create '{logging_dir}' ({exc.strerror}); choose a writable folder") from None
    date = (today or dt.date.today()).strftime("%Y%m%d")
    notes = re.sub(r"[^\w.-]+", "_", run_notes.strip()).strip("_")
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

    Args:
        run_dir: the run folder.
        resume_epoch: when resuming, rows after this epoch (written before the interruption, past
            the last checkpoint) are dropped, and TensorBoard events after ``resume_step`` purged.
        resume_step: the global step of that checkpoint.
    """

    def __init__(self, run_dir: Path, resume_epoch: int = 0, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow, so only here

        self.path = run_dir / "metrics.jsonl"
        if resume_epoch:
            kept = [r for r in read_metrics(run_dir) if r["epoch"] <= resume_epoch]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.writer = SummaryWriter(str(run_dir), purge_step=resume_step if resume_epoch else None)

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"train_step/{name}", value, step)

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        row = {"epoch": epoch, "split": split, "step": step, **values}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
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

    def close(self) -> None:
        pass
