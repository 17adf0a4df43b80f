"""``dlscaffold runs``: one line per run folder of a logging folder.

Each run is summarised from its files alone (``run.json``, ``metrics.jsonl``, ``config.yml``), so
this works while runs are going, after crashes, and without torch. A file that cannot be read gives
one warning and the run is listed with what is known.

Sort keys (``--sort``): ``run`` (by date, then run number), ``status`` and ``run_notes`` ascend;
``epochs``, ``seconds``, ``best`` (the best value run.json records) and ``val:<Model>/<name>``
(that metric in the last val row) descend, largest first. A leading ``-`` reverses the order
(``--sort=-val:Classifier/loss`` puts the smallest loss first). Runs without the value come last.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from dlscaffold.config import read_yaml
from dlscaffold.errors import UserError, available, did_you_mean
from dlscaffold.rundir import is_run_dir, read_metrics, read_run_info

KEYS = ("run", "status", "epochs", "best", "last_val", "seconds", "run_notes")
SORT_KEYS = ("run", "status", "epochs", "best", "seconds", "run_notes")
_ASCENDING = ("run", "status", "run_notes")
_ROW_FIELDS = ("epoch", "split", "step")
_STATUS_STYLE = {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}


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


def _seconds(info: dict[str, Any]) -> float | None:
    """``ended - started`` in seconds, or None for a running run or when either is missing."""
    started, ended = _timestamp(info.get("started")), _timestamp(info.get("ended"))
    if info.get("status") == "running" or started is None or ended is None:
        return None
    return (ended - started).total_seconds()


def summarize_run(run_dir: Path, warn: Callable[[str], None]) -> dict[str, Any]:
    """One run's row: the keys ``run``, ``status``, ``epochs``, ``best``, ``last_val``, ``seconds``, ``run_notes``.

    Args:
        run_dir: a run folder (see :func:`dlscaffold.rundir.is_run_dir`).
        warn: called with one line per file that cannot be read.
    """
    info = read_run_info(run_dir, warn)
    rows = read_metrics(run_dir, warn)
    train_epochs = [r["epoch"] for r in rows if r.get("split") == "train" and _is_number(r.get("epoch"))]
    val_rows = [r for r in rows if r.get("split") == "val"]
    last_val = {k: v for k, v in val_rows[-1].items() if k not in _ROW_FIELDS} if val_rows else {}
    status = info.get("status")
    best = info.get("best")
    return {
        "run": run_dir.name,
        "status": status if isinstance(status, str) and status else "unknown",
        "epochs": int(max(train_epochs, default=0)),
        "best": best if isinstance(best, dict) else None,
        "last_val": last_val,
        "seconds": _seconds(info),
        "run_notes": _read_notes(run_dir / "config.yml", warn),
    }


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
    folders = sorted((p for p in logging_dir.iterdir() if p.is_dir() and is_run_dir(p)), key=lambda p: _natural(p.name))
    return [summarize_run(folder, warn) for folder in folders]


def _natural(text: str) -> tuple:
    """A key ordering ``20260101_2`` before ``20260101_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _sort_value(row: dict[str, Any], key: str) -> Any:
    """The value ``key`` sorts ``row`` by, or None when the row lacks it."""
    if key.startswith("val:"):
        value = row["last_val"].get(key[4:])
    elif key == "best":
        value = (row["best"] or {}).get("value")
    elif key == "run":
        return _natural(row["run"])
    else:
        value = row[key]
    if key in _ASCENDING:
        return value if isinstance(value, str) else None
    return value if _is_number(value) else None


def sort_runs(rows: list[dict[str, Any]], key: str = "run") -> list[dict[str, Any]]:
    """Rows sorted by ``key``: one of :data:`SORT_KEYS` or ``val:<Model>/<name>``, ``-`` in front reverses.

    ``run``, ``status`` and ``run_notes`` ascend; numbers (``epochs``, ``seconds``, ``best``'s value,
    ``val:`` metrics) descend. Rows without a value (or with NaN) come last, in run order.

    Raises:
        UserError: for an unknown key or a ``val:`` metric no run has.
    """
    reverse, name = (True, key[1:]) if key.startswith("-") else (False, key)
    if name.startswith("val:"):
        metrics = {m for row in rows for m in row["last_val"]}
        if rows and name[4:] not in metrics:
            raise UserError(
                f"--sort: no run has the val metric '{name[4:]}'; {did_you_mean(name[4:], metrics)}{available(metrics)}"
            )
    elif name not in SORT_KEYS:
        raise UserError(
            f"--sort: unknown key '{key}'; {did_you_mean(name, SORT_KEYS)}expected one of "
            f"{', '.join(SORT_KEYS)} or val:<Model>/<name>, with '-' in front to reverse"
        )
    by_run = sorted(rows, key=lambda r: _natural(r["run"]))
    known = [r for r in by_run if _sort_value(r, name) is not None]
    missing = [r for r in by_run if _sort_value(r, name) is None]
    descending = name not in _ASCENDING
    known.sort(key=lambda r: _sort_value(r, name), reverse=descending != reverse)
    return known + missing


def _strict(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so it dumps as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def to_json(rows: list[dict[str, Any]]) -> str:
    """The rows as strict JSON (indent 2; NaN and infinities become null)."""
    return json.dumps(_strict(rows), indent=2, allow_nan=False)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _best_cell(best: dict[str, Any] | None) -> str:
    if not best:
        return "-"
    return f"{best.get('epoch', '?')}: {best.get('metric', '?')}={_number(best.get('value'))}"


def format_table(rows: list[dict[str, Any]]) -> Table:
    """A ``rich`` table of the rows: run, status, epochs, best (``epoch: metric=value``), last val, seconds, notes.

    Numbers show 4 significant digits, last val one ``metric=value`` per line; run names are never
    cut; cells are plain text (a ``[`` in a run's notes is not markup).
    """
    table = Table()
    for column in ("run", "status", "epochs", "best", "last val", "seconds", "notes"):
        table.add_column(
            column,
            justify="right" if column in ("epochs", "seconds") else "left",
            no_wrap=column in ("run", "status", "epochs", "seconds"),
            overflow="fold",
        )
    for row in rows:
        last_val = "\n".join(f"{name}={_number(value)}" for name, value in row["last_val"].items())
        seconds = row["seconds"]
        table.add_row(
            Text(row["run"]),
            Text(row["status"], style=_STATUS_STYLE.get(row["status"], "")),
            Text(str(row["epochs"])),
            Text(_best_cell(row["best"])),
            Text(last_val or "-"),
            Text(f"{seconds:.0f}" if _is_number(seconds) else "-"),
            Text(row["run_notes"]),
        )
    return table
