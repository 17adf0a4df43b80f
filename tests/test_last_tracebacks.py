"""Inputs that used to end in a traceback, a hang or silent acceptance: each is one `error:` line
through the real CLI, exit code 2, before anything is built where that can be known."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import copy_project, run_cli, run_dirs, write_config

from dlscaffold.records.checkpoint import trainer_state_problem


def one_error(result: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a command that failed with exit code 2 and no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# ------------------------------------------------------------------------- 1. trainer checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run of the toy project (its run folder)."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("trained") / "toy")
    result = run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    return run


def _drop(key: str):
    return lambda state: state.pop(key)


def _set(key: str, value: object):
    return lambda state: state.update({key: value})


def _torch_rng(change):
    return lambda state: state["rng"].update(torch=change(state["rng"]["torch"]))


DAMAGED = {
    "no optimizers": (_drop("optimizers"), "the trainer state has no 'optimizers'"),
    "no rng": (_drop("rng"), "the trainer state has no 'rng'"),
    "epoch a string": (_set("epoch", "three"), "the trainer state's 'epoch' holds 'three'"),
    "torch RNG of the wrong size": (_torch_rng(lambda t: t[:100]), "'rng.torch' is not an RNG state"),
    "torch RNG of the wrong dtype": (_torch_rng(lambda t: t.float()), "'rng.torch' is not an RNG state"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_resume_from_a_damaged_trainer_state_names_the_file_and_the_key(trained, tmp_path, case) -> None:
    run = shutil.copytree(trained, tmp_path / "run")
    (path,) = (run / "checkpoints").glob("trainer_*.pt")
    state = torch.load(path, weights_only=True)
    damage, expected = DAMAGED[case]
    damage(state)
    torch.save(state, path)
    before = (run / "run.json").read_text()

    project = trained.parent.parent  # the copy lies outside its project: name it
    args = ("--resume", str(run), "--project", str(project), "training_params.max_training_epochs=2")
    line = one_error(run_cli("train", *args, cwd=tmp_path))

    assert line.startswith(f"error: {path}: ") and expected in line
    assert path.is_file() and (run / "run.json").read_text() == before  # refused before anything was touched


def test_every_key_resuming_reads_is_checked(trained) -> None:
    (path,) = (trained / "checkpoints").glob("trainer_*.pt")
    state = torch.load(path, weights_only=True)
    assert trainer_state_problem(state) is None
    numpy_keys = {**state["rng"]["numpy"], "keys": state["rng"]["numpy"]["keys"][:10]}
    for changed, expected in [
        ({"epoch": 1.5}, "'epoch' holds 1.5"),
        ({"step": -1}, "'step' holds -1"),
        ({"schedulers": []}, "'schedulers' holds list"),
        ({"monitor": 3}, "'monitor' holds 3"),
        ({"position": {"batches": "x"}}, "'position' holds dict"),
        ({"rng_ranks": [state["rng"], {}]}, "'rng_ranks[1]' has no 'torch' RNG state"),
        ({"rng": {**state["rng"], "numpy": numpy_keys}}, "'rng.numpy' is not an RNG state"),
        ({"rng": {**state["rng"], "python": (3, (1, 2), None)}}, "'rng.python' is not an RNG state"),
    ]:
        problem = trainer_state_problem({**state, **changed})
        assert problem is not None and expected in problem


# ------------------------------------------------------------------------------ 2. __len__


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise OSError('the data disk is gone')", "OSError: the data disk is gone"),
        ("return -3", "ValueError: __len__() should return >= 0"),
        ("return 2.5", "TypeError: 'float' object cannot be interpreted as an integer"),
    ],
)
def test_a_dataset_length_that_fails_is_one_line(toy: Path, body: str, expected: str) -> None:
    edit(toy / "dataloader.py", "        return len(self.labels)", f"        {body}")
    line = one_error(run_cli("train", "config.yml", cwd=toy))
    assert line.startswith("error: CustomDataSet.__len__ failed: ") and expected in line
    assert run_dirs(toy) == []


# ------------------------------------------------------------------------ 3. the project's files


@pytest.mark.parametrize("name", ["models.py", "dataloader.py", "training_utils.py"])
def test_a_syntax_error_in_the_project_is_file_line_and_message(toy: Path, name: str) -> None:
    path = toy / name
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, "x = (1,", ""]))
    line = one_error(run_cli("train", "config.yml", cwd=toy))
    assert line.startswith(f"error: {path}:{len(lines) + 1}: '(' was never closed")


def test_an_exception_while_importing_the_project_names_the_file_and_line(toy: Path) -> None:
    lines = (toy / "models.py").read_text().splitlines()
    (toy / "models.py").write_text("\n".join([*lines, "import no_such_package_here", ""]))
    line = one_error(run_cli("train", "config.yml", cwd=toy))
    assert line.startswith(f"error: {toy / 'models.py'}:{len(lines) + 1}: importing models.py failed: ")
    assert "ModuleNotFoundError: No module named 'no_such_package_here'" in line


# ---------------------------------------------------------------------------- 4. config paths


def run_briefly(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI with a timeout far shorter than run_cli's: a command that blocks fails the test."""
    return run_cli(*args, cwd=cwd, timeout=60)


def test_a_fifo_as_the_config_is_refused_without_opening_it(toy: Path) -> None:
    os.mkfifo(toy / "pipe.yml")  # opening it would block until a writer came
    line = one_error(run_briefly("train", "pipe.yml", cwd=toy))
    assert (
        line
        == "error: pipe.yml: found a named pipe (FIFO), not a regular file; expected a config file such as config.yml"
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_as_the_config_is_refused_without_reading_it(toy: Path) -> None:
    line = one_error(run_briefly("train", "/dev/zero", cwd=toy))
    assert line.startswith("error: /dev/zero: found a character device, not a regular file")


def test_a_folder_as_the_config_is_one_line(toy: Path) -> None:
    line = one_error(run_briefly("train", str(toy), cwd=toy))
    assert line == f"error: {toy}: found a folder; expected a config file, e.g. {toy / 'config.yml'}"


def test_a_fifo_as_idx_dict_path_is_refused_without_opening_it(toy: Path) -> None:
    os.mkfifo(toy / "split.json")
    line = one_error(run_briefly("train", "config.yml", "dataloading_params.idx_dict_path=split.json", cwd=toy))
    assert line.startswith(f"error: dataloading_params.idx_dict_path: '{toy / 'split.json'}' is a named pipe")


# ------------------------------------------------------------------------------ 5. logging_dir


@pytest.mark.parametrize("logging_dir", ["models.py", "models.py/runs"])
def test_a_logging_dir_at_or_below_a_file_is_refused_before_building(toy: Path, logging_dir: str) -> None:
    line = one_error(run_cli("train", "config.yml", f"logging_params.logging_dir={logging_dir}", cwd=toy))
    assert line == (
        f"error: logging_params.logging_dir: cannot create run folders in '{toy / logging_dir}': "
        f"'{toy / 'models.py'}' is a file, not a folder; choose a folder you can write to"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_logging_dir_is_refused_before_building(toy: Path) -> None:
    (toy / "locked").mkdir(mode=0o555)
    try:
        line = one_error(run_cli("train", "config.yml", "logging_params.logging_dir=locked/runs", cwd=toy))
    finally:
        (toy / "locked").chmod(0o755)
    assert f"'{toy / 'locked'}' is not writable by this user" in line


# ---------------------------------------------------------------------------- 6. sync_batchnorm


def test_sync_batchnorm_with_processes_on_the_cpu_is_refused_before_torchrun_starts(toy: Path) -> None:
    result = run_cli("train", "config.yml", "training_params.sync_batchnorm=true", "--nproc", "2", cwd=toy)
    line = one_error(result)
    assert line.startswith("error: training_params.sync_batchnorm: found true, but 2 of the 2 processes")
    assert "SyncBatchNorm needs CUDA" in line and "set sync_batchnorm: false or train on GPUs" in line
    assert "rank" not in result.stderr  # no process was started


@pytest.mark.parametrize("rank", [0, 1])
def test_each_data_parallel_process_refuses_sync_batchnorm_on_the_cpu(toy: Path, monkeypatch, rank: int) -> None:
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank}.items():
        monkeypatch.setenv(name, str(value))  # what torchrun sets; the check comes before joining the group
    result = run_cli("train", "config.yml", "training_params.sync_batchnorm=true", cwd=toy)
    if rank == 0:
        assert "SyncBatchNorm needs CUDA" in one_error(result)
    else:  # the other processes find the same and say nothing: rank 0 says it
        assert result.returncode == 2 and "error" not in result.stderr and "Traceback" not in result.stderr
    assert run_dirs(toy) == []


# ------------------------------------------------------------------------------ 7. test_indices


@pytest.mark.parametrize(
    ("indices", "expected"),
    [("[3, 7, 3]", "index 3 appears twice"), ("[0, 240]", "index 240 is not a dataset index")],
)
def test_test_indices_that_do_not_fit_the_dataset_are_one_line(toy: Path, indices: str, expected: str) -> None:
    with (toy / "dataloader.py").open("a") as fh:
        fh.write(f"\n    def test_indices(self):\n        return {indices}\n")
    line = one_error(run_cli("train", "config.yml", cwd=toy))
    assert line.startswith("error: CustomDataSet.test_indices(): the test split does not fit the dataset: ")
    assert expected in line
    assert run_dirs(toy) == []


# ------------------------------------------------------------------------- 8. labels and classes


def test_a_label_outside_the_classes_is_named_before_training(toy: Path) -> None:
    edit(toy / "dataloader.py", '"class_idx": self.labels[i]', '"class_idx": self.labels[i] + 6')  # 6, 7, 8
    write_config(toy, "labels.yml", info_flow__Classifier__evals={})
    line = one_error(run_cli("train", "labels.yml", cwd=toy))
    assert line.startswith("error: info_flow.Classifier.losses.MultinomialNLL: class_idx holds ")
    assert "but Classifier outputs 3 classes" in line
    assert run_dirs(toy) == []


def test_a_label_outside_the_classes_met_in_training_is_one_line(toy: Path) -> None:
    edit(toy / "dataloader.py", '"class_idx": self.labels[i]', '"class_idx": 9 if i == 239 else self.labels[i]')
    line = one_error(run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy))
    assert line.startswith("error: epoch 1, step ")
    assert (
        "info_flow.Classifier.losses.MultinomialNLL: the dataset's 'class_idx' holds 9 but Classifier outputs 3 classes"
        in line
    )
    (run,) = run_dirs(toy)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_labels_that_transform_batch_maps_into_the_classes_are_accepted(toy: Path) -> None:
    edit(toy / "dataloader.py", '"class_idx": self.labels[i]', '"class_idx": self.labels[i] + 1')  # 1, 2, 3
    with (toy / "dataloader.py").open("a") as fh:
        fh.write(
            '\n    def transform_batch(self, batch, train):\n        batch["class_idx"] -= 1\n        return batch\n'
        )
    result = run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy)
    assert result.returncode == 0, result.stderr
