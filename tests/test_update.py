"""``dlscaffold new`` / ``dlscaffold update`` as a new user meets them, with a template whose versions are
plain commits: the recorded version always exists, a relative template path follows the project,
the update reports what it changed and never deletes a file the user edited.

Each test builds a throwaway template repository (this repository's ``copier.yml`` + ``template/``
in a new git repository), so nothing depends on this repository's history, except the last test,
which checks ``examples/cifar10`` in a fresh clone of this repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dlscaffold.cli import main

pytestmark = pytest.mark.template

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def git_identity(tmp_path_factory, monkeypatch):
    """CI has no git identity or config: give git both, isolated from the machine's own."""
    gitconfig = tmp_path_factory.mktemp("gitconfig") / "config"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test User")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


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
    """``dlscaffold new`` with the defaults, then ``git init`` and a first commit, as a user does."""
    assert main(["new", str(project), "--template", str(template), "--defaults"]) == 0
    git(project, "init", "-q")
    commit_all(project, "Generated")
    return project


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
