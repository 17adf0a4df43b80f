"""Generate a project from the template (:func:`new_project`) and update it later (:func:`update_project`).

Plain functions around copier (imported inside them, so ``dlscaffold --help`` stays fast); the
``new`` and ``update`` commands in :mod:`dlscaffold.cli` call them and print the results with
:func:`report_new` and :func:`report_update`. They never
prompt: questions not answered with ``key=value`` data take their defaults. The template is the
dlscaffold repository itself (``copier.yml`` at its root renders ``template/``); by default the
checkout the running dlscaffold is installed from, at ``HEAD``.

A template version is a git commit of the template repository. Copier records it as ``_commit``
in the project's ``.copier-answers.yml`` the way ``git describe --tags --always`` names it: a tag
where the commit has one, else a commit hash (a repository without tags works). On top of copier:

- ``_commit`` always names a commit that exists in the template repository. Copier renders the
  uncommitted changes of a local template too and would record a commit made up for them; the
  project records the last commit (``HEAD``) instead, with a note: those changes belong to no
  template version, so the next update treats them as the user's own edits.
- A relative ``_src_path`` is relative to the project folder (copier alone reads it against the
  current directory), and an update keeps it as written, so a template checkout and the projects
  inside or beside it can move together.
- A new project that no git repository around it would track (there is none, or it ignores the
  project, as a dlscaffold checkout ignores the ``my_digits`` its README makes inside it) is made a
  repository of its own, with the generated files as its first commit: updates merge through git.
- An update checks first what copier would report late or not at all, or get wrong (a project
  that is neither the top of its own repository nor tracked by the one around it: copier would
  see its files as deleted and delete them; uncommitted changes in the project folder; no answers
  file; a template source that is gone). Afterwards it lists the files it changed and the config
  values that changed (with conflict blocks in ``config.yml`` too, and the keys in conflict),
  restores any file it deleted that the template did not remove or that the user edited, and
  finds the conflict markers copier left (copier itself exits normally then): the CLI exits with
  :data:`CONFLICT_EXIT_CODE`.
- Files that are the user's since generation (``_skip_if_exists`` in ``copier.yml``: the example's
  ``models.py``, ``dataloader.py``, ``training_utils.py``) never take template changes; every other
  file stays the template's and is merged. Where the template's version of such a file changed
  between the two versions, the update lists it as not applied, with the git command that shows
  the template's change (:func:`not_applied`), so the user learns of it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlscaffold.errors import UserError, did_you_mean
from dlscaffold.records.rundir import CONFIG_FILE

ANSWERS_FILE = ".copier-answers.yml"
# `dlscaffold update` left conflicts to resolve; 2 means it could not run at all.
CONFLICT_EXIT_CODE = 3
_URL = re.compile(r"^(gh:|gl:|git@|git\+|[a-z][a-z0-9+.-]*://)")
_MARKER = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)
_BLOCK_LINE = re.compile(r"^(<{7}|\|{7}|={7}|>{7})( |$)")  # the lines of a conflict block's markers
_FIRST_COMMIT = "Initial project"
_ABSENT = "(absent)"


@dataclass
class NewResult:
    """What :func:`new_project` made."""

    target: Path  # the project folder
    source: str  # the template: an absolute path or a URL
    src_path: str  # the template source as recorded (``_src_path``): relative to the project, absolute, a URL
    commit: str | None  # the template version recorded (``_commit``); None for a template outside git
    notes: list[str] = field(default_factory=list)  # what the user should know, one line each
    repository: str | None = None  # why the project was made a git repository of its own, if it was


@dataclass
class UpdateResult:
    """What :func:`update_project` did."""

    project: Path
    before: str | None  # template version before the update
    after: str | None  # template version recorded now
    changed: list[tuple[str, str]] = field(default_factory=list)  # (modified/added/deleted/conflict, path)
    config_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (dotted key, old, new)
    config_conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (dotted key, yours, template's)
    conflicts: list[str] = field(default_factory=list)  # files with conflict markers, .rej files
    kept: list[str] = field(default_factory=list)  # edited files the template no longer has, kept
    notes: list[str] = field(default_factory=list)
    # template changes not applied: (path, why and where to see the change) for files that are the user's
    not_applied: list[tuple[str, str]] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.before == self.after and not self.changed and not self.kept


# ------------------------------------------------------------------------------------ helpers


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _is_git_root(path: Path) -> bool:
    top = _git(path, "rev-parse", "--show-toplevel")
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == path.resolve()


def _commit_exists(repo: Path, ref: str) -> bool:
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode == 0


def _describe(repo: Path, ref: str) -> str | None:
    """``ref`` named as copier names versions: its tag, ``tag-N-gHASH``, or a short hash."""
    done = _git(repo, "describe", "--tags", "--always", ref)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _is_dirty(path: Path, *paths: str) -> bool:
    """Whether the given paths (default: the folder ``path``) have uncommitted changes."""
    return bool(_git(path, "status", "--porcelain", "--", *(paths or (".",))).stdout.strip())


@contextmanager
def _copier_quietly() -> Iterator[None]:
    """Copier warns that a local template has uncommitted changes; :func:`_template_notes` says
    so in one line, with what it means for the recorded version."""
    from copier.errors import DirtyLocalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DirtyLocalWarning)
        yield


def default_template() -> Path:
    """The dlscaffold checkout this package runs from: the folder holding ``copier.yml``."""
    root = Path(__file__).resolve().parents[2]  # dlscaffold/tools/scaffold.py -> the checkout
    if not (root / "copier.yml").is_file():
        raise UserError(
            f"no template next to the installed dlscaffold ({root} has no copier.yml); "
            "pass --template <path or URL of a dlscaffold checkout>"
        )
    return root


def _template_source(template: str | None) -> str:
    """An absolute path (what copier is given) or a URL."""
    if template is None:
        return str(default_template())
    if _URL.match(template):
        return template
    path = Path(template).expanduser().resolve()
    if not (path / "copier.yml").is_file() and not (path / "copier.yaml").is_file():
        raise UserError(
            f"--template: found '{template}', which has no copier.yml; "
            "expected the path or URL of a dlscaffold checkout"
        )
    return str(path)


def _recorded_source(template: str | None, source: str, target: Path) -> str:
    """The ``_src_path`` to record: relative to the project folder where the user gave a relative
    ``--template``, or where the default template (the installed checkout) holds the project;
    otherwise the absolute path (or the URL)."""
    if _URL.match(source):
        return source
    given_relative = template is not None and not Path(template).expanduser().is_absolute()
    inside_default = template is None and target.is_relative_to(source)
    return os.path.relpath(source, target) if given_relative or inside_default else source


def _resolve_source(src: str, project: Path) -> str:
    """A recorded ``_src_path`` as a URL or an absolute path; a relative one is relative to the project."""
    if _URL.match(src):
        return src
    path = Path(src).expanduser()
    return str(path if path.is_absolute() else (project / path).resolve())


def _template_config(source: str) -> dict[str, Any] | None:
    """A local template's ``copier.yml`` (None for a URL: known only after cloning)."""
    if _URL.match(source):
        return None
    path = Path(source) / "copier.yml"
    path = path if path.is_file() else path.with_suffix(".yaml")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the template's questions ({exc})") from None
    return config if isinstance(config, dict) else {}


def _questions(source: str) -> dict[str, Any] | None:
    config = _template_config(source)
    return None if config is None else {k: v for k, v in config.items() if not str(k).startswith("_")}


def _parse_data(items: Sequence[str], questions: dict[str, Any] | None) -> dict[str, str]:
    """``key=value`` strings -> answers (copier casts them to each question's type)."""
    data, problems = {}, []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--data '{item}': expected key=value, e.g. --data project_name='Digit study'")
        elif questions is not None and key not in questions:
            problems.append(
                f"--data {key}: not a question of this template; "
                f"{did_you_mean(key, questions)}expected one of: {', '.join(questions)}"
            )
        else:
            data[key] = value
    if problems:
        raise UserError(*problems)
    return data


def _copier_errors() -> tuple[type[Exception], ...]:
    """What copier raises for problems a user can fix: its own errors, a question's validator
    (ValueError), git failing (plumbum's ProcessExecutionError is an OSError)."""
    from copier.errors import CopierError

    return CopierError, ValueError, OSError, subprocess.CalledProcessError


def _copier_error(exc: Exception, action: str) -> UserError:
    """One line from a copier or git failure."""
    text = getattr(exc, "stderr", None) or str(exc) or type(exc).__name__
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return UserError(f"{action} failed: {lines[-1] if lines else type(exc).__name__}")


def _read_answers(project: Path) -> dict[str, Any]:
    path = project / ANSWERS_FILE
    if not path.is_file():
        raise UserError(
            f"{project}: no {ANSWERS_FILE}, so nothing records which template this project came from; "
            "`dlscaffold update` only updates projects made by `dlscaffold new` (or copier)"
        )
    try:
        answers = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{path}: invalid YAML; restore it from git (git checkout -- {ANSWERS_FILE})") from None
    return answers if isinstance(answers, dict) else {}


def _set_answers(project: Path, values: dict[str, str]) -> None:
    """Rewrite the given keys' lines of the answers file, leaving the rest as copier wrote it."""
    path = project / ANSWERS_FILE
    text = path.read_text()
    for key, value in values.items():
        line = yaml.safe_dump({key: value}, width=1_000_000).strip()
        text, found = re.subn(rf"^{re.escape(key)}:.*$", lambda _, line=line: line, text, count=1, flags=re.MULTILINE)
        if not found:
            text = text.rstrip("\n") + "\n" + line + "\n"
    path.write_text(text)


def _existing_commit(source: str, written: Any, ref: str) -> str | None:
    """The version to record: what copier wrote where the template has that commit, else ``ref``'s
    commit (copier made one up for uncommitted template changes)."""
    if written is None or _URL.match(source):
        return None if written is None else str(written)
    if _commit_exists(Path(source), str(written)):
        return str(written)
    return _describe(Path(source), ref) or str(written)


def _template_paths(repo: Path) -> list[str]:
    """Git pathspecs of the files a template renders from: ``copier.yml`` and its ``_subdirectory``
    (all of the repository where it has none). Changes elsewhere, such as dlscaffold's own code in
    the same repository, change no project."""
    subdirectory = str((_template_config(str(repo)) or {}).get("_subdirectory") or "").strip("/")
    return [":(top)copier.yml", ":(top)copier.yaml", f":(top){subdirectory}"] if subdirectory else [":(top)"]


def _template_notes(source: str, vcs_ref: str) -> list[str]:
    """What the user should know about a local template before using it, one line each."""
    if _URL.match(source):
        return []
    path = Path(source)
    if not _is_git_root(path):
        return [f"{source} is not a git repository: this project cannot be updated from it"]
    if vcs_ref == "HEAD" and _is_dirty(path, *_template_paths(path)):
        return [
            f"the template at {source} has uncommitted changes: they are copied, but they belong to no "
            f"template version, so the project records the last commit ({_describe(path, 'HEAD')}) "
            "and later updates treat them as your own edits"
        ]
    return []


# ---------------------------------------------------------------------------------------- new


def _needs_own_repository(target: Path) -> str | None:
    """Why the new project needs a git repository of its own; None where the work tree around it
    would track it (that repository's owner commits it)."""
    if _git(target, "rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        return "no git repository holds it"
    if _git(target, "check-ignore", "-q", "--no-index", "--", ".").returncode == 0:
        top = _git(target, "rev-parse", "--show-toplevel").stdout.strip()
        return f"the git repository around it, {top}, ignores it"
    return None


def _identity_fallback(target: Path) -> list[str]:
    """``-c`` options naming ``dlscaffold`` as the committer where git has no identity configured
    (the ``GIT_AUTHOR_*`` / ``GIT_COMMITTER_*`` variables still win over them)."""
    options = []
    for key, value in (("user.name", "dlscaffold"), ("user.email", "dlscaffold@localhost")):
        if not _git(target, "config", "--get", key).stdout.strip():
            options += ["-c", f"{key}={value}"]
    return options


def _init_repository(target: Path) -> tuple[str | None, str | None]:
    """Make the new project a git repository of its own, with the generated files as its first
    commit, where no repository around it would track it.

    Returns ``(done, note)``: the line saying why it was made (None where it was left to the
    repository around it), or a note saying how to make one where git failed."""
    fix = f"`cd {shlex.quote(str(target))} && git init && git add -A && git commit -m '{_FIRST_COMMIT}'`"
    try:
        why = _needs_own_repository(target)
        if why is None:
            return None, None
        commit = [*_identity_fallback(target), "commit", "-q", "-m", _FIRST_COMMIT]
        for args in (["init", "-q"], ["add", "-A"], commit):
            done = _git(target, *args)
            if done.returncode != 0:
                raise OSError((done.stderr.strip().splitlines() or [f"git {args[0]} failed"])[-1])
    except OSError as exc:  # git missing, or failing
        note = f"{target} is not a git repository ({exc}); `dlscaffold update` needs one: run {fix}"
        return None, note
    return f"Made {target} a git repository of its own, the generated files its first commit, since {why}", None


def new_project(dest: Path, data: Sequence[str] = (), template: str | None = None, vcs_ref: str = "HEAD") -> NewResult:
    """Render the template into the new folder ``dest`` with the ``key=value`` answers in ``data``.

    ``template`` is a path or git URL of a dlscaffold checkout (default: the installed one), taken at
    ``vcs_ref``. Raises :class:`UserError` for a taken folder, a bad answer or a copier failure.
    """
    import copier

    target = dest.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{dest}: already exists and is not empty; choose a new folder")
    source = _template_source(template)
    answers = _parse_data(data, _questions(source))
    notes = _template_notes(source, vcs_ref)  # before copying: a project made inside the checkout dirties it
    try:
        with _copier_quietly():
            copier.run_copy(
                source,
                target,
                data=answers,
                vcs_ref=vcs_ref,
                defaults=True,
                user_defaults={"project_name": target.name},
                unsafe=False,
                quiet=True,
            )
    except _copier_errors() as exc:  # copier, git or a question's validator; copier removed the folder
        raise _copier_error(exc, "dlscaffold new") from exc
    if not (target / ANSWERS_FILE).is_file():
        return NewResult(target, source, source, None, notes)
    recorded = _read_answers(target)
    fixes = {"_src_path": _recorded_source(template, source, target)}
    commit = _existing_commit(source, recorded.get("_commit"), vcs_ref)
    if commit is not None:
        fixes["_commit"] = commit
    _set_answers(target, fixes)
    repository, note = _init_repository(target)
    return NewResult(target, source, fixes["_src_path"], commit, notes + ([note] if note else []), repository)


# ------------------------------------------------------------------------------------- update


def _untracked_reason(project: Path) -> str | None:
    """Why git does not hold the project: None where it is the top of its own repository, or the
    repository around it tracks it (its answers file and config committed, the folder not ignored)."""
    if _git(project, "rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        return "not a git repository"
    if _is_git_root(project):
        return None
    top = _git(project, "rev-parse", "--show-toplevel").stdout.strip()
    if _git(project, "check-ignore", "-q", "--no-index", "--", ".").returncode == 0:
        return f"not a git repository of its own, and the one around it, {top}, ignores it"
    if _git(project, "ls-files", "--error-unmatch", "--", ANSWERS_FILE, CONFIG_FILE).returncode != 0:
        return f"not a git repository of its own, and the one around it, {top}, does not track its files"
    return None


def _check_project(project: Path) -> None:
    """Refuse a project the update cannot merge safely. Copier reads the project's files from the git
    index: in a folder git does not hold, it would take every file for deleted and delete it."""
    if not project.is_dir():
        raise UserError(f"{project}: no such folder; pass the project folder, e.g. dlscaffold update my_project")
    reason = _untracked_reason(project)
    if reason is not None:
        raise UserError(
            f"{project}: {reason}; updates merge through git: run "
            f"`cd {shlex.quote(str(project))} && git init && git add -A && git commit -m '{_FIRST_COMMIT}'` first"
        )
    if _is_dirty(project):  # the project folder's own files: a repository around it may hold others
        raise UserError(
            f"{project}: uncommitted changes; commit or stash your changes first, "
            "so that the update can be reviewed with `git diff`"
        )


def _check_template_source(source: str, written: str, commit: str | None) -> None:
    """A local template source must be a git repository root holding the recorded commit."""
    if _URL.match(source):
        return  # a remote: copier reports what is wrong with it
    path = Path(source)
    where = f"the template source in {ANSWERS_FILE}, '{written}'"
    if written != source:
        where += f" ({source}: a relative _src_path is relative to the project folder)"
    if not path.is_dir():
        raise UserError(
            f"{where}, does not exist; set _src_path there to the path (absolute, or relative to the "
            "project folder) or URL of a dlscaffold checkout"
        )
    if not _is_git_root(path):
        raise UserError(
            f"{where}, is not a git repository; updates need the template's version history: "
            "point _src_path at a git checkout of dlscaffold"
        )
    if commit and not _commit_exists(path, commit):
        raise UserError(
            f"{ANSWERS_FILE}: _commit '{commit}' is not a commit of '{written}'; "
            "set _commit to the template commit or tag the project was made from"
        )


def _run_copier_update(project: Path, answers: dict[str, str], vcs_ref: str) -> None:
    """copier's 3-way merge, run from the project folder: copier reads a relative ``_src_path``
    against the current directory, and ours are relative to the project folder."""
    import copier

    cwd = os.getcwd()
    try:
        os.chdir(project)
        with _copier_quietly():
            copier.run_update(
                project,
                data=answers,
                vcs_ref=vcs_ref,
                defaults=True,
                overwrite=True,
                conflict="inline",
                unsafe=False,
                quiet=True,
            )
    except _copier_errors() as exc:
        raise _copier_error(exc, "dlscaffold update") from exc
    finally:
        os.chdir(cwd)


def _same_template(repo: Path, old: str, new: str) -> bool:
    """Whether the template's files are equal at both commits."""
    return _git(repo, "diff", "--quiet", old, new, "--", *_template_paths(repo)).returncode == 0


def _record_version(project: Path, written_src: str, source: str, before: str | None, vcs_ref: str) -> str | None:
    """Fix what copier wrote into the answers file: the ``_src_path`` as it was, a ``_commit`` that
    exists, and the old ``_commit`` where the template's files did not change (a later commit that
    changed only other files of the template repository is no new version)."""
    after = _existing_commit(source, _read_answers(project).get("_commit"), vcs_ref)
    if before and after and not _URL.match(source) and _same_template(Path(source), before, after):
        after = before
    fixes = {"_src_path": written_src}
    if after is not None:
        fixes["_commit"] = after
    _set_answers(project, fixes)
    return after


def _git_bytes(project: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, stdin=subprocess.DEVNULL).stdout


def _render(source: str, vcs_ref: str, answers: dict[str, Any], dest: Path) -> bool:
    """Render the template at ``vcs_ref`` with the answers' questions into ``dest``; False where it does not."""
    import copier

    data = {k: v for k, v in answers.items() if not str(k).startswith("_")}
    try:
        with _copier_quietly():
            copier.run_copy(source, dest, data=data, vcs_ref=vcs_ref, defaults=True, unsafe=False, quiet=True)
    except _copier_errors():
        return False
    return True


def _restore_deleted_files(
    project: Path, answers: dict[str, Any], source: str, before: str | None, vcs_ref: str
) -> tuple[list[str], list[str]]:
    """Restore from ``HEAD`` each file the update deleted, unless the template removed it (the old
    version has it, the new one not) and the user never edited it. An update never leaves a file
    deleted that the template still has, that the user edited, or that cannot be checked.

    Returns ``(kept, restored)``: edited files the new template version no longer has (kept, for the
    user to keep or delete), and files the new version still has (copier should not have deleted
    them). Edited means: the committed content differs from the old template version rendered afresh
    with the project's answers (the versions are rendered only when the update deleted something)."""
    out = _git(project, "diff", "--name-only", "-z", "--diff-filter=D", "--relative", "HEAD").stdout
    deleted = [name for name in out.split("\0") if name]
    if not deleted:
        return [], []
    kept, restored = [], []
    with tempfile.TemporaryDirectory(prefix="dlscaffold-versions-") as tmp:
        old, new = Path(tmp) / "old" / project.name, Path(tmp) / "new" / project.name
        checked = (
            before is not None
            and _render(source, before, answers, old)
            and _render(source, vcs_ref, _read_answers(project), new)
        )  # where a version does not render, every deleted file is kept
        for name in deleted:
            if checked and (new / name).exists():
                restored.append(name)
            elif not checked or not (old / name).is_file() or (old / name).read_bytes() != _head_bytes(project, name):
                kept.append(name)
            else:
                continue  # the template removed it and the user never edited it: it stays deleted
            _git(project, "checkout", "HEAD", "--", name)
    return kept, restored


def _head_bytes(project: Path, name: str) -> bytes:
    return _git_bytes(project, "show", f"HEAD:./{name}")


def conflicted_files(project: Path) -> list[str]:
    """Files the update changed that hold conflict markers, and ``.rej`` files it left."""
    changed = _git(project, "diff", "--name-only", "-z", "--relative", "HEAD").stdout.split("\0")
    new = _git(project, "ls-files", "--others", "--exclude-standard", "-z").stdout.split("\0")
    conflicted = []
    for name in sorted({n for n in changed + new if n}):
        path = project / name
        if name.endswith(".rej") or (path.is_file() and _MARKER.search(path.read_bytes())):
            conflicted.append(name)
    return conflicted


def changed_files(project: Path) -> list[tuple[str, str]]:
    """``(what, path)`` for each file of the project folder that differs from ``HEAD``; paths relative
    to the project, ``what`` one of modified, added, deleted, renamed, conflict."""
    prefix = _git(project, "rev-parse", "--show-prefix").stdout.strip()
    entries = _git(project, "status", "--porcelain", "-z", "--untracked-files=all", "--", ".").stdout.split("\0")
    words = {"M": "modified", "T": "modified", "A": "added", "?": "added", "D": "deleted", "R": "renamed", "C": "added"}
    changed, skip_next = [], False
    for entry in entries:
        if skip_next or not entry:
            skip_next = False
            continue
        code, path = entry[:2], entry[3:]
        skip_next = code[0] in "RC"  # -z puts the original path of a rename next
        what = "conflict" if "U" in code or code in ("AA", "DD") else words.get(code.strip()[:1], code.strip())
        changed.append((what, path[len(prefix) :] if path.startswith(prefix) else path))
    return changed


def _parse_config(text: str) -> dict[str, Any] | None:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:  # not YAML, or conflict markers in it
        return None
    return config if isinstance(config, dict) else None


def _read_config(project: Path) -> dict[str, Any] | None:
    try:
        return _parse_config((project / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError):
        return None


def _resolve_conflicts(text: str, side: int) -> str:
    """``text`` with each ``<<<<<<<`` ... ``>>>>>>>`` block replaced by one side of it: 0 the
    project's (``before updating``), 1 the template's (``after updating``); a ``|||||||`` base
    section is dropped."""
    kept, part = [], None  # part: None outside a block, else 0, 1 or "base"
    for line in text.splitlines(keepends=True):
        marker = _BLOCK_LINE.match(line)
        sign = marker.group(1)[0] if marker else None
        if sign == "<":
            part = 0
        elif sign == ">" and part is not None:
            part = None
        elif sign == "|" and part == 0:
            part = "base"
        elif sign == "=" and part in (0, "base"):
            part = 1
        elif part is None or part == side:
            kept.append(line)
    return "".join(kept)


def _config_report(project: Path, before: dict[str, Any] | None) -> tuple[list, list, list[str]]:
    """``(changes, conflicts, notes)`` for the project's config after the update: the values that
    changed, ``(dotted key, old, new)``, and the values in conflict, ``(dotted key, yours, the
    template's)``. With conflict blocks, the changes are those outside the blocks (the file with
    each block resolved to your side), the conflicts where the two sides differ."""
    try:
        text = (project / CONFIG_FILE).read_text()
    except (OSError, UnicodeDecodeError):
        return [], [], []
    if not _MARKER.search(text.encode()):
        return config_changes(before, _parse_config(text)), [], []
    yours, theirs = (_parse_config(_resolve_conflicts(text, side)) for side in (0, 1))
    if yours is None or theirs is None:
        note = f"{CONFIG_FILE}: its conflict blocks do not resolve to YAML, so the values changed are not listed"
        return [], [], [note]
    return config_changes(before, yours), config_changes(yours, theirs), []


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    if value is None or isinstance(value, (bool, list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("\n...").strip()
    return str(value)


def config_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """``(dotted key, old, new)`` for every config value that differs (:data:`_ABSENT` for a key one
    side lacks); nothing where either side is missing or unreadable."""
    if before is None or after is None:
        return []
    from dlscaffold.config import flatten

    old, new = flatten(before), flatten(after)
    keys = list(old) + [key for key in new if key not in old]
    return [
        (key, _show(old[key]) if key in old else _ABSENT, _show(new[key]) if key in new else _ABSENT)
        for key in keys
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    ]


def update_project(project_dir: Path = Path("."), data: Sequence[str] = (), vcs_ref: str = "HEAD") -> UpdateResult:
    """Bring the template's changes since the project's version (up to ``vcs_ref``) into the project
    with copier's 3-way merge, keeping the user's edits.

    Raises :class:`UserError` where the update cannot run (nothing changed then). Conflicts do not
    raise: they are in the result's ``conflicts`` and ``kept``.
    """
    project = project_dir.expanduser().resolve()
    _check_project(project)
    answers = _read_answers(project)
    written = answers.get("_src_path")
    if not written:
        raise UserError(f"{project / ANSWERS_FILE}: no _src_path; set it to the path or URL of a dlscaffold checkout")
    written = str(written)
    source = _resolve_source(written, project)
    before = None if answers.get("_commit") is None else str(answers["_commit"])
    _check_template_source(source, written, before)
    new_answers = _parse_data(data, _questions(source))
    notes = _template_notes(source, vcs_ref)
    config_before = _read_config(project)
    _run_copier_update(project, new_answers, vcs_ref)
    after = _record_version(project, written, source, before, vcs_ref)
    kept, restored = _restore_deleted_files(project, answers, source, before, vcs_ref)
    notes += [f"{name}: the update deleted it, though the template still has it; restored" for name in restored]
    changes, conflicts, config_notes = _config_report(project, config_before)
    changed = changed_files(project)
    return UpdateResult(
        project=project,
        before=before,
        after=after,
        changed=changed,
        config_changes=changes,
        config_conflicts=conflicts,
        conflicts=conflicted_files(project),
        kept=kept,
        notes=notes + config_notes,
        not_applied=not_applied(project, source, before, after, {name for _, name in changed}),
    )


def _user_files(config: dict[str, Any]) -> Callable[[str], bool]:
    """Whether a project file is the user's since generation: it matches ``_skip_if_exists`` (as
    copier matches it, gitignore patterns)."""
    from pathspec import PathSpec

    patterns = config.get("_skip_if_exists") or []
    patterns = [patterns] if isinstance(patterns, str) else [str(p) for p in patterns]
    try:
        spec = PathSpec.from_lines("gitignore", patterns)
    except (KeyError, LookupError):  # pathspec before 1.0 names the style gitwildmatch
        spec = PathSpec.from_lines("gitwildmatch", patterns)
    return spec.match_file


def not_applied(
    project: Path, source: str, before: str | None, after: str | None, changed: set[str]
) -> list[tuple[str, str]]:
    """``(path, why)`` for each file of the project that is the user's since generation (see
    :func:`_user_files`) whose template version changed from ``before`` to ``after``: the update left
    it as it is. ``why`` says so and gives the ``git`` command showing the template's change.

    Found from the local template's history (a file of ``_subdirectory``, with or without the
    templates suffix, changed between the two commits); nothing for a URL template or an unknown version.
    """
    if before is None or after is None or before == after or _URL.match(source):
        return []
    repo, config = Path(source), _template_config(source) or {}
    is_users = _user_files(config)
    subdirectory = str(config.get("_subdirectory") or "").strip("/")
    suffix = str(config.get("_templates_suffix", ".jinja"))
    diff = _git(repo, "diff", "--name-only", "-z", before, after, "--", *_template_paths(repo))
    found = []
    for template_file in sorted(name for name in diff.stdout.split("\0") if name):
        name = template_file.removeprefix(f"{subdirectory}/") if subdirectory else template_file
        name = name.removesuffix(suffix) if suffix and name.endswith(suffix) else name
        if name in changed or not (project / name).is_file() or not is_users(name):
            continue
        where = shlex.quote(str(repo))
        found.append(
            (
                name,
                f"yours since generation, so updates leave it alone; the template's version changed "
                f"({before} -> {after}): see `git -C {where} diff {before} {after} -- {template_file}`, "
                f"or the template's file: `git -C {where} show {after}:{template_file}`",
            )
        )
    return found


# ------------------------------------------------------------------------------------ reports


def report_new(result: NewResult, echo: Callable[..., None]) -> None:
    """What ``new`` made, then how to start; ``echo`` is called as ``echo(line)`` or ``echo(line, err=True)``."""
    echo(f"Created {result.target} from the template at {result.source} ({result.commit or 'no git version'}).")
    if result.repository:
        echo(result.repository)
    for note in result.notes:
        echo(f"note: {note}", err=True)
    echo(f"Next: cd {result.target} && python train.py")


def report_update(result: UpdateResult, echo: Callable[..., None], print_table: Callable[[Any], None]) -> int:
    """What ``update`` did: the files and config values it changed (the values as a table, printed
    with ``print_table``), then its conflicts on standard error (``echo(line, err=True)``).

    Returns:
        The exit code: 0, or :data:`CONFLICT_EXIT_CODE` where files hold conflicts to resolve.
    """
    from rich.table import Table
    from rich.text import Text

    for note in result.notes:
        echo(f"note: {note}", err=True)
    if result.up_to_date:
        echo(f"{result.project}: up to date with template version {result.after}; nothing to update")
        return 0
    versions = (
        f"at template version {result.after}"
        if result.before == result.after
        else f"from template version {result.before} to {result.after}"
    )
    echo(f"Updated {result.project} {versions}; review with `git diff`, then commit")
    if result.changed:
        echo("Files changed:")
        for what, name in result.changed:
            echo(f"  {what:<9} {name}")
    if result.config_changes:
        table = Table(title=f"{CONFIG_FILE} values changed")
        table.add_column("key.path: old -> new", no_wrap=True)
        for key, old, new in result.config_changes:
            table.add_row(Text(f"{key}: {old} -> {new}"))
        print_table(table)
    if result.not_applied:
        echo("Template changes not applied (files that are yours since generation):")
        for name, why in result.not_applied:
            echo(f"  {name}: {why}")
    if not (result.conflicts or result.kept):
        return 0
    echo(
        f"error: template changes conflict with your edits in {len(result.conflicts) + len(result.kept)} "
        "file(s); resolve the <<<<<<< / >>>>>>> blocks (or .rej files), then git add and commit:",
        err=True,
    )
    in_conflict = "; ".join(
        f"{key}: yours {mine}, the template's {theirs}" for key, mine, theirs in result.config_conflicts
    )
    for name in result.conflicts:
        keys = f" (keys in conflict: {in_conflict})" if name == CONFIG_FILE and in_conflict else ""
        echo(f"  {name}{keys}", err=True)
    for name in result.kept:
        echo(
            f"  {name} (the template no longer has this file; kept because you edited it: keep or delete it)", err=True
        )
    return CONFLICT_EXIT_CODE
