"""Weight lineage: which earlier runs a run's models were loaded from, and whether those files changed.

A run records in its ``run.json`` ``models``: per model of ``info_flow`` its ``role`` (``trained``,
``frozen`` or ``ema``: the moving average of ``ema_of``), its ``class`` and its ``source``: null for
a model the run initialised, else the earlier run it was loaded from with ``model_dir``
(``{"run", "epoch", "file", "sha256"}``: that run's folder, the saved epoch's number, the weights
file's name and the SHA-256 of its bytes when loaded).
:func:`record` makes that entry; :func:`warn_changed` (``--resume``, ``evaluate``, ``load_run``)
says in one warning line per model when a recorded source file's bytes differ now;
:func:`lineage_lines` is ``dlscaffold runs --lineage``: the tree of runs a run's weights stand on.
Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlscaffold.records.rundir import is_run_dir, read_run_info
from dlscaffold.records.runfiles import check_run_dir, model_weights

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from dlscaffold.config import Config

KEY = "models"  # the run.json key
MAX_DEPTH = 100  # runs --lineage follows sources this many runs deep at most


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def source_run(model_dir: Path) -> Path:
    """The run folder of a ``model_dir`` (the run, or its ``checkpoints`` folder), absolute; a folder
    of weights files outside any run is itself."""
    model_dir = Path(model_dir).resolve()
    return model_dir.parent if not is_run_dir(model_dir) and is_run_dir(model_dir.parent) else model_dir


def record(config: Config, models: Mapping[str, Any], trained: Collection[str]) -> dict[str, dict[str, Any]]:
    """The ``models`` entry of a new run's ``run.json``: each model's role, class and source (the
    file a ``model_dir`` model was loaded from, with the SHA-256 of its bytes).

    Args:
        models: the run's built models by name; trained: the names of those it trains."""
    entry = {}
    for name, spec in config.info_flow.items():
        source = None
        if spec.model_dir is not None:  # spec.epoch: the number prepare resolved best / last to
            path = model_weights(spec.model_dir, name, spec.epoch)
            source = {
                "run": str(source_run(spec.model_dir)),
                "epoch": spec.epoch,
                "file": path.name if path is not None else None,
                "sha256": file_sha256(path) if path is not None else None,
            }
        entry[name] = {
            "role": "trained" if name in trained else "ema" if spec.ema_of else "frozen",
            "class": type(models[name]).__name__,
            "source": source,
        }
    return entry


def sources(run_dir: Path, warn: Callable[[str], None] | None = None) -> list[tuple[str, dict[str, Any]]] | None:
    """``(model, source)`` for each model the run's ``run.json`` records as loaded from an earlier
    run, in ``info_flow`` order; None when it records no lineage (a run from an older version)."""
    models = read_run_info(run_dir, warn).get(KEY)
    if not isinstance(models, dict):
        return None
    found = []
    for name, item in models.items():
        source = item.get("source") if isinstance(item, dict) else None
        if isinstance(source, dict) and isinstance(source.get("run"), str):
            found.append((name, source))
    return found


def weights_file(source: dict[str, Any]) -> Path | None:
    """Where a recorded source's weights file is: ``<run>/checkpoints/<file>``, or ``<run>/<file>``
    for a folder of weights outside a run."""
    if not isinstance(source.get("file"), str):
        return None
    from dlscaffold.records.checkpoint import checkpoint_folder

    return checkpoint_folder(Path(source["run"])) / source["file"]


def warn_changed(run_dir: Path) -> list[str]:
    """One warning (``dlscaffold`` logger) per model whose recorded source file is gone or whose bytes
    no longer have the SHA-256 the run recorded; returns the lines. Never fails."""
    lines = []
    for name, source in sources(run_dir) or []:
        path, recorded = weights_file(source), source.get("sha256")
        if path is None or not isinstance(recorded, str):
            continue
        try:  # only a regular file is hashed: a FIFO named by a hostile run.json would never end
            now = file_sha256(path) if stat.S_ISREG(os.stat(path).st_mode) else None
        except (OSError, ValueError):
            now = None
        if now == recorded:
            continue
        what = "is gone" if now is None else "changed (its SHA-256 differs)"
        lines.append(
            f"info_flow.{name}: the weights file it was loaded from, {path}, {what} since this run recorded "
            "it; the run's own checkpoints are unaffected, but that file no longer holds the weights it started from"
        )
    for line in lines:
        logging.getLogger("dlscaffold").warning(line)
    return lines


def _shown(path: Path) -> str:
    """A path as the user would type it here: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _real(run: Path) -> Path | None:
    """``run`` with every link resolved (a cycle is found however the runs are spelled); None for a
    path that cannot be one (a NUL in it)."""
    try:
        return run.resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def _state(run: Path, seen: set[Path], warn: Callable[[str], None]) -> str:
    from dlscaffold.records.summaries import summarize_run

    if _real(run) in seen:
        return "a cycle: already above"
    if _real(run) is None or not run.exists():
        return "missing"
    if not is_run_dir(run):
        return "not a run folder"
    return summarize_run(run, warn)["status"]


def _plain(value: Any, limit: int = 80) -> str:
    """A recorded value as a line shows it: its text, cut to ``limit`` characters (a hostile run.json
    may hold anything)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _edge(name: str, source: dict[str, Any]) -> str:
    sha = source.get("sha256")
    details = ", ".join(
        part
        for part in (_plain(source.get("file") or ""), f"sha256 {sha[:8]}..." if isinstance(sha, str) else "")
        if part
    )
    return f"{_plain(name)} <- {_shown(Path(source['run']))} epoch {_plain(source.get('epoch', '?'))}" + (
        f" ({details})" if details else ""
    )


def lineage_lines(run_dir: Path, warn: Callable[[str], None] = lambda line: None) -> list[str]:
    """``dlscaffold runs --lineage``: the run, then a tree of the runs its models' weights were loaded
    from, each with its own sources below it, as plain text lines (a run folder's text as it is:
    the caller escapes what reaches a terminal).

    Raises:
        UserError: when ``run_dir`` is not a run folder.
    """
    run_dir = check_run_dir(run_dir)
    lines = [f"{_shown(run_dir)}  ({_state(run_dir, set(), warn)})"]
    found = sources(run_dir, warn)
    if found is None:
        lines.append("└── no weight lineage recorded (its run.json has no 'models': a run from an older version)")
    elif not found:
        lines.append("└── trains every model from scratch (no model loaded with model_dir)")
    else:
        _branches(found, "", {_real(run_dir)}, lines, warn)
    return lines


def _branches(
    found: list[tuple[str, dict[str, Any]]], prefix: str, seen: set[Path], lines: list[str], warn: Callable[[str], None]
) -> None:
    for i, (name, source) in enumerate(found):
        last, run = i == len(found) - 1, Path(source["run"])
        lines.append(f"{prefix}{'└── ' if last else '├── '}{_edge(name, source)}  ({_state(run, seen, warn)})")
        real = _real(run)
        if real is not None and real not in seen and is_run_dir(run) and len(seen) < MAX_DEPTH:
            _branches(sources(run, warn) or [], prefix + ("    " if last else "│   "), seen | {real}, lines, warn)
