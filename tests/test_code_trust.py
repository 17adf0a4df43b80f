"""Whose code a command imports: a run folder never chooses it, a project's own scripts check it as
``dlscaffold`` does, each training session of a run is recorded, and ``train()`` leaves no module of
the project imported."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S, copy_project, run_dirs

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.errors import UserError
from dlscaffold.project.provenance import code_hashes
from dlscaffold.records.rundir import DIFF_FILE, RUN_INFO_FILE, read_metrics, read_run_info
from dlscaffold.train import TrainOptions, train

ROOT = Path(__file__).resolve().parent.parent
ONE_EPOCH = "training_params.max_training_epochs=1"
PROJECT_MODULES = ("models", "dataloader", "training_utils")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def trained(project: Path, *overrides: str) -> Path:
    """A one-epoch run of ``project``, in its logging folder ``runs``."""
    assert main(["train", str(project / "config.yml"), ONE_EPOCH, *overrides]) == 0
    (run,) = run_dirs(project)
    return run


def rewrite_info(run: Path, **changes: object) -> None:
    (run / RUN_INFO_FILE).write_text(json.dumps({**read_run_info(run), **changes}))


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python ARGS`` in ``cwd``, as a user runs a project's own scripts."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S
    )


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    return line


def test_a_run_folder_cannot_choose_a_folder_that_does_not_hold_it(toy: Path, tmp_path: Path, capsys) -> None:
    run = trained(toy)
    marker = tmp_path / "imported"
    archive = tmp_path / "archive"  # what someone hands over: a run folder, and a code folder beside it
    handed = archive / "run"
    shutil.copytree(run, handed)
    evil = copy_project("toyproject", archive / "evil")
    (evil / "models.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + (evil / "models.py").read_text())
    through = evil / "runs" / "run"  # a path inside evil/ whose real path is not
    through.parent.mkdir()
    through.symlink_to(handed)
    cases = [(handed, "../evil", evil), (handed, str(evil), evil), (through, str(evil), evil), (handed, str(toy), toy)]
    for run_dir, recorded, folder in cases:  # each with the hashes of that folder's code
        rewrite_info(handed, project_dir=recorded, project_files=code_hashes(folder))
        capsys.readouterr()
        for args in (["evaluate", str(run_dir)], ["train", "--resume", str(run_dir)]):
            assert main(args) == 2, (recorded, args)
            (line,) = error_lines(capsys.readouterr().err)
            assert "does not hold the run folder" in line and "--project DIR" in line, line
        with pytest.raises(UserError, match="does not hold the run folder") as err:
            dlscaffold.load_run(run_dir, epoch="last")
        assert len(err.value.problems) == 1
        assert not marker.exists(), recorded
    assert main(["evaluate", str(handed), "--project", str(toy)]) == 0  # the user names the code
    assert dlscaffold.load_run(handed, epoch="last", project=toy).project_dir == toy.resolve()
    assert not marker.exists()

    shortcut = tmp_path / "shortcut"  # a path elsewhere whose real path lies inside the project
    shortcut.symlink_to(run)
    assert main(["evaluate", str(shortcut)]) == 0
    with open(toy / "models.py", "a") as fh:  # inside its project, the code check still holds
        fh.write("\n# changed since\n")
    assert main(["evaluate", str(shortcut)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "models.py in" in line and "--project DIR" in line


def test_a_projects_own_scripts_check_its_code_as_dlscaffold_does(toy: Path, tmp_path: Path, capsys) -> None:
    for name in ("train.py", "evaluate.py"):  # as a generated project has them
        shutil.copy(ROOT / "template" / name, toy / name)
    run = trained(toy)
    elsewhere = tmp_path / "logs" / run.name  # a run folder outside the project (a logging folder elsewhere)
    shutil.copytree(run, elsewhere)
    assert main(["evaluate", str(elsewhere)]) == 2  # the folder it records does not hold it
    assert main(["evaluate", str(elsewhere)], project=toy) == 0  # the script's folder, its code unchanged

    with open(toy / "models.py", "a") as fh:
        fh.write("\n# tuned after training\n")
    before = (run / RUN_INFO_FILE).read_text()
    line = one_error(python("-m", "dlscaffold", "evaluate", str(run), cwd=toy))
    assert "models.py in" in line and "--project DIR" in line
    for args in (["evaluate.py", str(run)], ["train.py", "--resume", str(run)]):
        line = one_error(python(*args, cwd=toy))
        assert "models.py in" in line and "dataloader.py" not in line, line
        assert f"--project {toy.resolve()}" in line, line
    assert (run / RUN_INFO_FILE).read_text() == before  # refused before anything was written
    capsys.readouterr()
    assert main(["evaluate", str(elsewhere)], project=toy) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "models.py in" in line and "--project" in line
    result = python("evaluate.py", str(run), "--project", ".", cwd=toy)  # the code as it is now, said so
    assert result.returncode == 0, result.stderr


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_resumed_run_keeps_the_provenance_of_each_session(toy: Path, capsys) -> None:
    (toy / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(toy, "init", "-q")
    git(toy, "config", "user.email", "test@example.com")
    git(toy, "config", "user.name", "Test")
    git(toy, "config", "commit.gpgsign", "false")
    git(toy, "add", ".")
    git(toy, "commit", "-q", "-m", "initial")
    commit = git(toy, "rev-parse", "HEAD")
    run = trained(toy)
    first = read_run_info(run)
    assert first["provenance"]["git"] == {"commit": commit, "dirty": False} and not (run / DIFF_FILE).exists()

    with open(toy / "models.py", "a") as fh:
        fh.write("\n# tuned after the first session\n")
    assert main(["train", "--resume", str(run), "training_params.max_training_epochs=2"]) == 2  # other code
    assert main(["train", "--resume", str(run), "training_params.max_training_epochs=2", "--project", str(toy)]) == 0
    info = read_run_info(run)
    kept = ("project_dir", "project_files", "provenance", "started", "dlscaffold_version")
    assert {key: info[key] for key in kept} == {key: first[key] for key in kept}  # the first session's record
    (second,) = info["sessions"]
    steps = next(row["step"] for row in read_metrics(run) if row["epoch"] == 1 and row["split"] == "train")
    assert (second["session"], second["first_epoch"], second["first_step"], second["world_size"]) == (2, 2, steps, 1)
    assert second["project_dir"] == str(toy.resolve()) and second["started"] >= first["started"]
    assert second["project_files"] == {**first["project_files"], "models.py": sha256(toy / "models.py")}
    assert second["provenance"]["git"] == {"commit": commit, "dirty": True}
    assert second["git_diff"] == "git.session2.diff" and not (run / DIFF_FILE).exists()
    diff = (run / second["git_diff"]).read_text()
    assert "session 2 of the run" in diff.splitlines()[0] and "+# tuned after the first session" in diff

    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0  # the check compares the latest session's hashes: unchanged
    git(toy, "commit", "-q", "-am", "tuned")
    assert main(["train", "--resume", str(run), "training_params.max_training_epochs=3"]) == 0
    third = read_run_info(run)["sessions"][1]
    assert (third["session"], third["first_epoch"], third["git_diff"]) == (3, 3, None)
    assert third["provenance"]["git"] == {"commit": git(toy, "rev-parse", "HEAD"), "dirty": False}
    assert not (run / "git.session3.diff").exists()
    assert read_run_info(run)["sessions"][0] == second
    with open(toy / "dataloader.py", "a") as fh:
        fh.write("\n# changed after the third session\n")
    assert main(["evaluate", str(run)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "dataloader.py in" in line and "models.py" not in line.partition(" in ")[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_leaves_no_module_of_the_project_imported(toy: Path, tmp_path: Path) -> None:
    imports = tmp_path / "imports"  # one line each time models.py is imported
    (toy / "helpers.py").write_text("WIDTH = 4\n")  # a module of the project's own, imported by models.py
    models = (toy / "models.py").read_text()
    (toy / "models.py").write_text(f"import helpers\n\nopen({str(imports)!r}, 'a').write('x')\n" + models)

    def project_modules() -> list[str]:
        return sorted(n for n, m in sys.modules.items() if str(getattr(m, "__file__", "") or "").startswith(str(toy)))

    for name in PROJECT_MODULES:  # as in a fresh process: no project's modules (an earlier test's load_run)
        sys.modules.pop(name, None)
    path = list(sys.path)
    quiet = {"options": TrainOptions(), "echo": lambda line: None}
    try:
        result = train(toy / "config.yml", [ONE_EPOCH], **quiet)
        assert project_modules() == [] and not {*PROJECT_MODULES, "helpers"} & set(sys.modules)
        assert sys.path == path
        with pytest.raises(UserError, match="training_params.monitor"):  # refused after importing the project
            train(toy / "config.yml", [ONE_EPOCH, "training_params.monitor=Classifier/nothing"], **quiet)
        assert project_modules() == [] and sys.path == path

        loaded = dlscaffold.load_run(result.run_dir, epoch="last")  # its models need their classes: kept
        kept = {name: sys.modules[name] for name in (*PROJECT_MODULES, "helpers")}
        assert type(loaded.models["Encoder"]).__module__ == "models"
        count, loaded_path = len(imports.read_text()), list(sys.path)
        train(toy / "config.yml", [ONE_EPOCH], **quiet)
        assert len(imports.read_text()) == count + 1  # imported anew for the run
        assert {name: sys.modules.get(name) for name in kept} == kept  # then the caller's put back
        assert sys.path == loaded_path
    finally:
        for name in project_modules():
            del sys.modules[name]
        sys.path[:] = path


def test_a_project_loaded_again_after_another_imports_its_own_code(tmp_path: Path, monkeypatch) -> None:
    """Project A, then B, then A in one process (a notebook's load_run calls): A's code each time,
    though B's folder stands before A's on sys.path by then."""
    from dlscaffold.project.code import load_project

    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in PROJECT_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    roots = {}
    for label in ("A", "B"):
        root = roots[label] = tmp_path / label
        root.mkdir()
        (root / "models.py").write_text(
            f"class {label}Net:\n    pass\n\n\ndef get_ref_model_dict():\n    return {{'{label}Net': {label}Net}}\n"
        )
        (root / "dataloader.py").write_text("class CustomDataSet:\n    pass\n")
    assert list(load_project(roots["A"]).model_classes) == ["ANet"]
    assert list(load_project(roots["B"]).model_classes) == ["BNet"]
    assert list(load_project(roots["A"]).model_classes) == ["ANet"]
    for name in PROJECT_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
