"""What a run was made from: the command, the versions, the machine, the project's git state and code.

:func:`collect` returns a JSON-safe dict for ``run.json``; :func:`write_git_diff` saves the
project's uncommitted changes as ``git.diff`` in the run folder, so that a run made from a dirty
work tree can still be reproduced; :func:`code_hashes` gives the SHA-256 of the project's code
files, which ``run.json`` records so that a later command imports that folder only while it holds
the same code. A resumed run keeps what its first session recorded and appends each later
session's record to ``run.json``'s ``sessions`` (:func:`session_record`); :func:`latest_code`
reads the project folder and hashes of the latest. Nothing here raises because git is missing, the
project is not a repository, or git hangs: those give null values. torch is imported only inside
:func:`collect`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dlscaffold._version import __version__
from dlscaffold.project.code import MODULE_NAMES
from dlscaffold.records.rundir import DIFF_FILE

GIT_TIMEOUT_S = 10
ANSWERS_FILE = ".copier-answers.yml"
SESSIONS = "sessions"  # run.json's key: the records of a run's sessions after its first


def _git_bytes(project_dir: Path, *args: str) -> bytes | None:
    """The stdout of ``git ARGS`` run in ``project_dir``, or None when git fails in any way."""
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=project_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):  # git missing, folder gone, timeout
        return None
    if result.returncode != 0:
        return None
    return result.stdout


def _git(project_dir: Path, *args: str) -> str | None:
    out = _git_bytes(project_dir, *args)
    return None if out is None else out.decode("utf-8", errors="replace")


def _in_work_tree(project_dir: Path) -> bool:
    return (_git(project_dir, "rev-parse", "--is-inside-work-tree") or "").strip() == "true"


def code_files(project_dir: Path) -> list[str]:
    """The project's code files the runtime imports (``models.py``, ``dataloader.py``,
    ``training_utils.py``) that exist, by name."""
    return [f"{name}.py" for name in MODULE_NAMES if (Path(project_dir) / f"{name}.py").is_file()]


def code_hashes(project_dir: Path) -> dict[str, str]:
    """``{"models.py": "<SHA-256 hex>", ...}`` for each of :func:`code_files` that can be read."""
    hashes = {}
    for name in code_files(project_dir):
        with contextlib.suppress(OSError):  # unreadable: counts as absent
            hashes[name] = hashlib.sha256((Path(project_dir) / name).read_bytes()).hexdigest()
    return hashes


def _under_version_control(project_dir: Path) -> bool:
    """Inside a git work tree that does not ignore the project's code files. An ignored file is in no
    commit and no diff, so such a repository (a checkout around a project it ignores) says nothing
    about the code that ran."""
    if not _in_work_tree(project_dir):
        return False
    files = code_files(project_dir)
    if not files:
        return True
    ignored = _git(project_dir, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--", *files)
    return ignored == ""


def _untracked(project_dir: Path, exclude: Path | None = None) -> list[str] | None:
    """Untracked, not ignored files under ``project_dir`` (relative to it), minus those under ``exclude``."""
    out = _git(project_dir, "ls-files", "-z", "--others", "--exclude-standard", "--", ".")
    if out is None:
        return None
    files = [name for name in out.split("\0") if name]
    if exclude is not None:
        try:
            prefix = exclude.resolve().relative_to(project_dir.resolve()).as_posix().rstrip("/") + "/"
        except ValueError:  # the run folder is outside the project
            return files
        files = [name for name in files if not name.startswith(prefix)]
    return files


def git_state(project_dir: Path) -> dict[str, Any] | None:
    """``{"commit": hash or None, "dirty": bool}`` for the project folder, or None when it is not under
    version control: outside a git work tree, or inside one that ignores its code files.

    ``dirty`` means tracked changes or untracked (not ignored) files under the project folder;
    ``commit`` is None in a repository without commits.
    """
    if not _under_version_control(project_dir):
        return None
    commit = (_git(project_dir, "rev-parse", "--verify", "-q", "HEAD") or "").strip() or None
    status = _git(project_dir, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    if status is None:
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def template_answers(project_dir: Path) -> dict[str, Any] | None:
    """``{"src_path", "commit"}`` of the template the project was generated from, if it records one.

    Read from the project's ``.copier-answers.yml``; a missing or unreadable file gives None.
    """
    path = project_dir / ANSWERS_FILE
    try:
        answers = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(answers, dict):
        return None
    return {"src_path": _plain(answers.get("_src_path")), "commit": _plain(answers.get("_commit"))}


def _plain(value: Any) -> Any:
    """A JSON-safe form of a scalar read from YAML (dates and other objects become strings)."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _device_name(device: str | None) -> str:
    import torch

    if device and device.startswith("cuda"):
        try:
            return str(torch.cuda.get_device_name(torch.device(device)))
        except Exception:  # a name is nice to have, never worth failing a run
            pass
    return platform.processor() or "cpu"


def collect(project_dir: Path, argv: list[str], device: str | None) -> dict[str, Any]:
    """Describe what a run is made from, as a JSON-safe dict for ``run.json``.

    Args:
        project_dir: the project folder (models.py, dataloader.py, ...).
        argv: the command line, e.g. ``sys.argv``.
        device: the device the run computes on (``"cuda:0"``, ``"cuda"``, ``"cpu"``); None means the CPU.

    Returns:
        ``command``, ``python``, ``torch``, ``dlscaffold``, ``cuda`` (torch's CUDA version or None),
        ``device_name``, ``host``, ``git`` (see :func:`git_state`) and ``template`` (see
        :func:`template_answers`).
    """
    import torch

    return {
        "command": [str(arg) for arg in argv],
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "dlscaffold": __version__,
        "cuda": torch.version.cuda,
        "device_name": _device_name(device),
        "host": socket.gethostname(),
        "git": git_state(project_dir),
        "template": template_answers(project_dir),
    }


def write_git_diff(project_dir: Path, run_dir: Path, name: str = DIFF_FILE, when: str = "when the run started") -> bool:
    """Save the project's uncommitted changes as ``name`` (``git.diff``) in the run folder.

    The file holds a comment header saying whose changes they are (``when``) and listing the
    untracked files (their contents are not saved), then ``git diff HEAD -- .`` run in the project
    folder, so ``git apply`` of the file on the recorded commit restores the tracked changes. Files
    under ``run_dir`` are not counted. Written to ``<name>.tmp`` first and renamed into place.

    Returns:
        Whether a file was written: False for a clean work tree, outside version control (see
        :func:`git_state`), or when git fails.
    """
    if not _under_version_control(project_dir):
        return False
    has_head = _git(project_dir, "rev-parse", "--verify", "-q", "HEAD") is not None
    diff = _git_bytes(project_dir, "diff", "--no-color", "--no-ext-diff", "HEAD", "--", ".") if has_head else b""
    untracked = _untracked(project_dir, exclude=run_dir)
    if diff is None or untracked is None or (not diff.strip() and not untracked):
        return False
    header = [f"# dlscaffold {__version__}: uncommitted changes of the project {when}"]
    if untracked:
        header.append("# untracked files (not saved here):")
        header.extend("#   " + file.replace("\n", "\\n") for file in untracked)
    tmp = run_dir / (name + ".tmp")
    try:
        with open(tmp, "wb") as fh:  # bytes: the diff is kept exactly as git wrote it
            fh.write(("\n".join(header) + "\n").encode("utf-8", errors="replace") + diff)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, run_dir / name)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True


def session_diff_name(number: int) -> str:
    """The file of session ``number``'s uncommitted changes: ``git.session2.diff`` for the first resume."""
    stem, dot, suffix = DIFF_FILE.rpartition(".")
    return f"{stem}.session{number}{dot}{suffix}"


def sessions(info: dict[str, Any]) -> list[Any]:
    """The records of a run's sessions after its first (``run.json``'s ``sessions``), oldest first,
    as written (a record is a dict)."""
    value = info.get(SESSIONS)
    return list(value) if isinstance(value, list) else []


def latest_code(info: dict[str, Any]) -> tuple[Any, Any]:
    """``(project_dir, project_files)`` a run's ``run.json`` records for its latest session: the last
    entry of ``sessions`` that records them, else the first session's (the top-level keys). Read as
    written: the caller checks them."""
    for entry in reversed(sessions(info)):
        if isinstance(entry, dict) and "project_files" in entry:
            return entry.get("project_dir"), entry.get("project_files")
    return info.get("project_dir"), info.get("project_files")


def session_record(
    project_dir: Path, run_dir: Path, info: dict[str, Any], argv: list[str], device: str | None, **fields: Any
) -> dict[str, Any]:
    """Record a later session of a run (a resume) in ``run.json``'s ``sessions`` form, and save its
    project's uncommitted changes as ``git.session<N>.diff`` (:func:`session_diff_name`).

    Args:
        project_dir: the project folder whose code the session imports.
        run_dir: the run folder.
        info: the run's ``run.json`` as it is before this session (its ``sessions`` number this one).
        argv, device: as for :func:`collect`.
        fields: what the trainer knows: ``first_epoch``, ``first_step``, ``world_size``, ``started``.

    Returns:
        ``{"session": N, **fields, "project_dir", "project_files", "provenance", "git_diff"}``: N
        counts the first session as 1; ``provenance`` is :func:`collect`'s (the commit and dirty
        flag under ``git``); ``git_diff`` the file's name, or None when nothing was saved.
    """
    number = len(sessions(info)) + 2
    name = session_diff_name(number)
    epoch = fields.get("first_epoch")
    wrote = write_git_diff(project_dir, run_dir, name, f"when session {number} of the run started (epoch {epoch})")
    return {
        "session": number,
        **fields,
        "project_dir": str(project_dir),
        "project_files": code_hashes(project_dir),
        "provenance": collect(project_dir, argv, device),
        "git_diff": name if wrote else None,
    }
