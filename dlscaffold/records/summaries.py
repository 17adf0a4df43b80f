"""A run folder summarised from its files alone (``run.json``, ``metrics.jsonl``, ``config.yml``).

What ``dlscaffold runs``, ``runs --lineage``, the training summary and the experiments read of a run:
:func:`summarize_run` (one row), :func:`list_runs` (every run of a logging folder), :func:`run_seconds`
and :func:`to_json` (strict JSON). It works while runs are going, after crashes, and without torch;
a file that cannot be read gives one warning and the run is listed with what is known. A run whose
``run.json`` says ``running`` while no process holds its lock is :data:`STALE`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlscaffold.config import read_yaml
from dlscaffold.errors import UserError
from dlscaffold.records.rundir import CONFIG_FILE, RunLock, is_run_dir, read_metrics, read_run_info

STALE = "stale"  # run.json says running, but no process holds the run's lock


_ROW_FIELDS = ("epoch", "split", "step")


def _read_notes(path: Path, warn: Callable[[str], None]) -> str:
    """``logging_params.run_notes`` of a run's ``config.yml`` ("" when absent)."""
    if not path.is_file():
        return ""
    try:
        config = read_yaml(path)  # the hardened reader: limits on size, depth and aliases
    except UserError as exc:
        warn(f"{exc.problems[0]}; its run notes are shown as empty")
        return ""
    logging_params = config.get("logging_params") if isinstance(config, dict) else None
    notes = logging_params.get("run_notes") if isinstance(logging_params, dict) else None
    return "" if notes is None else str(notes)


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def run_seconds(info: dict[str, Any]) -> float | None:
    """A run's training time in seconds from its ``run.json``: ``train_seconds`` (summed over its
    sessions, kept up to date at each epoch's end), else for a run that recorded none (an older
    version's) ``ended - started``; None when neither is known or the run is going on."""
    seconds = info.get("train_seconds")
    if is_number(seconds):
        return float(seconds)
    started, ended = _timestamp(info.get("started")), _timestamp(info.get("ended"))
    if info.get("status") == "running" or started is None or ended is None:
        return None
    return (ended - started).total_seconds()


def summarize_run(run_dir: Path, warn: Callable[[str], None]) -> dict[str, Any]:
    """One run's row: the keys ``run``, ``status``, ``epochs``, ``best``, ``last_val``, ``seconds``, ``run_notes``.

    ``status`` is run.json's, or :data:`STALE` for a ``running`` run whose lock no process holds;
    ``seconds`` is :func:`run_seconds`. A seed group's run also has ``group`` (run.json's
    ``{"id", "seed", "size"}``), a sweep's trial run ``trial`` and ``params`` (the trial's values).

    Args:
        run_dir: a run folder (see :func:`dlscaffold.records.rundir.is_run_dir`).
        warn: called with one line per file that cannot be read.
    """
    info = read_run_info(run_dir, warn)
    rows = read_metrics(run_dir, warn)
    train_epochs = [r["epoch"] for r in rows if r.get("split") == "train" and is_number(r.get("epoch"))]
    val_rows = [r for r in rows if r.get("split") == "val"]
    last_val = {k: v for k, v in val_rows[-1].items() if k not in _ROW_FIELDS} if val_rows else {}
    status = info.get("status")
    status = status if isinstance(status, str) and status else "unknown"
    if status == "running" and not RunLock.held(run_dir):  # its process is gone
        status = STALE
    best = info.get("best")
    row = {
        "run": run_dir.name,
        "status": status,
        "epochs": int(max(train_epochs, default=0)),
        "best": best if isinstance(best, dict) else None,
        "last_val": last_val,
        "seconds": run_seconds(info),
        "run_notes": _read_notes(run_dir / CONFIG_FILE, warn),
    }
    group, sweep = info.get("group"), info.get("sweep")
    if isinstance(group, dict) and isinstance(group.get("id"), str):  # a run of a seed group
        row["group"] = group
    if isinstance(sweep, dict):  # a sweep's trial run
        row["trial"] = sweep.get("trial")
        row["params"] = sweep.get("params") if isinstance(sweep.get("params"), dict) else {}
    return row


def list_runs(logging_dir: Path, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """A row (see :func:`summarize_run`) for every run folder directly under ``logging_dir``, by name.

    Folders that are not runs (no ``config.yml`` and ``idx_dict.json``) and plain files are skipped.

    Raises:
        UserError: when ``logging_dir`` is not a folder.
    """
    if not logging_dir.is_dir():
        raise UserError(
            f"runs: '{logging_dir}' is not a folder; give the logging_dir of your runs, "
            "e.g. dlscaffold runs path/to/runs"
        )
    folders = sorted((p for p in logging_dir.iterdir() if p.is_dir() and is_run_dir(p)), key=lambda p: natural(p.name))
    return [summarize_run(folder, warn) for folder in folders]


def natural(text: str) -> tuple:
    """A key ordering ``20260101_2`` before ``20260101_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _strict(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so it dumps as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def to_json(rows: Any) -> str:
    """The rows (or an evaluation's result) as strict JSON (indent 2; NaN and infinities become null)."""
    return json.dumps(_strict(rows), indent=2, allow_nan=False)
