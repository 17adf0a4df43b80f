"""``dlscaffold new`` / ``dlscaffold update`` as a new user meets them, with a template whose versions are
plain commits: the recorded version always exists, a relative template path follows the project,
the update reports what it changed (conflicts in config.yml too) and never deletes a file the user
edited or the template still has; a project made the README's way (inside a checkout that ignores
it) is a repository of its own, and one git does not hold is refused before anything changes.

Each test builds a throwaway template repository (this repository's ``copier.yml`` + ``template/``
in a new git repository), so nothing depends on this repository's history, except
``test_the_example_is_up_to_date_in_a_fresh_clone``, which checks ``examples/cifar10`` in a fresh
clone of this repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dlscaffold.cli import main
from dlscaffold.tools import scaffold

pytestmark = [pytest.mark.template, pytest.mark.usefixtures("git_identity")]

REPO = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)  # a clean checkout (CI's) has nothing new


def template_repo(dest: Path) -> Path:
    """A git repository, without tags, holding this repository's copier.yml and template/."""
    dest.mkdir(parents=True)
    shutil.copy(REPO / "copier.yml", dest / "copier.yml")
    shutil.copytree(
        REPO / "template",
        dest / "template",
        ignore=shutil.ignore_patterns("__pycache__", "runs", ".pytest_cache", "*.pyc"),
    )
    git(dest, "init", "-q")
    commit_all(dest, "template v1")
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def answers(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def new_project(project: Path, template: Path | str) -> Path:
    """``dlscaffold new`` with the defaults (outside git: the project is its own repository, committed)."""
    assert main(["new", str(project), "--template", str(template), "--defaults"]) == 0
    assert not git(project, "status", "--porcelain")
    return project


def project_files(project: Path) -> dict[str, bytes]:
    """Every file of the project folder but git's own, by relative path."""
    files = (p for p in sorted(project.rglob("*")) if p.is_file() and ".git" not in p.relative_to(project).parts)
    return {str(p.relative_to(project)): p.read_bytes() for p in files}


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def assert_is_commit(repo: Path, version: str) -> None:
    subprocess.run(["git", "cat-file", "-e", f"{version}^{{commit}}"], cwd=repo, check=True)


def test_commits_are_versions_without_tags(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    project = new_project(tmp_path / "P", repo)
    assert answers(project)["_commit"] == git(repo, "rev-parse", "--short", "HEAD").strip()
    edit(
        repo / "template" / "train.py",
        '"""',
        '"""(v2) ',
    )
    commit_all(repo, "template v2")
    capsys.readouterr()

    assert main(["update", str(project)]) == 0

    out = capsys.readouterr().out
    version = answers(project)["_commit"]
    assert_is_commit(repo, version)
    assert git(repo, "rev-parse", f"{version}^{{commit}}") == git(repo, "rev-parse", "HEAD")
    assert "(v2)" in (project / "train.py").read_text()
    assert re.search(r"^\s+modified\s+train\.py$", out, re.MULTILINE)
    commit_all(project, "Template v2")

    assert main(["update", str(project)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert not git(project, "status", "--porcelain")


def test_uncommitted_template_changes_are_noted_and_the_last_commit_recorded(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    git(repo, "tag", "v1")  # with a tag, copier would record v1-1-g<hash of a commit it made up>
    edit(repo / "template" / "train.py", '"""', '"""(draft) ')
    capsys.readouterr()

    project = new_project(tmp_path / "P", repo)

    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "uncommitted changes" in notes[0] and "(v1)" in notes[0]
    assert answers(project)["_commit"] == "v1"
    assert "(draft)" in (project / "train.py").read_text()

    commit_all(repo, "draft committed")
    edit(repo / "template" / "evaluate.py", '"""', '"""(draft 2) ')
    assert main(["update", str(project)]) == 0  # again from a dirty template: the last commit is recorded
    version = answers(project)["_commit"]
    assert_is_commit(repo, version)
    assert git(repo, "rev-parse", f"{version}^{{commit}}") == git(repo, "rev-parse", "HEAD")


def test_update_lists_the_config_values_it_changed(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    project = new_project(tmp_path / "P", repo)
    edit(project / "config.yml", "batch_size: 64", "batch_size: 32")  # the user's value: kept, not listed
    commit_all(project, "My batch size")
    edit(repo / "template" / "config.yml", "lrn_rate: 0.003", "lrn_rate: 0.001")
    commit_all(repo, "lower default learning rate")
    capsys.readouterr()

    assert main(["update", str(project)]) == 0

    out = capsys.readouterr().out
    assert "training_params.lrn_rate: 0.003 -> 0.001" in out
    assert "batch_size" not in out
    assert re.search(r"^\s+modified\s+config\.yml$", out, re.MULTILINE)
    config = yaml.safe_load((project / "config.yml").read_text())
    assert config["training_params"]["lrn_rate"] == 0.001


def test_update_keeps_a_file_the_user_edited_that_the_template_deletes(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    project = new_project(tmp_path / "P", repo)
    edit(project / "evaluate.py", '"""', '"""My evaluation notes. ')
    commit_all(project, "My evaluate.py")
    mine = (project / "evaluate.py").read_text()
    git(repo, "rm", "-q", "template/evaluate.py", "template/tests/test_project.py")
    commit_all(repo, "drop evaluate.py and the project's tests")
    capsys.readouterr()

    assert main(["update", str(project)]) == 3

    err = capsys.readouterr().err
    assert re.search(r"^\s+evaluate\.py .*no longer has", err, re.MULTILINE)
    assert (project / "evaluate.py").read_text() == mine
    assert not (project / "tests" / "test_project.py").exists()  # unedited: deleted with the template's
    assert "test_project.py" not in err


def test_a_relative_template_path_is_relative_to_the_project(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    repo = template_repo(work / "tpl")
    monkeypatch.chdir(work)
    project = new_project(Path("proj"), "tpl").resolve()
    assert answers(project)["_src_path"] == "../tpl"
    edit(repo / "template" / "train.py", '"""', '"""(v2) ')
    commit_all(repo, "template v2")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    assert main(["update", str(project)]) == 0

    assert "(v2)" in (project / "train.py").read_text()
    assert answers(project)["_src_path"] == "../tpl"
    assert_is_commit(repo, answers(project)["_commit"])
    shutil.move(work, tmp_path / "moved")  # the template and its project move together
    commit_all(tmp_path / "moved" / "proj", "Template v2")
    assert main(["update", str(tmp_path / "moved" / "proj")]) == 0
    assert "up to date" in capsys.readouterr().out


def snapshot_working_tree(clone: Path) -> None:
    """Make ``clone`` hold this repository's working tree (tracked and new files), committed."""
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        source, target = REPO / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():
            target.unlink()  # deleted in the working tree
    commit_all(clone, "working tree")


def test_the_example_is_up_to_date_in_a_fresh_clone(tmp_path, monkeypatch, capsys):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-local", str(REPO), str(clone))
    snapshot_working_tree(clone)
    subprocess.run(["bash", "scripts/refresh_example_answers.sh"], cwd=clone, check=True, capture_output=True)
    commit_all(clone, "example answers name the template's last commit")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    assert main(["update", str(clone / "examples" / "cifar10")]) == 0

    assert "nothing to update" in capsys.readouterr().out
    assert not git(clone, "status", "--porcelain")
    recorded = answers(clone / "examples" / "cifar10")
    assert recorded["_src_path"] == "../.."
    assert_is_commit(clone, recorded["_commit"])
    absolute = subprocess.run(
        ["git", "grep", "-nE", r"(^|[[:space:]'\"=])(/|~/)[A-Za-z]", "--", "*.copier-answers.yml", "*config.yml"],
        cwd=clone,
        capture_output=True,
        text=True,
    )
    assert absolute.stdout == "", absolute.stdout


def readme_checkout(dest: Path) -> Path:
    """A template checkout laid out as the README's: its .gitignore lists the projects made inside it."""
    clone = template_repo(dest)
    (clone / ".gitignore").write_text("/my_digits/\n/copied/\n")
    commit_all(clone, "ignore the projects made inside the checkout")
    return clone


def test_a_project_made_the_readme_way_is_its_own_repository_and_updates_lose_nothing(tmp_path, monkeypatch, capsys):
    clone = readme_checkout(tmp_path / "clone")
    monkeypatch.chdir(clone)
    capsys.readouterr()

    assert main(["new", "my_digits", "--template", ".", "--defaults"]) == 0

    project = (clone / "my_digits").resolve()
    assert re.search(
        r"a git repository of its own, .*, since the git repository around it, .*, ignores it", capsys.readouterr().out
    )
    assert Path(git(project, "rev-parse", "--show-toplevel").strip()).resolve() == project
    assert git(project, "log", "--format=%s").strip() == "Initial project"
    assert not git(project, "status", "--porcelain") and not git(clone, "status", "--porcelain")
    edit(project / "config.yml", "batch_size: 64", "batch_size: 32")
    edit(project / "models.py", '"""', '"""My model. ')
    edit(clone / "template" / "train.py", '"""', '"""(v2) ')
    commit_all(clone, "template v2")
    before = project_files(project)

    assert main(["update", "my_digits"]) == 2

    (line,) = error_lines(capsys.readouterr().err)
    assert "uncommitted changes" in line
    assert project_files(project) == before
    commit_all(project, "My edits")

    assert main(["update", "my_digits"]) == 0

    after = project_files(project)
    assert set(after) >= set(before)
    assert b"(v2)" in after["train.py"] and b"batch_size: 32" in after["config.yml"]
    assert after["models.py"] == before["models.py"]


def test_a_project_made_where_the_repository_around_it_tracks_it_is_left_to_that_repository(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    capsys.readouterr()

    assert main(["new", str(repo / "examples" / "mine"), "--template", str(repo), "--defaults"]) == 0

    assert "git repository of its own" not in capsys.readouterr().out
    assert not (repo / "examples" / "mine" / ".git").exists()
    assert "?? examples/" in git(repo, "status", "--porcelain")  # for that repository's owner to commit


def test_a_copier_project_git_does_not_hold_is_refused_in_one_line(tmp_path, capsys):
    import copier

    clone = readme_checkout(tmp_path / "clone")
    ignored, loose = clone / "copied", clone / "loose"
    copier.run_copy(str(clone), ignored, defaults=True, vcs_ref="HEAD", unsafe=False, quiet=True)  # copier copy
    edit(clone / "template" / "train.py", '"""', '"""(v2) ')
    commit_all(clone, "template v2")
    copier.run_copy(str(clone), loose, defaults=True, vcs_ref="HEAD~1", unsafe=False, quiet=True)  # not committed
    for project, why in ((ignored, "ignores it"), (loose, "does not track its files")):
        before = project_files(project)
        capsys.readouterr()

        assert main(["update", str(project)]) == 2

        (line,) = error_lines(capsys.readouterr().err)
        assert why in line and "git init && git add -A && git commit" in line
        assert project_files(project) == before


def test_new_commits_without_a_git_identity(tmp_path, monkeypatch):
    repo = template_repo(tmp_path / "tpl")
    for variable in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(variable, raising=False)

    assert main(["new", str(tmp_path / "anonymous"), "--template", str(repo), "--defaults"]) == 0

    assert git(tmp_path / "anonymous", "log", "--format=%an <%ae>").strip() == "dlscaffold <dlscaffold@localhost>"
    git(tmp_path, "config", "--global", "user.name", "Ada Lovelace")
    git(tmp_path, "config", "--global", "user.email", "ada@example.com")

    assert main(["new", str(tmp_path / "mine"), "--template", str(repo), "--defaults"]) == 0

    assert git(tmp_path / "mine", "log", "--format=%an <%ae>").strip() == "Ada Lovelace <ada@example.com>"


def test_an_update_never_leaves_deleted_a_file_the_template_still_has(tmp_path, monkeypatch, capsys):
    repo = template_repo(tmp_path / "tpl")
    project = new_project(tmp_path / "P", repo)
    edit(repo / "template" / "train.py", '"""', '"""(v2) ')
    commit_all(repo, "template v2")
    readme = (project / "README.md").read_bytes()
    copier_update = scaffold._run_copier_update

    def deleting_too(project: Path, *args) -> None:  # a merge that goes wrong: it deletes a file it should keep
        copier_update(project, *args)
        (project / "README.md").unlink()

    monkeypatch.setattr(scaffold, "_run_copier_update", deleting_too)
    capsys.readouterr()

    assert main(["update", str(project)]) == 0

    assert (project / "README.md").read_bytes() == readme
    assert (
        "note: README.md: the update deleted it, though the template still has it; restored" in capsys.readouterr().err
    )
    assert "(v2)" in (project / "train.py").read_text()


def test_a_conflict_in_the_config_still_lists_the_values_changed_elsewhere(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    project = new_project(tmp_path / "P", repo)
    edit(project / "config.yml", "lrn_rate: 0.003", "lrn_rate: 0.01")
    commit_all(project, "Faster")
    edit(repo / "template" / "config.yml", "lrn_rate: 0.003", "lrn_rate: 0.001")  # the line the user changed
    edit(repo / "template" / "config.yml", "batch_size: 64", "batch_size: 48")  # a line the user left alone
    commit_all(repo, "new defaults")
    capsys.readouterr()

    assert main(["update", str(project)]) == 3

    captured = capsys.readouterr()
    assert "dataloading_params.batch_size: 64 -> 48" in captured.out
    assert "lrn_rate" not in captured.out
    assert re.search(
        r"^\s+config\.yml \(keys in conflict: training_params\.lrn_rate: yours 0\.01, the template's 0\.001\)$",
        captured.err,
        re.MULTILINE,
    )
    config = (project / "config.yml").read_text()
    assert re.search(r"^<{7} ", config, re.MULTILINE) and "batch_size: 48" in config


def test_the_update_report_says_what_changed_then_the_conflicts_on_stderr():
    result = scaffold.UpdateResult(
        project=Path("P"),
        before="v1",
        after="v2",
        changed=[("modified", "models.py"), ("conflict", "config.yml")],
        config_changes=[("dataloading_params.batch_size", "64", "48")],
        config_conflicts=[("training_params.lrn_rate", "0.01", "0.001")],
        conflicts=["config.yml"],
        kept=["old.py"],
        notes=["a note"],
    )
    lines, tables = [], []

    def echo(line, err=False):
        lines.append(("err" if err else "out", line))

    assert scaffold.report_update(result, echo, tables.append) == scaffold.CONFLICT_EXIT_CODE == 3
    assert len(tables) == 1  # the config values changed
    assert [line for where, line in lines if where == "out"] == [
        "Updated P from template version v1 to v2; review with `git diff`, then commit",
        "Files changed:",
        "  modified  models.py",
        "  conflict  config.yml",
    ]
    err = [line for where, line in lines if where == "err"]
    assert err[0] == "note: a note" and "conflict with your edits in 2 file(s)" in err[1]
    assert err[2:] == [
        "  config.yml (keys in conflict: training_params.lrn_rate: yours 0.01, the template's 0.001)",
        "  old.py (the template no longer has this file; kept because you edited it: keep or delete it)",
    ]
    lines.clear()
    assert scaffold.report_update(scaffold.UpdateResult(Path("P"), "v2", "v2"), echo, tables.append) == 0
    assert lines == [("out", "P: up to date with template version v2; nothing to update")]


def test_update_lists_the_template_changes_to_your_own_files_it_did_not_apply(tmp_path, capsys):
    repo = template_repo(tmp_path / "tpl")
    project = new_project(tmp_path / "P", repo)
    mine = (project / "models.py").read_text()
    edit(repo / "template" / "models.py", '"""', '"""(example v2) ')
    edit(repo / "template" / "train.py", '"""', '"""(v2) ')
    commit_all(repo, "a better example model")
    before, after = answers(project)["_commit"], git(repo, "rev-parse", "--short", "HEAD").strip()
    capsys.readouterr()

    assert main(["update", str(project)]) == 0

    out = capsys.readouterr().out
    assert (project / "models.py").read_text() == mine  # the user's file: never overwritten
    assert "(v2)" in (project / "train.py").read_text()  # the template's file: updated
    lines = out.splitlines()
    heading = lines.index("Template changes not applied (files that are yours since generation):")
    (line,) = [line for line in lines[heading + 1 :] if line.startswith("  ")]
    assert line.startswith("  models.py: yours since generation") and f"({before} -> {after})" in line
    assert "dataloader.py" not in out and "training_utils.py" not in out  # their template versions did not change
    shown = re.search(r"see `git -C (\S+) diff (\S+) (\S+) -- (\S+)`", line)
    assert shown and shown.group(4) == "template/models.py"
    where, old, new = shown.group(1, 2, 3)
    diff = subprocess.run(
        ["git", "-C", where, "diff", old, new, "--", "template/models.py"], capture_output=True, text=True
    )
    assert diff.returncode == 0 and '+"""(example v2) ' in diff.stdout  # the command it names shows the change
    template_file = re.search(r"the template's file: `git -C \S+ show (\S+)`", line)
    assert template_file and "(example v2)" in git(repo, "show", template_file.group(1))


def test_the_update_report_lists_what_it_did_not_apply():
    why = "yours since generation, so updates leave it alone; the template's version changed (v1 -> v2): see ..."
    result = scaffold.UpdateResult(Path("P"), "v1", "v2", changed=[("modified", "train.py")])
    result.not_applied = [("models.py", why)]
    lines = []
    assert scaffold.report_update(result, lambda line, err=False: lines.append((err, line)), print) == 0
    assert lines[-2:] == [
        (False, "Template changes not applied (files that are yours since generation):"),
        (False, f"  models.py: {why}"),
    ]
