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
import stat
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

# The most bytes read of a run folder's run.json and metrics.jsonl (one row per epoch and split):
# far above what a run writes, so that a huge file is refused from its size instead of being read.
MAX_RUN_INFO_BYTES = 16 * 2**20
MAX_METRICS_BYTES = 256 * 2**20
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


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


class Refused(Exception):
    """A file of a run folder that is not read: why, in a few words (``found a symbolic link to a place
    outside the run folder (not followed)``, ``found a named pipe (FIFO), not a regular file (not
    opened)``, ``found more than 16 MiB (not read)``, ``cannot read it (Permission denied)``)."""


def _inside(run_dir: Path, path: Path) -> str:
    """``path`` with every symbolic link resolved, where that lies inside ``run_dir`` (itself resolved).

    Raises:
        Refused: when a link leads out of the run folder.
    """
    root, real = os.path.realpath(run_dir), os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise Refused("found a symbolic link to a place outside the run folder (not followed)")
    return real


def read_run_file(run_dir: Path, name: str, limit: int) -> bytes | None:
    """The bytes of the file ``name`` of a run folder, read only where it is a regular file that
    lies inside the folder (a symbolic link is followed only while it stays inside), of at most
    ``limit`` bytes; None when there is no such file. Its type and size are checked from its
    metadata before it is opened (a FIFO or a device is never opened), and again on the open file.

    Raises:
        Refused: a link out of the run folder, not a regular file, over ``limit``, unreadable.
    """
    path = run_dir / name
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise Refused(f"cannot look at it ({getattr(exc, 'strerror', None) or exc})") from None
    real = _inside(run_dir, path)
    try:
        _check_kind(os.stat(real), limit)
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:  # a dangling link
        return None
    except OSError as exc:
        raise Refused(f"cannot read it ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        _check_kind(os.fstat(fd), limit)  # what was opened, should it have been replaced meanwhile
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise Refused(f"cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise Refused(f"found more than {limit // 2**20} MiB (not read)")
    return data


def _check_kind(status: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = _KINDS.get(stat.S_IFMT(status.st_mode), "a special file")
        raise Refused(f"found {kind}, not a regular file (not opened)")
    if status.st_size > limit:
        raise Refused(f"found more than {limit // 2**20} MiB (not read)")


def _why(exc: Exception) -> str:
    """Why a file of a run folder was not read, for a warning."""
    if isinstance(exc, Refused):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "cannot read it (found JSON nested too deeply)"
    return f"cannot read it ({first_line(exc, with_type=False)})"


def read_run_info(run_dir: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A run's ``run.json``: {} when it has none or it cannot be read (with one ``warn`` line saying
    why, when given: ``dlscaffold runs`` lists such a run with what is known). It is read as
    :func:`read_run_file` reads (inside the run folder, a regular file, at most
    :data:`MAX_RUN_INFO_BYTES`)."""
    path = run_dir / RUN_INFO_FILE
    try:
        data = read_run_file(run_dir, RUN_INFO_FILE, MAX_RUN_INFO_BYTES)
        info = None if data is None else json.loads(data.decode("utf-8"))
    except (Refused, UnicodeDecodeError, ValueError, RecursionError) as exc:
        if warn:
            warn(f"{path}: {_why(exc)}; its status, best and times are shown as unknown")
        return {}
    if info is None:
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
    """Whether ``path`` is a run folder (it holds the run's config and split); False where it
    cannot be looked into."""
    try:
        return (path / CONFIG_FILE).is_file() and (path / SPLIT_FILE).is_file()
    except (OSError, ValueError):  # e.g. a folder this user may not enter
        return False


def read_metrics(run_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, read as :func:`read_run_file` reads (inside the run
    folder, a regular file, at most :data:`MAX_METRICS_BYTES`). Strict without ``warn`` (a broken
    line raises ``ValueError``, a file that is not read a one-line :class:`UserError`); with it,
    tolerant: the readable rows, and one warning for the file."""
    path = run_dir / METRICS_FILE
    try:
        data = read_run_file(run_dir, METRICS_FILE, MAX_METRICS_BYTES)
    except Refused as exc:
        if warn is None:
            raise UserError(f"{path}: {exc}; expected the run's own metrics file") from None
        warn(f"{path}: {exc}; its epochs and val metrics are shown as unknown")
        return []
    lines = [] if data is None else data.splitlines()
    if warn is None:
        return [json.loads(line.decode("utf-8")) for line in lines if line.strip()]
    rows, bad = [], []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
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

        try:  # never blocks (O_NONBLOCK: a FIFO), never follows a link: only the run's own lock file counts
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, ValueError):  # no lock file: no run ever held it
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``*.tmp`` files that a killed run left behind (never a finished file)."""
    for path in run_dir.rglob("*.tmp"):
        path.unlink(missing_ok=True)
