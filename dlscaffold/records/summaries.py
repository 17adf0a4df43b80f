"""A run folder summarised from its files alone (``run.json``, ``metrics.jsonl``, ``config.yml``).

What ``dlscaffold runs``, ``runs --lineage``, the training summary and the experiments read of a run:
:func:`summarize_run` (one row), :func:`list_runs` (every run of a logging folder), :func:`run_seconds`
and :func:`to_json` (strict JSON). It works while runs are going, after crashes, and without torch;
a file that cannot be read gives one warning and the run is listed with what is known. A run whose
``run.json`` says ``running`` while no process holds its lock is :data:`STALE`.

A run folder may come from anyone, so it is read as data that can be hostile: its files are read
only inside it (:func:`dlscaffold.records.rundir.read_run_file`: no symbolic link followed out of
it, no FIFO or device opened, sizes bounded), a value of the wrong type is left out with one
warning, and :func:`printable` escapes the control characters of whatever text is shown.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlscaffold.config import INT64_MAX, MAX_CONFIG_BYTES, YamlProblem, parse_yaml
from dlscaffold.errors import UserError
from dlscaffold.records.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    RUN_INFO_FILE,
    Refused,
    RunLock,
    is_run_dir,
    read_metrics,
    read_run_file,
    read_run_info,
)

STALE = "stale"  # run.json says running, but no process holds the run's lock


_ROW_FIELDS = ("epoch", "split", "step")
# Characters never shown as they are: besides the controls (C0, DEL, C1), lone surrogates (which no
# terminal encoding holds) and the line separators, the marks that reorder text right to left.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: Any, keep: str = "") -> str:
    """``text`` (``str()`` of it) as it may reach a terminal: every control character (but those in
    ``keep``, e.g. ``"\\n"`` for text of several lines) written as an escape, ESC as ``\\x1b``, a
    newline as ``\\n``, a byte of a file name that is not UTF-8 as ``\\xff``."""
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch if ch in keep or not _unsafe(ch) else _escape(ch) for ch in text)


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as Python reads file names
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: each lone surrogate (from a JSON ``\\ud800`` escape, or a byte of a
    file name that is not UTF-8) written as its escape (:func:`printable`'s), so that the text can be
    encoded, stored (pandas) and printed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_escape(ch) if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


def read_run_config(run_dir: Path, warn: Callable[[str], None], then: str = "its run notes are shown as empty") -> dict:
    """A run's ``config.yml`` as plain data, read with the limits of the hardened YAML reader and only
    where it is a regular file inside the run folder; {} when it has none, and {} with one ``warn``
    line (ending with ``then``) when it cannot be read or holds no mapping."""
    path = run_dir / CONFIG_FILE
    try:
        data = read_run_file(run_dir, CONFIG_FILE, MAX_CONFIG_BYTES)
        if data is None:
            return {}
        config = parse_yaml(data.decode("utf-8"))
    except Refused as exc:
        warn(f"{path}: {exc}; {then}")
        return {}
    except UnicodeDecodeError as exc:
        warn(f"{path}: found the byte 0x{data[exc.start]:02x}, which is not UTF-8; {then}")
        return {}
    except YamlProblem as exc:
        where = f"{exc.line}:{exc.column}:" if exc.line is not None else ""
        warn(f"{path}:{where} {'invalid YAML: ' if exc.syntax else ''}{exc.message}; {then}")
        return {}
    if not isinstance(config, dict):
        warn(f"{path}: found {'an empty file' if config is None else _kind(config)}, not a mapping; {then}")
        return {}
    return config


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
    version's) ``ended - started``; None when neither is known (or is no finite, non-negative
    number of seconds) or the run is going on."""
    seconds = info.get("train_seconds")
    if is_number(seconds) and 0 <= seconds < math.inf:
        return float(seconds)
    started, ended = _timestamp(info.get("started")), _timestamp(info.get("ended"))
    if info.get("status") == "running" or started is None or ended is None:
        return None
    seconds = (ended - started).total_seconds()
    return seconds if seconds >= 0 else None


def _kind(value: Any) -> str:
    """A JSON value's kind, for a warning: ``a string``, ``a list``, ``true/false``, ..."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer" if abs(value) <= INT64_MAX else "an integer beyond int64"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else "a float"
    if isinstance(value, str):
        return "a string"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _whole(value: Any) -> bool:
    """An integer that fits int64 (never true/false)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT64_MAX


def _numeric(value: Any) -> bool:
    """A float, or an integer that fits int64 (never true/false): a value a table can show."""
    return isinstance(value, float) or _whole(value)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool)) or _numeric(value)


# What a field of run.json must hold: a check, and its words for a warning.
_TEXT = (lambda value: isinstance(value, str), "a string")
_WHOLE = (_whole, "an integer")
_NUMBER = (_numeric, "a number")
_OBJECT = (lambda value: isinstance(value, dict), "an object")
_SECONDS = (lambda value: is_number(value) and 0 <= value < math.inf, "a number of seconds")


class _Reader:
    """The values of one JSON object that have the expected type; the others are None, each noted."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, problems

    def take(self, source: dict[str, Any], key: str, expected: tuple[Callable[[Any], bool], str]) -> Any:
        value = source.get(key)
        if value is None or expected[0](value):
            return valid_text(value) if isinstance(value, str) else value
        self.problems.append(f"{self.where}{key} is {_kind(value)}, not {expected[1]}")
        return None


def _typed_info(info: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """What a row takes of ``run.json``, each value of its expected type (else None, with a problem
    noted): ``status``, ``best`` ({epoch, metric, value}), ``group`` ({id, seed, size}), ``sweep``
    ({trial, params}: params' values plain), ``seconds``."""
    top = _Reader("", problems)
    typed: dict[str, Any] = {"status": top.take(info, "status", _TEXT), "best": None, "group": None, "sweep": None}
    for key in ("started", "ended"):
        top.take(info, key, _TEXT)
    top.take(info, "train_seconds", _SECONDS)
    typed["seconds"] = run_seconds(info)
    if (best := top.take(info, "best", _OBJECT)) is not None:
        read = _Reader("best.", problems)
        fields = {"epoch": read.take(best, "epoch", _WHOLE), "metric": read.take(best, "metric", _TEXT)}
        fields["value"] = read.take(best, "value", _NUMBER)
        typed["best"] = fields if any(v is not None for v in fields.values()) else None
    if (group := top.take(info, "group", _OBJECT)) is not None:
        read = _Reader("group.", problems)
        fields = {"id": read.take(group, "id", _TEXT), "seed": read.take(group, "seed", _WHOLE)}
        fields["size"] = read.take(group, "size", _WHOLE)
        typed["group"] = fields if fields["id"] is not None else None
    if (sweep := top.take(info, "sweep", _OBJECT)) is not None:
        read = _Reader("sweep.", problems)
        params = read.take(sweep, "params", _OBJECT) or {}
        plain = {
            valid_text(name): valid_text(value) if isinstance(value, str) else value
            for name, value in params.items()
            if _scalar(value)
        }
        if len(plain) < len(params):
            problems.append("sweep.params holds values that are not plain (lists, objects)")
        typed["sweep"] = {"trial": read.take(sweep, "trial", _WHOLE), "params": plain}
    return typed


def _last_val(rows: list[dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """The metrics of the last val row that are numbers (or null); the others noted as problems."""
    val_rows = [row for row in rows if row.get("split") == "val"]
    last = {k: v for k, v in val_rows[-1].items() if k not in _ROW_FIELDS} if val_rows else {}
    kept = {valid_text(name): value for name, value in last.items() if value is None or _numeric(value)}
    if len(kept) < len(last):
        problems.append(f"{METRICS_FILE}: the last val row holds values that are not numbers")
    return kept


def summarize_run(run_dir: Path, warn: Callable[[str], None], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run's row: the keys ``run``, ``status``, ``epochs``, ``best``, ``last_val``, ``seconds``, ``run_notes``.

    ``status`` is run.json's, or :data:`STALE` for a ``running`` run whose lock no process holds;
    ``seconds`` is :func:`run_seconds`. A seed group's run also has ``group`` (run.json's
    ``{"id", "seed", "size"}``), a sweep's trial run ``trial`` and ``params`` (the trial's values).
    Each value has its type (a ``best`` is None or ``{"epoch": int, "metric": str, "value": number}``,
    each part None where unknown; ``last_val`` holds numbers): a value of another type in the run's
    files is left out, with one warning for the run.

    Args:
        run_dir: a run folder (see :func:`dlscaffold.records.rundir.is_run_dir`).
        warn: called with one line per file that cannot be read.
        config: the run's ``config.yml`` when already read (:func:`read_run_config`).
    """
    problems: list[str] = []
    info = _typed_info(read_run_info(run_dir, warn), problems)
    rows = read_metrics(run_dir, warn)
    train_epochs = [r["epoch"] for r in rows if r.get("split") == "train" and _epoch(r.get("epoch"))]
    last_val = _last_val(rows, problems)
    status = info["status"] or "unknown"
    if status == "running" and not RunLock.held(run_dir):  # its process is gone
        status = STALE
    config = read_run_config(run_dir, warn) if config is None else config
    logging_params = config.get("logging_params")
    notes = logging_params.get("run_notes") if isinstance(logging_params, dict) else None
    row = {
        "run": valid_text(run_dir.name),
        "status": status,
        "epochs": int(max(train_epochs, default=0)),
        "best": info["best"],
        "last_val": last_val,
        "seconds": info["seconds"],
        "run_notes": "" if notes is None else str(notes),
    }
    if info["group"] is not None:  # a run of a seed group
        row["group"] = info["group"]
    if info["sweep"] is not None:  # a sweep's trial run
        row["trial"], row["params"] = info["sweep"]["trial"], info["sweep"]["params"]
    if problems:
        where = ", ".join(p if p.startswith(METRICS_FILE) else f"{RUN_INFO_FILE} {p}" for p in problems)
        warn(f"{run_dir}: values of an unexpected type ({where}); they are shown as unknown")
    return row


def _epoch(value: Any) -> bool:
    """An epoch number a table can show: finite, within int64."""
    return is_number(value) and abs(value) <= INT64_MAX


def list_runs(logging_dir: Path, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """A row (see :func:`summarize_run`) for every run folder directly under ``logging_dir``, by name.

    Folders that are not runs (no ``config.yml`` and ``idx_dict.json``) and plain files are skipped.

    Raises:
        UserError: when ``logging_dir`` is not a folder.
    """
    if not is_folder(logging_dir):
        raise UserError(
            f"runs: '{logging_dir}' is not a folder; give the logging_dir of your runs, "
            "e.g. dlscaffold runs path/to/runs"
        )
    return [summarize_run(folder, warn) for folder in run_folders(logging_dir, "runs")]


def run_folders(folder: Path, command: str) -> list[Path]:
    """The run folders directly in ``folder``, by name (:func:`natural`).

    Raises:
        UserError: when ``folder`` cannot be listed (no permission).
    """
    try:
        children = list(folder.iterdir())
    except OSError as exc:
        raise UserError(
            f"{command}: cannot list '{folder}' ({exc.strerror or exc}); give a folder you may read"
        ) from None
    return sorted((p for p in children if is_folder(p) and is_run_dir(p)), key=lambda p: natural(p.name))


def is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder (following links); False where it cannot be looked at."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def natural(text: str) -> tuple:
    """A key ordering ``20260101_2`` before ``20260101_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def is_number(value: Any) -> bool:
    """An int or float, not true/false and not NaN (infinities are numbers)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


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
