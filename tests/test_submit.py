"""Cluster jobs: ``dlscaffold submit`` through submitit (``--cluster local`` runs the jobs here), the
stop signals a scheduler sends, ``SLURM_JOB_END_TIME``, requeues that resume exactly, arrays for
seed groups and sweep workers, and the batch script written for SLURM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import signalling_config, write_config
from test_trustworthy import run_dirs_in

from dlscaffold.cli import main
from dlscaffold.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")

# Appended to the toy project's models.py: a frozen pass-through that sleeps a little per step (the
# SLOW_S environment variable changes how long: the numbers never depend on it).
SLOW_MODEL = """

import os as _os
import time as _time


class Slow(nn.Module):
    def __init__(self, delay: float = 0.05):
        super().__init__()
        self.delay = delay

    def forward(self, features):
        _time.sleep(float(_os.environ.get("SLOW_S", self.delay)))
        return {"features": features}


_fast_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_fast_models(), "Slow": Slow}
"""


def slow_config(project: Path, name: str = "slow.yml", delay: float = 0.05, **changes: object) -> Path:
    """The toy project's config with a ``Slow`` model (``delay`` seconds a step) feeding the Encoder."""
    with open(project / "models.py", "a") as fh:
        fh.write(SLOW_MODEL)
    flow = json.loads(json.dumps(__import__("yaml").safe_load((project / "config.yml").read_text())["info_flow"]))
    flow["Encoder"]["inputs"] = {"features": "Slow"}
    flow = {"Slow": {"train": 0, "init_args": {"delay": delay}, "inputs": {"features": "dataset"}}, **flow}
    return write_config(project, name, info_flow=flow, **changes)


def last_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    epochs = max(int(p.stem.rpartition("_")[2]) for p in (run / "checkpoints").glob("Encoder_0*.pt"))
    return {m: torch.load(run / "checkpoints" / f"{m}_{epochs:06d}.pt", weights_only=True) for m in MODELS}


def assert_same_run(run: Path, reference: Path) -> None:
    """The same metrics.jsonl values and bitwise the same final weights."""
    assert read_metrics(run) == read_metrics(reference)
    ours, theirs = last_weights(run), last_weights(reference)
    for name, state in theirs.items():
        assert all(torch.equal(ours[name][key], tensor) for key, tensor in state.items()), name


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


# ------------------------------------------------------------------------------ stops in a plain train


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGHUP, signal.SIGUSR1])
def test_a_schedulers_signal_saves_the_exact_position_and_resume_continues_bitwise(
    toy: Path, tmp_path: Path, signum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = signalling_config(toy, 5, signum)  # 12 steps an epoch: mid-epoch 1
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.delenv("RESUMED")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 128 + signum
    (run,) = run_dirs_in(tmp_path / "stopped")
    assert run_json(run)["status"] == "interrupted"
    state = torch.load(next((run / "checkpoints").glob("trainer_*.pt")), weights_only=True)
    assert state["position"]["batches"] == 6  # steps 0..5: the one the signal came in was finished, then saved
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", "--resume", str(run)]) == 0
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert_same_run(run, reference)


def test_slurm_job_end_time_stops_a_plain_train_by_itself_with_its_position_saved(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = slow_config(toy, training_params__stop_before_end=0, training_params__max_training_epochs=3)  # 36 steps
    monkeypatch.setenv("SLOW_S", "0")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.setenv("SLOW_S", "0.1")  # about 4 s of steps; the job ends 2 s from now
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 2))
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 124
    (run,) = run_dirs_in(tmp_path / "stopped")
    assert run_json(run)["status"] == "interrupted"
    assert "SLURM_JOB_END_TIME" in capsys.readouterr().out
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    monkeypatch.setenv("SLOW_S", "0")
    assert main(["train", "--resume", str(run)]) == 0
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert_same_run(run, reference)
