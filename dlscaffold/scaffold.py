"""``dlscaffold new`` and ``dlscaffold update``: generate a project from the template, update it later.

Both wrap copier (imported inside the commands, so ``dlscaffold --help`` stays fast) and never
prompt: questions not answered with ``--data key=value`` take their defaults. The template is the
dlscaffold repository itself (``copier.yml`` at its root renders ``template/``); by default the
checkout the running dlscaffold is installed from, at ``HEAD``.

``update`` checks first what copier would otherwise report late or not at all (a project outside
git, uncommitted changes, no answers file, a template source without version tags), then runs
copier's 3-way merge. Copier exits normally even when it leaves conflict markers, so ``update``
scans the files it changed and exits with :data:`CONFLICT_EXIT_CODE` when any has some.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from dlscaffold.errors import UserError, did_you_mean

ANSWERS_FILE = ".copier-answers.yml"
# `dlscaffold update` left conflict markers to resolve; 2 means it could not run at all.
CONFLICT_EXIT_CODE = 3
_URL = re.compile(r"^(gh:|gl:|git@|git\+|[a-z][a-z0-9+.-]*://)")
_MARKER = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)

DataOption = Annotated[Optional[list[str]], typer.Option(
    "--data", "-d", help="Answer a template question: key=value (repeatable).", show_default=False)]
VcsRefOption = Annotated[str, typer.Option(
    "--vcs-ref", help="Template version: a tag, branch or commit of the template's git repository.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]


# ------------------------------------------------------------------------------------ helpers


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _is_git_root(path: Path) -> bool:
    top = _git(path, "rev-parse", "--show-toplevel")
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == path.resolve()


def default_template() -> Path:
    """The dlscaffold checkout this package runs from: the folder holding ``copier.yml``."""
    import dlscaffold

    root = Path(dlscaffold.__file__).resolve().parents[1]
    if not (root / "copier.yml").is_file():
        raise UserError(f"no template next to the installed dlscaffold ({root} has no copier.yml); "
                        "pass --template <path or URL of a dlscaffold checkout>")
    return root


def _template_source(template: str | None) -> str:
    """An absolute path (recorded as ``_src_path``, so updates work from any folder) or a URL."""
    if template is None:
        return str(default_template())
    if _URL.match(template):
        return template
    path = Path(template).expanduser().resolve()
    if not (path / "copier.yml").is_file() and not (path / "copier.yaml").is_file():
        raise UserError(f"--template: found '{template}', which has no copier.yml; "
                        "expected the path or URL of a dlscaffold checkout")
    return str(path)


def _parse_data(items: list[str], questions: dict[str, Any] | None) -> dict[str, str]:
    """``key=value`` strings -> answers (copier casts them to each question's type)."""
    data, problems = {}, []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--data '{item}': expected key=value, e.g. --data project_name='Digit study'")
        elif questions is not None and key not in questions:
            problems.append(f"--data {key}: not a question of this template; "
                            f"{did_you_mean(key, questions)}expected one of: {', '.join(questions)}")
        else:
            data[key] = value
    if problems:
        raise UserError(*problems)
    return data


def _questions(source: str) -> dict[str, Any] | None:
    """The questions of a local template (None for a URL: known only after cloning)."""
    if _URL.match(source):
        return None
    path = Path(source) / "copier.yml"
    path = path if path.is_file() else path.with_suffix(".yaml")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the template's questions ({exc})") from None
    return {k: v for k, v in config.items() if not k.startswith("_")}


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
        raise UserError(f"{project}: no {ANSWERS_FILE}, so nothing records which template this project came from; "
                        "`dlscaffold update` only updates projects made by `dlscaffold new` (or copier)")
    try:
        answers = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{path}: invalid YAML; restore it from git (git checkout -- {ANSWERS_FILE})") from None
    return answers if isinstance(answers, dict) else {}


def _check_template_source(src: str, commit: str | None) -> None:
    """A local template source must be a git repository root with version tags."""
    if _URL.match(src):
        return  # a remote: copier reports what is wrong with it
    path = Path(src).expanduser()
    where = f"the template source in {ANSWERS_FILE}"
    if not path.is_dir():
        raise UserError(f"{where}, '{src}', does not exist; set _src_path there to the path or URL of a dlscaffold checkout")
    if not _is_git_root(path):
        raise UserError(f"{where}, '{src}', is not a git repository; updates need the template's version history: "
                        "point _src_path at a git checkout of dlscaffold")
    if not _git(path, "tag", "--list").stdout.strip():
        raise UserError(f"{where}, '{src}', has no version tags; updates compare tagged template versions: "
                        "tag a commit there (git tag v0.1.0) or point _src_path at a release checkout")
    if commit and _git(path, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").returncode != 0:
        raise UserError(f"{ANSWERS_FILE}: _commit '{commit}' is not in '{src}' (was the project made from uncommitted "
                        "template changes?); set _commit to the template tag the project was made from")


def _check_project(project: Path) -> None:
    if not project.is_dir():
        raise UserError(f"{project}: no such folder; pass the project folder, e.g. dlscaffold update my_project")
    if _git(project, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise UserError(f"{project}: not a git repository; updates merge through git: "
                        "run `git init && git add -A && git commit -m 'Initial project'` first")
    if _git(project, "status", "--porcelain").stdout.strip():
        raise UserError(f"{project}: uncommitted changes; commit or stash your changes first, "
                        "so that the update can be reviewed with `git diff`")


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


# ----------------------------------------------------------------------------------- commands


def new(
    dest: Annotated[Path, typer.Argument(help="Folder to create; its name is the default project name.", show_default=False)],
    data: DataOption = None,
    defaults: Annotated[bool, typer.Option(
        "--defaults", help="Take the default of every question not answered with --data. "
                           "dlscaffold new never prompts, so this is always the case; accepted as in copier.")] = False,
    template: Annotated[Optional[str], typer.Option(
        "--template", help="Template source: path or git URL of a dlscaffold checkout "
                           "(default: the checkout this dlscaffold is installed from).", show_default=False)] = None,
    vcs_ref: VcsRefOption = "HEAD",
    debug: DebugOption = False,
) -> None:
    """Generate a new project from the dlscaffold template (offline, without questions)."""
    from dlscaffold.cli import _run

    def action() -> None:
        import copier
        from copier.errors import DirtyLocalWarning

        target = dest.expanduser().resolve()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{dest}: already exists and is not empty; choose a new folder")
        source = _template_source(template)
        answers = _parse_data(list(data or []), _questions(source))
        notes = _template_notes(source)  # before copying: a project made inside the checkout dirties it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DirtyLocalWarning)  # said below, with what it means
                copier.run_copy(source, target, data=answers, vcs_ref=vcs_ref, defaults=True,
                                user_defaults={"project_name": target.name}, unsafe=False, quiet=True)
        except _copier_errors() as exc:  # copier, git or a question's validator; copier removed the folder
            raise _copier_error(exc, "dlscaffold new") from exc
        answers_path = target / ANSWERS_FILE
        recorded = (yaml.safe_load(answers_path.read_text()) or {}) if answers_path.is_file() else {}
        typer.echo(f"Created {target} from the template at {source} ({recorded.get('_commit', 'no git version')}).")
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"Next: cd {target} && python train.py")

    _run(action, debug)


def _template_notes(source: str) -> list[str]:
    """What will keep `dlscaffold update` from working later, said now."""
    if _URL.match(source):
        return []
    if not _is_git_root(Path(source)):
        return [f"{source} is not a git repository: this project cannot be updated from it"]
    notes = []
    if _git(Path(source), "status", "--porcelain").stdout.strip():
        notes.append(f"the template at {source} has uncommitted changes; they are in the project, but "
                     "`dlscaffold update` can only start from a committed template version")
    if not _git(Path(source), "tag", "--list").stdout.strip():
        notes.append(f"the template at {source} has no version tags; `dlscaffold update` needs them")
    return notes


def update(
    project_dir: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    data: DataOption = None,
    vcs_ref: VcsRefOption = "HEAD",
    debug: DebugOption = False,
) -> None:
    """Bring template changes into a project, keeping your edits (a 3-way merge through git).

    Exit code 0: updated; review with `git diff`, then commit.

    Exit code 2: nothing changed; the error says why.

    Exit code 3: updated, but the files listed hold conflict markers to resolve.
    """
    from dlscaffold.cli import _run

    def action() -> None:
        import copier

        project = project_dir.expanduser().resolve()
        _check_project(project)
        answers = _read_answers(project)
        src = answers.get("_src_path")
        if not src:
            raise UserError(f"{project / ANSWERS_FILE}: no _src_path; set it to the path or URL of a dlscaffold checkout")
        _check_template_source(str(src), answers.get("_commit"))
        new_answers = _parse_data(list(data or []), _questions(str(src)))
        from copier.errors import DirtyLocalWarning

        try:
            with warnings.catch_warnings():
                # a project inside the template's own checkout (like examples/) makes it look dirty
                warnings.simplefilter("ignore", DirtyLocalWarning)
                copier.run_update(project, data=new_answers, vcs_ref=vcs_ref, defaults=True, overwrite=True,
                                  conflict="inline", unsafe=False, quiet=True)
        except _copier_errors() as exc:
            raise _copier_error(exc, "dlscaffold update") from exc
        before, after = answers.get("_commit"), _read_answers(project).get("_commit")
        conflicts = conflicted_files(project)
        if conflicts:
            typer.echo(f"error: template changes conflict with your edits in {len(conflicts)} file(s); "
                       "resolve the <<<<<<< / >>>>>>> blocks (or .rej files), then git add and commit:", err=True)
            for name in conflicts:
                typer.echo(f"  {name}", err=True)
            raise typer.Exit(CONFLICT_EXIT_CODE)
        if before == after and not _git(project, "status", "--porcelain").stdout.strip():
            typer.echo(f"{project}: already at template version {after}; nothing to update")
        else:
            typer.echo(f"Updated {project} from template version {before} to {after}; "
                       "review with `git diff`, then commit")

    _run(action, debug)
