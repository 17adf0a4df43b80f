"""The run directory: creating it, its lock, atomic writes, ``run.json`` and ``metrics.jsonl``.

``<logging_dir>/<YYYYMMDD>_<N>_<run_notes>/`` is created with one ``mkdir`` (atomic: two runs never
share a folder; N counts that day's runs). ``run.json`` records the run's status, provenance and
the project folder it was trained from. What writes ``metrics.jsonl`` and the trackers during a run
is :mod:`dlscaffold.records.trackers`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from dlscaffold.config import safe_run_notes
from dlscaffold.errors import UserError, first_line

# A run folder's files, named here only: every other module imports these names.
CONFIG_FILE = "config.yml"  # the run's config, overrides applied and paths resolved
RUN_INFO_FILE = "run.json"  # status, provenance, best epoch, lineage, group / sweep / job records
SPLIT_FILE = "idx_dict.json"  # the train / val / dev split, as dataset indices
METRICS_FILE = "metrics.jsonl"  # one JSON row per logged step and per validation
DIFF_FILE = "git.diff"  # the project's uncommitted changes when the run started
LOCK_FILE = ".lock"  # held by the process training the run


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
        raise UserError(
            f"{path.parent}: cannot write {path.name} ({exc.strerror or exc}); files written before "
            "are intact: free space or make the folder writable, then resume the run"
        ) from None


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def check_logging_dir(logging_dir: Path) -> None:
    """Refuse, before a run builds anything, a ``logging_dir`` its run folder cannot be created in:
    a regular file on the way (the folder itself or one above it), or a nearest existing folder this
    process may not write to. What only an attempt shows (a full disk) is said when it is made.

    Raises:
        UserError: one line naming the file or folder in the way.
    """
    for folder in (logging_dir, *logging_dir.parents):
        try:
            if not folder.exists():
                continue
        except (OSError, ValueError) as exc:  # e.g. no permission to look inside a folder above it
            _cannot_create(logging_dir, f"'{folder}' cannot be looked at ({first_line(exc, with_type=False)})")
        if not folder.is_dir():
            _cannot_create(logging_dir, f"'{folder}' is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            _cannot_create(logging_dir, f"'{folder}' is not writable by this user")
        return


def _cannot_create(logging_dir: Path, why: str) -> NoReturn:
    raise UserError(
        f"logging_params.logging_dir: cannot create run folders in '{logging_dir}': {why}; choose a folder you "
        "can write to"
    )


def create_run_dir(logging_dir: Path, run_notes: str, today: dt.date | None = None) -> Path:
    """Create and return a fresh ``<YYYYMMDD>_<N>[_<run_notes>]`` folder under ``logging_dir``."""
    date = (today or dt.date.today()).strftime("%Y%m%d")
    notes = safe_run_notes(run_notes)
    try:
        logging_dir.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in logging_dir.iterdir() if (m := re.match(rf"{date}_(\d+)(_|$)", p.name))]
        number = max(taken, default=0) + 1
        while True:
            path = logging_dir / (f"{date}_{number}_{notes}" if notes else f"{date}_{number}")
            try:
                path.mkdir()
                return path
            except FileExistsError:  # another run took this number first
                number += 1
    except OSError as exc:  # no permission, a file in the way, a read-only or full disk
        _cannot_create(logging_dir, exc.strerror or str(exc))


def read_run_info(run_dir: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A run's ``run.json``: {} when it has none or it cannot be read (with one ``warn`` line saying
    why, when given: ``dlscaffold runs`` lists such a run with what is known)."""
    path = run_dir / RUN_INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if warn:
            warn(
                f"{path}: cannot read it ({first_line(exc, with_type=False)}); "
                "its status, best and times are shown as unknown"
            )
        return {}
    if not isinstance(info, dict):
        if warn:
            warn(
                f"{path}: expected a JSON object, found {type(info).__name__}; "
                "its status, best and times are shown as unknown"
            )
        return {}
    return info


def update_run_info(run_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into the run's ``run.json`` (written atomically)."""
    info = {**read_run_info(run_dir), **fields}
    write_text_atomic(run_dir / RUN_INFO_FILE, json.dumps(info, indent=2, allow_nan=False))


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run folder (it holds the run's config and split)."""
    return (path / CONFIG_FILE).is_file() and (path / SPLIT_FILE).is_file()


def read_metrics(run_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``. Strict without ``warn`` (a broken line raises
    ``ValueError``); with it, tolerant: the readable rows, and one warning for the file."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        if warn is None:
            raise
        warn(
            f"{path}: cannot read it ({first_line(exc, with_type=False)}); "
            "its epochs and val metrics are shown as unknown"
        )
        return []
    if warn is None:
        return [json.loads(line) for line in lines if line.strip()]
    rows, bad = [], []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            (rows.append(row) if isinstance(row, dict) else bad.append(number))
    if bad:
        where = f"line {bad[0]}" if len(bad) == 1 else f"{len(bad)} lines, first line {bad[0]}"
        warn(f"{path}: {where} is not a JSON object (a run stopped mid-write?); those rows are skipped")
    return rows


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/.lock``, held for the whole run.

    The operating system releases the lock when its process ends, however it ends, so the lock of
    a killed run is simply taken over. The file records the holder's PID for the refusal message.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
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
            raise UserError(
                f"{self.path.parent}: in use by process {holder} (another train or --resume of this "
                "run); wait for it to end, or stop it first"
            ) from None
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

    @staticmethod
    def held(run_dir: Path) -> bool:
        """Whether a process holds ``run_dir``'s lock now (a run going on), without waiting and
        without creating the file: a shared ``flock`` taken and dropped at once."""
        import fcntl

        try:
            fh = open(run_dir / LOCK_FILE)  # noqa: SIM115 - closed below
        except OSError:  # no lock file: no run ever held it
            return False
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``*.tmp`` files that a killed run left behind (never a finished file)."""
    for path in run_dir.rglob("*.tmp"):
        path.unlink(missing_ok=True)
