"""``dlscaffold train --seeds``: a seed group of runs sharing one split, made once before any run
starts, the same way in this process and in worker processes; the worker processes' own entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
import yaml
from conftest import HANG_GUARD_S, run_cli, run_dirs

from dlscaffold.cli import app, main
from dlscaffold.experiments.engine import TrainTask
from dlscaffold.experiments.groups import group_info

ONE_EPOCH = "training_params.max_training_epochs=1"


def group_runs(project: Path, logs: str = "runs") -> list[Path]:
    """The run folders of a logging folder, in the seeds' order (not ``groups/``: the groups' splits)."""
    folder = project / logs
    runs = [p for p in folder.iterdir() if (p / "run.json").is_file()] if folder.is_dir() else []
    return sorted(runs, key=lambda run: json.loads((run / "run.json").read_text()).get("group", {}).get("seed", 0))


def split_path(run: Path) -> str | None:
    return yaml.safe_load((run / "config.yml").read_text())["dataloading_params"]["idx_dict_path"]


def assert_same(ours: object, theirs: object, where: str) -> None:
    """Equal values, tensors bitwise (a checkpoint's nested dicts and lists followed)."""
    if isinstance(ours, torch.Tensor):
        assert isinstance(theirs, torch.Tensor) and ours.dtype == theirs.dtype and torch.equal(ours, theirs), where
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), where
        for key, value in ours.items():
            assert_same(value, theirs[key], f"{where}/{key}")
    elif isinstance(ours, (list, tuple)):
        assert isinstance(theirs, (list, tuple)) and len(ours) == len(theirs), where
        for index, (mine, yours) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(mine, yours, f"{where}[{index}]")
    else:
        assert ours == theirs, where


def assert_bitwise_equal(run: Path, other: Path) -> None:
    """Every checkpoint of the two runs (weights, optimizer and RNG states) the same, bitwise."""
    names = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert names and names == sorted(p.name for p in (other / "checkpoints").glob("*.pt"))
    for name in names:  # our own runs' files: the trainer state holds RNG states as numpy arrays
        ours, theirs = (torch.load(r / "checkpoints" / name, weights_only=False) for r in (run, other))
        assert_same(ours, theirs, f"{run.name}/{name}")


def test_a_group_is_one_split_made_up_front_and_the_same_runs_in_this_process_and_in_two_workers(toy: Path) -> None:
    for workers in (1, 2):
        args = ("train", "config.yml", ONE_EPOCH, f"logging_params.logging_dir=w{workers}", "--seeds", "1,2,3")
        result = run_cli(*args, "--workers", str(workers), cwd=toy)
        assert result.returncode == 0, result.stderr
        assert f"w{workers} --group" in result.stdout  # how to see the group's statistics
        if workers == 2:
            assert "[seed 2] Logging and Model Saving Directory: " in result.stdout  # each worker's lines, prefixed
    texts = set()
    for workers in (1, 2):
        runs = group_runs(toy, f"w{workers}")
        assert [run.name.rsplit("_", 1)[1] for run in runs] == ["seed1", "seed2", "seed3"]
        infos = [json.loads((run / "run.json").read_text()) for run in runs]
        (group_id,) = {info["group"]["id"] for info in infos}
        assert [info["group"]["seed"] for info in infos] == [1, 2, 3] and {i["group"]["size"] for i in infos} == {3}
        split = toy / f"w{workers}" / "groups" / group_id / "idx_dict.json"  # made before any run, not a run folder
        assert {split_path(run) for run in runs} == {str(split)}  # every run reads it, the first seed's included
        texts |= {split.read_text(), *((run / "idx_dict.json").read_text() for run in runs)}
        seeds = [yaml.safe_load((r / "config.yml").read_text())["training_params"]["seed"] for r in runs]
        assert seeds == [1, 2, 3]
    assert len(texts) == 1  # one split in both modes
    for here, there in zip(group_runs(toy, "w1"), group_runs(toy, "w2"), strict=True):
        assert_bitwise_equal(here, there)
    # the group's split and its first run are those of a plain run with the first seed
    args = ("train", "config.yml", ONE_EPOCH, "logging_params.logging_dir=plain", "training_params.seed=1")
    result = run_cli(*args, cwd=toy)
    assert result.returncode == 0, result.stderr
    (plain,) = group_runs(toy, "plain")
    assert (plain / "idx_dict.json").read_text() in texts
    assert_bitwise_equal(plain, group_runs(toy, "w1")[0])


def test_vary_split_lets_the_seed_change_the_split_and_a_named_split_serves_every_run(toy: Path) -> None:
    args = ("train", "config.yml", ONE_EPOCH, "--seeds", "1,2", "--vary-split")
    assert run_cli(*args, cwd=toy).returncode == 0
    assert len({(run / "idx_dict.json").read_text() for run in run_dirs(toy)}) == 2
    assert not (toy / "runs" / "groups").exists() and {split_path(run) for run in run_dirs(toy)} == {None}
    named = run_dirs(toy)[1] / "idx_dict.json"
    named_split = f"dataloading_params.idx_dict_path={named}"
    args = ("train", "config.yml", ONE_EPOCH, named_split, "logging_params.logging_dir=n", "--seeds", "3,4")
    assert run_cli(*args, cwd=toy).returncode == 0
    runs = group_runs(toy, "n")
    assert len(runs) == 2 and not (toy / "n" / "groups").exists()
    assert {split_path(run) for run in runs} == {str(named)}
    assert {(run / "idx_dict.json").read_text() for run in runs} == {named.read_text()}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--seeds", "1,x"), "--seeds '1,x': expected distinct whole numbers"),
        (("--seeds", "1,1"), "--seeds '1,1': expected distinct whole numbers"),
        (("--seeds", "1,2", "--nproc", "2"), "--seeds cannot be combined with --nproc"),
        (("--seeds", "1,2", "training_params.lrn_rat=1"), "training_params.lrn_rat: unknown key"),
    ],
)
def test_bad_seed_groups_are_one_line_and_train_nothing(toy: Path, args: tuple[str, ...], expected: str) -> None:
    result = run_cli("train", "config.yml", *args, cwd=toy)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and expected in errors[0], result.stderr
    assert not run_dirs(toy)


def worker(task: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlscaffold.experiments.worker", task],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )


def test_the_worker_entry_runs_a_task_given_as_a_file_or_as_json(toy: Path, tmp_path: Path) -> None:
    task = TrainTask(
        config=toy / "config.yml", overrides=[ONE_EPOCH], run_info=group_info("g1", 7, 1), run_notes_suffix="seed7"
    )
    (tmp_path / "task.json").write_text(task.to_json())
    result = worker(str(tmp_path / "task.json"), toy)
    assert result.returncode == 0, result.stderr
    (run,) = group_runs(toy)
    assert run.name.endswith("_toy_seed7") and json.loads((run / "run.json").read_text())["group"]["id"] == "g1"
    resumed = worker(TrainTask(resume=run).to_json(), toy)  # a completed run: nothing left to train
    assert resumed.returncode == 0, resumed.stderr
    for bad, expected in (('{"kind": "nothing"}', "error: worker: not a task"), ("missing.json", "cannot read")):
        result = worker(bad, toy)
        assert result.returncode == 2 and expected in result.stderr, result.stderr


def test_train_has_no_hidden_worker_options(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    assert not [param.name for param in command.params if getattr(param, "hidden", False)]
    assert not {"group", "sweep_trial"} & {param.name for param in command.params}
    assert main(["train", "--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  --")]
    assert listed == [
        "--project", "--resume", "--dev", "--no-save", "--debug", "--device", "--nproc", "--seeds", "--workers",
        "--vary-split", "--help",
    ]  # fmt: skip
    (tmp_path / "config.yml").write_text("")
    assert main(["train", str(tmp_path / "config.yml"), "--group", "x:1:2"]) == 2
    assert "No such option: --group" in capsys.readouterr().err
