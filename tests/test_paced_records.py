"""The best weights and run.json's training time are written at most every few seconds between
checkpoints (``dlscaffold/records/paced.py``): the same files in the end, nothing a resume needs is
ever lost, and whatever ends the run (a signal, a failure) writes the best weights still waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import only_run, run_cli, signalling_config

import dlscaffold.records.checkpoint as checkpoint
import dlscaffold.records.paced as paced
from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")
PACE = "DLSCAFFOLD_WRITE_EVERY_SECONDS"


def best_files(run: Path) -> dict[str, bytes]:
    return {m: (run / "checkpoints" / f"{m}_best.pt").read_bytes() for m in MODELS}


def best_record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["best"]


def weights(run: Path, epoch: int | str) -> dict[str, dict[str, torch.Tensor]]:
    name = "best" if epoch == "best" else f"{epoch:06d}"
    return {m: torch.load(run / "checkpoints" / f"{m}_{name}.pt", weights_only=True) for m in MODELS}


def same_weights(a: dict, b: dict) -> bool:
    return all(a[m].keys() == b[m].keys() and all(torch.equal(a[m][k], b[m][k]) for k in a[m]) for m in a)


def best_epoch_up_to(run: Path, last: int) -> int:
    """The epoch, among the first ``last``, whose validation had the lowest ``Classifier/ce`` (the toy's monitor)."""
    rows = [r for r in read_metrics(run) if r["split"] == "val" and r["epoch"] <= last]
    return min(rows, key=lambda r: r["Classifier/ce"])["epoch"]


def test_paced_best_weights_are_the_very_files_written_after_every_epoch(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []  # the epoch of every write of the best weights, at once or waited for
    original = checkpoint.write_best
    spy = lambda run_dir, epoch, weights: writes.append(epoch) or original(run_dir, epoch, weights)  # noqa: E731
    monkeypatch.setattr(checkpoint, "write_best", spy)
    monkeypatch.setattr(paced, "write_best", spy)
    runs = {}
    for pace in ("0", "1000"):
        monkeypatch.setenv(PACE, pace)
        writes.clear()
        logs = tmp_path / f"pace_{pace}"
        args = [
            "training_params.max_training_epochs=6",
            "training_params.save_every=100",
            f"logging_params.logging_dir={logs}",
        ]
        assert main(["train", str(toy / "config.yml"), *args]) == 0
        runs[pace] = only_run(logs)
        runs[pace, "writes"] = list(writes)
    improving = runs["0", "writes"]
    assert len(improving) >= 3, improving  # written after every improving epoch
    # paced: the best waiting when the last epoch's checkpoint is saved, then that epoch's (a link to it)
    assert len(runs["1000", "writes"]) <= 2 and runs["1000", "writes"][-1] == improving[-1], runs["1000", "writes"]
    assert best_files(runs["1000"]) == best_files(runs["0"])  # byte for byte
    assert best_record(runs["1000"]) == best_record(runs["0"]) and best_record(runs["0"])["epoch"] == improving[-1]


def test_a_malformed_pace_is_one_line_before_any_run_folder(toy: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PACE, "soon")
    assert main(["train", str(toy / "config.yml")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and PACE in line and "0 or more" in line, line
    assert not (toy / "runs").exists()


@pytest.fixture
def reference(toy: Path, tmp_path: Path) -> Path:
    """The signalling config trained to the end, never signalled, a checkpoint after every epoch."""
    config = signalling_config(toy, 30, signal.SIGTERM)  # batch 16: 12 steps an epoch, step 30 in epoch 3
    env = {**os.environ, "RESUMED": "1", PACE: "0"}
    logs = tmp_path / "reference"
    args = ("training_params.save_every=1", f"logging_params.logging_dir={logs}")
    result = run_cli("train", str(config), *args, cwd=toy, env=env)
    assert result.returncode == 0, result.stderr
    return only_run(logs)


def signalled(toy: Path, tmp_path: Path, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    """The same config with no checkpoint but epoch 0's and the last, the records paced far apart,
    ``signum`` arriving during step 30 (epoch 3)."""
    raw = yaml.safe_load((toy / "signal.yml").read_text())  # written by the reference fixture
    raw["info_flow"]["SignalAt"]["init_args"]["signum"] = int(signum)
    raw["training_params"]["save_every"] = 100
    config = toy / "signalled.yml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "RESUMED"} | {PACE: "1000"}
    logs = tmp_path / "signalled"
    result = run_cli("train", str(config), f"logging_params.logging_dir={logs}", cwd=toy, env=env)
    assert logs.is_dir(), result.stderr
    return result, only_run(logs)


def test_a_signal_writes_the_best_weights_still_waiting(toy: Path, tmp_path: Path, reference: Path) -> None:
    result, run = signalled(toy, tmp_path, signal.SIGTERM)
    assert result.returncode == 143, result.stderr
    best = best_epoch_up_to(reference, 2)  # the best validation before the signal
    assert best_record(run)["epoch"] == best
    assert same_weights(weights(run, "best"), weights(reference, best))


def test_kill_9_loses_only_waiting_best_weights_and_resume_rebuilds_them(
    toy: Path, tmp_path: Path, reference: Path
) -> None:
    result, run = signalled(toy, tmp_path, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL, result.stderr
    # nothing was due since the run began: no best weights on disk, and no best record for them
    assert not list((run / "checkpoints").glob("*_best.pt")) and "best" not in json.loads(
        (run / "run.json").read_text()
    )
    assert not list(run.rglob("*.tmp"))
    env = {**os.environ, "RESUMED": "1", PACE: "1000"}
    resumed = run_cli("train", "--resume", str(run), "--project", str(toy), cwd=toy, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert best_record(run) == best_record(reference)
    assert same_weights(weights(run, "best"), weights(reference, "best"))
    assert read_metrics(run) == read_metrics(reference)
