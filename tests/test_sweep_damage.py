"""A sweep folder that was copied, renamed or damaged: ``dlscaffold sweep --resume DIR`` resumes it
correctly, or refuses in one line (what is damaged, what to do) with exit code 2, never with a
traceback, never reading without end, never leaving a trial's run behind for a new one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HANG_GUARD_S, copy_project, run_cli, signalling_config

# what a refusal must be quick at: no training, no unbounded read (a guard, far above its duration)
REFUSAL_GUARD_S = 300


def sweep_cli(*args: str, cwd: Path, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """``python -m dlscaffold ARGS`` with ``RESUMED`` set: the signalling model fires only once."""
    return run_cli(*args, cwd=cwd, timeout=timeout, env={**os.environ, "RESUMED": "1"})


def write_sweep_file(project: Path, config: str = "signal.yml", **fields: object) -> Path:
    spec = {
        "config": config,
        "name": "damage",
        "sampler": "random",
        "trials": 2,
        "overrides": ["training_params.max_training_epochs=2"],
        "params": {"training_params.lrn_rate": {"float": [1.0e-3, 1.0e-1], "log": True}},
        **fields,
    }
    path = project / "sweep.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep of 2 trials stopped by SIGTERM inside trial 0 (epoch 2 of 2): trial 0 is RUNNING, its
    run interrupted with its position saved; trial 1 was never asked. Tests damage copies of it."""
    project = copy_project("toyproject", tmp_path_factory.mktemp("stopped") / "toy")
    signalling_config(project, 15)  # 12 steps an epoch: the signal comes in epoch 2
    path = write_sweep_file(project)
    result = subprocess.run(
        [sys.executable, "-m", "dlscaffold", "sweep", str(path)],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
        env={k: v for k, v in os.environ.items() if k != "RESUMED"},
    )
    assert result.returncode == 143, result.stderr
    (folder,) = (project / "runs" / "sweeps").iterdir()
    return folder


def copy_of(stopped: Path, tmp_path: Path, name: str | None = None) -> Path:
    folder = tmp_path / "elsewhere" / (name or stopped.name)
    shutil.copytree(stopped, folder, symlinks=True)
    return folder


def state(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def subfolders(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


def trial_run(folder: Path, number: int) -> Path:
    (run,) = [p for p in folder.iterdir() if p.name.endswith(f"_trial{number}")]
    return run


def assert_refused(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 2 and one line, ``error: ...``, holding each of ``expected``; returns it."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert all(text in errors[0] for text in expected), errors[0]
    return errors[0]


def assert_completed(folder: Path, result: subprocess.CompletedProcess) -> dict:
    """The resume ended the sweep: both trials complete, trial 0 in the run folder it began in."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    done = state(folder)
    assert done["status"] == "completed" and [t["state"] for t in done["trials"]] == ["COMPLETE"] * 2
    assert done["trials"][0]["runs"] == [trial_run(folder, 0).name]
    assert len([p for p in folder.iterdir() if (p / "run.json").is_file()]) == 2  # no run left behind
    return done


# ------------------------------------------------------------------- moved folders resume


@pytest.mark.parametrize("how", ["copied", "renamed", "renamed, made before sweep.yml named its study"])
def test_a_moved_sweep_folder_resumes_its_runs_in_place(stopped: Path, tmp_path: Path, how: str) -> None:
    journal = (stopped / "study.journal").read_bytes()
    folder = copy_of(stopped, tmp_path)
    if how != "copied":
        folder = folder.rename(folder.with_name("renamed_sweep"))
    if "before" in how:  # an older sweep: its study is the one its journal holds
        spec = yaml.safe_load((folder / "sweep.yml").read_text())
        del spec["study"]
        (folder / "sweep.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    interrupted = trial_run(folder, 0)
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path)
    assert_completed(folder, result)
    assert f"Resuming {interrupted}" in result.stdout  # the run resumed where it is now
    for number in (0, 1):
        info = json.loads((trial_run(folder, number) / "run.json").read_text())
        assert info["status"] == "completed" and info["sweep"]["dir"] == str(folder)
    assert (stopped / "study.journal").read_bytes() == journal  # the original is left as it was
    assert state(stopped)["status"] == "interrupted" and not list(stopped.glob("*_trial1"))


# ----------------------------------------------------------------------- the study journal


def test_a_journal_whose_last_record_was_cut_off_is_healed(stopped: Path, tmp_path: Path) -> None:
    folder = copy_of(stopped, tmp_path)
    journal = folder / "study.journal"
    data = journal.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1  # the last record
    journal.write_bytes(data[: start + 20])  # cut inside it, as a crash while writing it leaves it
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path)
    assert_completed(folder, result)
    assert "its last record was cut off" in result.stdout
    assert (folder / "study.journal.partial").read_bytes() == data[start : start + 20]  # kept, not lost
    assert all(json.loads(line)["op_code"] >= 0 for line in journal.read_text().splitlines())


def test_a_journal_record_without_its_line_end_is_completed(stopped: Path, tmp_path: Path) -> None:
    folder = copy_of(stopped, tmp_path)
    journal = folder / "study.journal"
    journal.write_bytes(journal.read_bytes().rstrip(b"\n"))
    records = len(journal.read_bytes().splitlines())
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path)
    assert_completed(folder, result)
    assert "the line end is added" in result.stdout
    assert len(journal.read_bytes().splitlines()) > records  # every record kept, the later ones after it


@pytest.mark.parametrize("where", ["replaced", "appended"])
def test_a_journal_holding_garbage_is_one_line_and_left_as_it_is(stopped: Path, tmp_path: Path, where: str) -> None:
    folder = copy_of(stopped, tmp_path)
    journal = folder / "study.journal"
    garbage = bytes(range(256)) * 4
    valid = journal.read_bytes()
    journal.write_bytes(valid + garbage if where == "appended" else garbage)
    before = journal.read_bytes()
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    line = assert_refused(result, str(journal))
    if where == "appended":
        assert f"cut the file to its first {len(valid)} bytes" in line
    else:
        assert "not an Optuna journal" in line
    assert journal.read_bytes() == before and not (folder / "study.journal.partial").exists()
    assert subfolders(folder) == subfolders(stopped)


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_a_lost_journal_of_a_sweep_that_ran_trials_is_one_line(stopped: Path, tmp_path: Path, damage: str) -> None:
    folder = copy_of(stopped, tmp_path)
    journal = folder / "study.journal"
    if damage == "empty":
        journal.write_bytes(b"")
    else:
        journal.unlink()
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    assert_refused(result, f"{journal} is {damage}", "the sweep ran trials", "dlscaffold sweep SWEEP.yml")
    assert journal.exists() == (damage == "empty") and subfolders(folder) == subfolders(stopped)


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_a_lost_journal_of_a_sweep_that_ran_no_trial_is_made_again(tmp_path: Path, damage: str) -> None:
    """The sweep stopped between making its folder and its study: nothing is lost by making it now."""
    from dlscaffold.experiments import sweep

    project = copy_project("toyproject", tmp_path / "toy")
    folder = sweep.create(write_sweep_file(project, "config.yml"), None, print).folder
    journal = folder / "study.journal"
    if damage == "empty":
        journal.write_bytes(b"")
    else:
        journal.unlink()
    (folder / "sweep.json").unlink()
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{journal} is {damage} and no trial has run" in result.stdout
    done = state(folder)
    assert done["status"] == "completed" and [t["state"] for t in done["trials"]] == ["COMPLETE"] * 2


def test_a_journal_that_is_a_link_to_dev_zero_is_refused_before_it_is_read(stopped: Path, tmp_path: Path) -> None:
    folder = copy_of(stopped, tmp_path)
    journal = folder / "study.journal"
    journal.unlink()
    journal.symlink_to("/dev/zero")
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    assert_refused(result, str(journal), "a character device, not a regular file")
    assert os.readlink(journal) == "/dev/zero"


# -------------------------------------------------------------- the folder's other files


def damage_file(folder: Path, name: str, how: str) -> None:
    path = folder / name
    if how == "missing":
        path.unlink()
    elif how == "unparsable":
        path.write_text("trials: [1, 2\nparams: {")
    elif how == "not a mapping":
        path.write_text("- just\n- a list\n")
    elif how == "a folder":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir()
    else:  # a file where a folder belongs
        shutil.rmtree(path)
        path.write_text("not a folder\n")


@pytest.mark.parametrize(
    ("name", "how", "expected"),
    [
        ("sweep.yml", "missing", "put back the sweep file"),
        ("sweep.yml", "unparsable", "invalid YAML"),
        ("sweep.yml", "not a mapping", "found a list"),
        ("config.yml", "missing", "not found"),
        ("config.yml", "unparsable", "invalid YAML"),
        ("config.yml", "not a mapping", "found a list"),
        ("trials", "a file", "found a file; expected the folder of the trials' locks"),
        ("sweep.json", "a folder", "found a folder; expected the sweep's state file"),
    ],
)
def test_a_damaged_file_of_the_sweep_folder_is_one_line(
    stopped: Path, tmp_path: Path, name: str, how: str, expected: str
) -> None:
    folder = copy_of(stopped, tmp_path)
    damage_file(folder, name, how)
    journal, folders = (folder / "study.journal").read_bytes(), subfolders(folder)
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    assert_refused(result, str(folder / name), expected)
    assert (folder / "study.journal").read_bytes() == journal and subfolders(folder) == folders


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"trials": "many"}, "trials: found 'many'"), ({"sampler": "gird"}, "sampler: found 'gird'")],
)
def test_a_sweep_yml_with_a_bad_value_is_one_line(stopped: Path, tmp_path: Path, change: dict, expected: str) -> None:
    folder = copy_of(stopped, tmp_path)
    spec = yaml.safe_load((folder / "sweep.yml").read_text())
    (folder / "sweep.yml").write_text(yaml.safe_dump({**spec, **change}, sort_keys=False))
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    assert_refused(result, str(folder / "sweep.yml"), expected, "put back a sound copy")


@pytest.mark.parametrize("damage", ["garbage", "a link to /dev/zero"])
def test_sweep_json_is_written_again_from_the_study(stopped: Path, tmp_path: Path, damage: str) -> None:
    folder = copy_of(stopped, tmp_path)
    path = folder / "sweep.json"
    if damage == "garbage":
        path.write_bytes(b"\x00{not json")
    else:
        path.unlink()
        path.symlink_to("/dev/zero")
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path)
    assert_completed(folder, result)
    assert not path.is_symlink()


@pytest.mark.parametrize("damage", ["garbage", "no sweep record"])
def test_a_stopped_trial_whose_run_json_is_damaged_is_one_line_and_no_new_run(
    stopped: Path, tmp_path: Path, damage: str
) -> None:
    folder = copy_of(stopped, tmp_path)
    info = trial_run(folder, 0) / "run.json"
    info.write_text("{garbage" if damage == "garbage" else json.dumps({"status": "interrupted"}))
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    assert_refused(result, str(info), "trial 0", "put back a sound run.json", "move")
    assert subfolders(folder) == subfolders(stopped)  # no new run folder for trial 0


def test_a_run_the_study_does_not_know_is_one_line(stopped: Path, tmp_path: Path) -> None:
    """A journal that lost trial 0's records while its run folder stayed: never run trial 0 again
    with other params into that folder."""
    folder = copy_of(stopped, tmp_path)
    journal = folder / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0])  # the study alone: its trials' records are lost
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path, timeout=REFUSAL_GUARD_S)
    assert_refused(result, str(trial_run(folder, 0)), "records trial 0", "has no such trial")
    assert subfolders(folder) == subfolders(stopped)


def test_a_stale_journal_lock_left_by_a_dead_process_is_removed(stopped: Path, tmp_path: Path) -> None:
    folder = copy_of(stopped, tmp_path)
    lock = folder / "study.journal.lock"
    lock.symlink_to(folder / "study.journal")
    os.utime(lock, (1, 1), follow_symlinks=False)  # left long ago
    result = sweep_cli("sweep", "--resume", str(folder), cwd=tmp_path)
    assert_completed(folder, result)
    assert "a lock left" in result.stdout and not os.path.lexists(lock)


# ------------------------------------------------------------------------- the sweep file


def test_a_sweep_file_that_is_not_a_mapping_is_one_line(toy: Path) -> None:
    (toy / "list.yml").write_text("- config.yml\n")
    result = sweep_cli("sweep", "list.yml", cwd=toy, timeout=REFUSAL_GUARD_S)
    assert_refused(result, "list.yml: found a list; expected a sweep file")
    assert not (toy / "runs").exists()


def test_a_sweep_file_that_is_a_link_to_dev_zero_is_one_line(toy: Path) -> None:
    (toy / "zero.yml").symlink_to("/dev/zero")
    result = sweep_cli("sweep", "zero.yml", cwd=toy, timeout=REFUSAL_GUARD_S)
    assert_refused(result, "zero.yml: found a character device")
    assert not (toy / "runs").exists()
