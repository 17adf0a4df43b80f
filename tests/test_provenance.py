"""Provenance: versions, the project's git state and its uncommitted changes, never an exception."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import copy_project, run_dirs

import dlscaffold
from dlscaffold._version import __version__
from dlscaffold.cli import main
from dlscaffold.errors import UserError
from dlscaffold.project import provenance
from dlscaffold.records.rundir import read_run_info

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding a committed project folder ``proj`` (runs/ ignored)."""
    root = tmp_path / "repo"
    project = root / "proj"
    project.mkdir(parents=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")
    git(root, "config", "commit.gpgsign", "false")
    (project / "models.py").write_text("WIDTH = 8\n")
    (project / ".gitignore").write_text("runs/\n")
    (root / "outside.txt").write_text("not the project\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "initial")
    return project


def test_collect_clean_repo(repo: Path) -> None:
    info = provenance.collect(repo, ["dlscaffold", "train", "config.yml"], "cpu")
    assert info["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert info["command"] == ["dlscaffold", "train", "config.yml"]
    assert info["dlscaffold"] == __version__
    assert info["python"].count(".") == 2
    assert info["torch"] and info["host"] and info["device_name"]
    assert info["template"] is None
    json.dumps(info, allow_nan=False)  # JSON-safe
    run_dir = repo / "runs" / "20260101_1"
    run_dir.mkdir(parents=True)
    assert provenance.write_git_diff(repo, run_dir) is False
    assert not (run_dir / "git.diff").exists()


def test_dirty_repo_diff(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "models.py").write_text("WIDTH = 16\n")
    (repo / "notes.txt").write_text("new\n")
    (repo.parent / "outside.txt").write_text("changed outside the project\n")
    info = provenance.collect(repo, [], None)
    assert info["git"] == {"commit": commit, "dirty": True}
    run_dir = repo / "runs" / "20260101_1"
    run_dir.mkdir(parents=True)
    assert provenance.write_git_diff(repo, run_dir) is True
    diff = (run_dir / "git.diff").read_text()
    assert "-WIDTH = 8" in diff and "+WIDTH = 16" in diff
    assert "notes.txt" in diff
    assert "outside.txt" not in diff  # scoped to the project folder
    assert not (run_dir / "git.diff.tmp").exists()
    # the saved diff restores the tracked changes on the recorded commit
    git(repo, "checkout", "-q", "--", "models.py")
    git(repo, "apply", str(run_dir / "git.diff"))
    assert (repo / "models.py").read_text() == "WIDTH = 16\n"


def test_only_untracked_files_outside_the_run_folder_count(repo: Path) -> None:
    run_dir = repo / "logs" / "20260101_1"  # a logging folder that git does not ignore
    run_dir.mkdir(parents=True)
    (run_dir / "config.yml").write_text("a: 1\n")
    assert provenance.write_git_diff(repo, run_dir) is False
    (repo / "extra.py").write_text("X = 1\n")
    assert provenance.write_git_diff(repo, run_dir) is True
    diff = (run_dir / "git.diff").read_text()
    assert "extra.py" in diff and "config.yml" not in diff


def test_not_a_repo(tmp_path: Path) -> None:
    project = tmp_path / "plain"
    project.mkdir()
    info = provenance.collect(project, ["x"], "cpu")
    assert info["git"] is None
    assert provenance.write_git_diff(project, project) is False


def test_missing_git_or_folder_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert provenance.git_state(tmp_path / "gone") is None
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert provenance.git_state(tmp_path) is None
    assert provenance.write_git_diff(tmp_path, tmp_path) is False


def test_git_timeout_gives_null(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd="git", timeout=provenance.GIT_TIMEOUT_S)

    monkeypatch.setattr(provenance.subprocess, "run", hang)
    assert provenance.git_state(repo) is None


def test_template_answers(tmp_path: Path) -> None:
    (tmp_path / ".copier-answers.yml").write_text(
        "# Changes here will be overwritten by Copier\n_commit: v0.2.0\n_src_path: gh:org/dlscaffold\nproject_name: X\n"
    )
    info = provenance.collect(tmp_path, [], "cpu")
    assert info["template"] == {"src_path": "gh:org/dlscaffold", "commit": "v0.2.0"}


@pytest.mark.parametrize("text", ["_commit: [unclosed\n", "- a list\n", ""])
def test_broken_answers_file_is_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / ".copier-answers.yml").write_text(text)
    assert provenance.template_answers(tmp_path) is None


def test_a_project_its_repository_ignores_is_not_under_version_control(repo: Path) -> None:
    root = repo.parent
    ignored = root / "my_digits"  # made inside a checkout whose .gitignore lists it
    ignored.mkdir()
    (ignored / "models.py").write_text("WIDTH = 32\n")
    (root / ".gitignore").write_text("/my_digits/\n")
    git(root, "add", ".gitignore")
    git(root, "commit", "-q", "-m", "ignore my_digits")
    assert not git(root, "status", "--porcelain")  # the checkout looks clean, but holds none of the code

    assert provenance.collect(ignored, [], "cpu")["git"] is None
    run_dir = ignored / "runs" / "20260101_1"
    run_dir.mkdir(parents=True)
    assert provenance.write_git_diff(ignored, run_dir) is False

    git(ignored, "init", "-q")  # its own repository: its state is recorded again
    assert provenance.git_state(ignored) == {"commit": None, "dirty": True}


def test_an_untracked_code_file_that_is_not_ignored_is_dirty(repo: Path) -> None:
    fresh = repo.parent / "fresh"
    fresh.mkdir()
    (fresh / "models.py").write_text("WIDTH = 4\n")
    assert provenance.git_state(fresh) == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": True}


def test_code_hashes_are_the_sha256_of_the_code_files_that_exist(repo: Path) -> None:
    (repo / "dataloader.py").write_text("class CustomDataSet: ...\n")
    (repo / "config.yml").write_text("a: 1\n")
    assert provenance.code_hashes(repo) == {
        name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in ("models.py", "dataloader.py")
    }


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_a_run_imports_its_recorded_project_only_while_its_code_is_unchanged(toy: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.max_training_epochs=1"]) == 0
    (run,) = run_dirs(toy)
    info = read_run_info(run)
    names = ("models.py", "dataloader.py", "training_utils.py")
    assert info["project_files"] == {name: hashlib.sha256((toy / name).read_bytes()).hexdigest() for name in names}
    assert main(["evaluate", str(run)]) == 0  # unchanged since training: the recorded project is used
    evil = copy_project("toyproject", tmp_path / "elsewhere")  # a folder a run.json could name instead
    (evil / "models.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n" + (toy / "models.py").read_text())
    with open(toy / "models.py", "a") as fh:
        fh.write("\n# tuned after training\n")
    capsys.readouterr()

    for args in (["evaluate", str(run)], ["train", "--resume", str(run)]):
        assert main(args) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert "models.py in" in line and "dataloader.py" not in line and "--project DIR" in line
        assert "train --resume" in line
    with pytest.raises(UserError, match="models.py in") as err:
        dlscaffold.load_run(run, epoch="last")
    assert len(err.value.problems) == 1
    elsewhere = {**info, "project_dir": str(evil), "project_files": provenance.code_hashes(evil)}  # its own hashes
    for recorded in (elsewhere, {k: v for k, v in info.items() if k != "project_files"}):
        (run / "run.json").write_text(json.dumps(recorded))
        assert main(["evaluate", str(run)]) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert "--project DIR" in line
        if recorded is elsewhere:  # a folder that does not hold the run: refused whatever its code
            assert "does not hold the run folder" in line
    assert "records no hashes" in line
    assert not (tmp_path / "ran").exists()

    assert main(["evaluate", str(run), "--project", str(toy)]) == 0
    assert dlscaffold.load_run(run, epoch="last", project=toy).project_dir == toy.resolve()


def test_a_run_shipped_inside_its_project_finds_it_through_a_relative_path(toy: Path, capsys) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.max_training_epochs=1"]) == 0
    (run,) = run_dirs(toy)
    shipped = toy / "baseline"  # a run folder copied into the project, as examples/cifar10 ships its baselines
    shutil.copytree(run, shipped)
    info = read_run_info(shipped)
    (shipped / "run.json").write_text(json.dumps({**info, "project_dir": ".."}))
    capsys.readouterr()
    assert main(["evaluate", str(shipped)]) == 0  # from anywhere: '..' is read against the run folder
    assert str(toy.resolve()) in capsys.readouterr().out
    (shipped / "run.json").write_text(json.dumps({**info, "project_dir": "."}))  # its own folder: never
    assert main(["evaluate", str(shipped)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "its own folder" in line and "--project DIR" in line
    (shipped / "run.json").write_text(json.dumps({**info, "project_dir": ".."}))
    with open(toy / "dataloader.py", "a") as fh:
        fh.write("\n# changed since\n")
    assert main(["evaluate", str(shipped)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "dataloader.py in" in line and "--project DIR" in line
