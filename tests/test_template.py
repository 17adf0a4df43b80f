"""The copier template, tested as a user meets it: generate, run the project's own tests, train,
evaluate; then update a project across two template versions with user edits in between.

Everything runs offline: the template source is this repository (or a temporary git copy of its
``copier.yml`` + ``template/``), the data is scikit-learn's bundled digits.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HANG_GUARD_S

from dlscaffold.cli import main

pytestmark = [pytest.mark.template, pytest.mark.usefixtures("git_identity")]

REPO = Path(__file__).resolve().parents[1]
ANSWERS = {"project_name": "Digit Study", "description": "Handwritten digits, 8x8", "author_name": "Ada Lovelace"}
DATA = [arg for key, value in ANSWERS.items() for arg in ("--data", f"{key}={value}")]
RENDERED = {
    ".copier-answers.yml",
    ".gitignore",
    "README.md",
    "config.yml",
    "dataloader.py",
    "evaluate.py",
    "models.py",
    "pyproject.toml",
    "sweep.yml",
    "train.py",
    "training_utils.py",
    "tests/test_project.py",
    "tests/conftest.py",
    "tests/test_determinism.py",
    ".github/workflows/ci.yml",
    ".pre-commit-config.yaml",
    "config.schema.json",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def run_python(*args: str, cwd: Path, timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """``python ARGS`` in ``cwd`` with this interpreter, as a user runs the project."""
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
    )
    assert done.returncode == 0, f"python {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def rendered_files(project: Path) -> dict[str, str]:
    """The project's files (not what running it wrote: runs, caches, the determinism test's pins), by relative path."""
    skip = {"runs", "__pycache__", ".pytest_cache", ".git", "determinism.json"}
    paths = [p for p in sorted(project.rglob("*")) if p.is_file() and not skip & set(p.relative_to(project).parts)]
    return {str(p.relative_to(project)): p.read_text() for p in paths}


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


# ------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def project(tmp_path_factory, git_identity) -> Path:
    """``dlscaffold new`` with fixed answers, from this repository (the default template)."""
    dest = tmp_path_factory.mktemp("new") / "digit-study"
    assert main(["new", str(dest), *DATA]) == 0
    return dest


def test_new_renders_the_template_with_the_answers(project):
    files = rendered_files(project)
    assert set(files) == RENDERED
    assert not [name for name, text in files.items() if "{{" in text or "{%" in text]
    answers = yaml.safe_load(files[".copier-answers.yml"])
    assert Path(answers["_src_path"]).is_absolute() and Path(answers["_src_path"]) == REPO
    assert answers["_commit"]
    assert {k: answers[k] for k in ANSWERS} == ANSWERS
    assert answers["project_slug"] == "digit-study"  # derived from the name
    assert 'name = "digit-study"' in files["pyproject.toml"]
    assert files["README.md"].startswith("# Digit Study\n\nHandwritten digits, 8x8\n")
    assert files["config.yml"] == (REPO / "template" / "config.yml").read_text()


def test_config_annotates_every_key():
    """Like the seed's README config: a comment above (or beside) every key."""
    lines = (REPO / "template" / "config.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_]\w*:", line) and "#" not in line:
            above = lines[i - 1].strip()
            is_child_of_commented_key = re.match(r"^\s+(image|class_logits|class_idx):", line)
            assert above.startswith("#") or is_child_of_commented_key, f"config.yml line {i + 1} has no comment: {line}"


def test_generated_project_tests_and_dev_training_pass(project):
    tests = run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
    assert "3 passed" in tests.stdout
    train = run_python("train.py", "--dev", "--no-save", "training_params.max_training_epochs=2", cwd=project)
    assert "Logging and Model Saving Directory:" in train.stdout
    assert "dev set" in train.stdout


@pytest.mark.filterwarnings("ignore:Dirty template changes")  # a working tree with template edits
def test_copier_run_copy_renders_the_same_project(project, tmp_path):
    import copier

    dest = tmp_path / "digit-study"
    copier.run_copy(str(REPO), dest, data=ANSWERS, defaults=True, vcs_ref="HEAD", quiet=True, unsafe=False)
    ours, theirs = rendered_files(project), rendered_files(dest)
    answers = {k: yaml.safe_load(v.pop(".copier-answers.yml")) for k, v in (("ours", ours), ("theirs", theirs))}
    assert ours == theirs
    assert {k: v for k, v in answers["theirs"].items() if k != "_commit"} == {
        k: v for k, v in answers["ours"].items() if k != "_commit"
    }
    run_python("train.py", "--dev", "--no-save", "training_params.max_training_epochs=1", cwd=dest)


def test_defaults_train_to_95_percent_validation_accuracy(tmp_path):
    dest = tmp_path / "digits"
    assert main(["new", str(dest), "--defaults"]) == 0
    train = run_python("train.py", cwd=dest)
    run_dir = re.search(r"Logging and Model Saving Directory: (\S+)", train.stdout).group(1)
    assert Path(run_dir).parent == dest / "runs"  # logging_dir: runs, next to config.yml
    run_python("evaluate.py", run_dir, "--json", "eval.json", cwd=dest)
    result = json.loads((dest / "eval.json").read_text())
    assert result["split"] == "val" and result["num_samples"] == 359
    assert result["metrics"]["DigitClassifier/Accuracy"] >= 0.95


def test_new_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["new", str(tmp_path / "taken"), "--defaults"]) == 2
    assert main(["new", str(tmp_path / "p"), "--data", "projet_name=x"]) == 2
    assert main(["new", str(tmp_path / "p"), "--template", str(tmp_path)]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 3
    assert "not empty" in errors[0] and "did you mean 'project_name'" in errors[1] and "--template" in errors[2]
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------------- update


def copy_template(dest: Path) -> Path:
    """A git repository holding this repository's copier.yml and template/, committed."""
    dest.mkdir(parents=True)
    shutil.copy(REPO / "copier.yml", dest / "copier.yml")
    shutil.copytree(
        REPO / "template",
        dest / "template",
        ignore=shutil.ignore_patterns("__pycache__", "runs", ".pytest_cache", "*.pyc"),
    )
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "template v1")
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory, git_identity) -> Path:
    """The template tagged v1, then v2: train.py, a config.yml comment and value, models.py, a new file."""
    repo = copy_template(tmp_path_factory.mktemp("tpl") / "template-repo")
    git(repo, "tag", "v1")
    tpl = repo / "template"
    (tpl / "train.py").write_text((tpl / "train.py").read_text() + "# v2: the project folder\n")
    edit(
        tpl / "config.yml",
        "# the maximum number of epochs to train a model for",
        "# the maximum number of epochs to train a model for (v2: stops earlier with a scheduler)",
    )
    edit(tpl / "config.yml", "lrn_rate: 0.003", "lrn_rate: 0.002")
    edit(tpl / "models.py", '"""The project\'s models', '"""(v2) The project\'s models')
    (tpl / "CHANGELOG.md").write_text("# Template changes\n\n- v2: notes\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template v2")
    git(repo, "tag", "v2")
    return repo


def make_project(dest: Path, template: Path, ref: str = "v1") -> Path:
    """``dlscaffold new`` from ``template`` at ``ref`` (outside git: its own repository, committed)."""
    assert main(["new", str(dest), "--defaults", "--template", str(template), "--vcs-ref", ref]) == 0
    assert not git(dest, "status", "--porcelain")
    return dest


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def test_update_brings_template_changes_and_keeps_user_edits(template_repo, tmp_path):
    project = make_project(tmp_path / "proj", template_repo)
    edit(project / "models.py", "num_resnet_layers=2\n", "num_resnet_layers=3  # my deeper head\n")
    edit(project / "config.yml", "batch_size: 64", "batch_size: 32")
    commit_all(project, "My edits")

    assert main(["update", str(project)]) == 0

    assert "# v2: the project folder" in (project / "train.py").read_text()
    config = (project / "config.yml").read_text()
    assert "(v2: stops earlier with a scheduler)" in config and "lrn_rate: 0.002" in config
    assert (project / "CHANGELOG.md").is_file()
    assert "batch_size: 32" in config
    models = (project / "models.py").read_text()
    assert "num_resnet_layers=3  # my deeper head" in models
    assert "(v2)" not in models  # models.py is the user's (_skip_if_exists)
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v2"
    run_python("-c", "from dlscaffold.prepare import prepare; prepare('config.yml')", cwd=project)


def test_update_names_the_conflicted_file(template_repo, tmp_path, capsys):
    project = make_project(tmp_path / "proj", template_repo)
    edit(project / "config.yml", "lrn_rate: 0.003", "lrn_rate: 0.01")  # the line v2 changes too
    commit_all(project, "Faster")

    assert main(["update", str(project)]) == 3

    err = capsys.readouterr().err
    assert "conflict" in err and re.search(r"^\s+config\.yml \(keys in conflict: training_params\.lrn_rate", err, re.M)
    assert "train.py" not in err
    config = (project / "config.yml").read_text()
    assert re.search(r"^<{7} ", config, re.MULTILINE) and "lrn_rate: 0.01" in config and "lrn_rate: 0.002" in config
    assert "# v2: the project folder" in (project / "train.py").read_text()


def update_error(project: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["update", str(project)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    return line


def test_update_refuses_a_dirty_tree(template_repo, tmp_path, capsys):
    project = make_project(tmp_path / "proj", template_repo)
    (project / "train.py").write_text("# unfinished\n")
    assert "commit or stash your changes first" in update_error(project, capsys)


def test_update_needs_git_and_the_answers_file(template_repo, tmp_path, capsys):
    plain = tmp_path / "plain"
    assert main(["new", str(plain), "--defaults", "--template", str(template_repo), "--vcs-ref", "v1"]) == 0
    shutil.rmtree(plain / ".git")  # a project copied without its repository
    assert "not a git repository" in update_error(plain, capsys)

    (plain / ".copier-answers.yml").unlink()
    git(plain, "init", "-q")
    commit_all(plain, "Without answers")
    assert "no .copier-answers.yml" in update_error(plain, capsys)


def test_update_names_a_template_source_that_is_gone(tmp_path, capsys):
    untagged = copy_template(tmp_path / "untagged")  # no tags: commits are the versions
    project = make_project(tmp_path / "proj", untagged, ref="HEAD")
    assert main(["update", str(project)]) == 0

    shutil.rmtree(untagged)
    assert "does not exist" in update_error(project, capsys)
