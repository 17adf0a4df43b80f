"""Validation and checkpoints by training steps (``val_every: {steps: N}``, ``save_every: {steps: N}``),
written as a user runs them: validation rows at steps N, 2N, ... mid-epoch; a stop between two
validations resumes to the same rows; early stopping counts validations; a step checkpoint resumes a
killed run; malformed intervals are one-line config errors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_project, only_run, run_cli, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")
EPOCHS = 3  # 180 training points in batches of 18: 10 steps an epoch, 30 in all
VALIDATED = [7, 14, 21, 28]  # val_every: {steps: 7}; none added at the end (step 30)

# Appended to the toy project's models.py: a frozen pass-through model that sends its own process
# ``signum`` during global step ``at`` (the steps done, as {step: trainer} reads it). $NO_STOP: never.
STOPPER = """

class StopAt(nn.Module):
    def __init__(self, at: int, signum: int = 15):
        super().__init__()
        self.at, self.signum, self.fired = at, signum, False

    def forward(self, features, step):
        import os

        if int(step) == self.at and not self.fired and not os.environ.get("NO_STOP"):
            self.fired = True
            os.kill(os.getpid(), self.signum)
        return {"features": features}


_before_stopper = get_ref_model_dict


def get_ref_model_dict():
    return {**_before_stopper(), "StopAt": StopAt}
"""
# Appended to training_utils.py: an eval that never changes, to monitor for early stopping.
CONSTANT_EVAL = """

def constant(class_logits):
    return class_logits.new_zeros(class_logits.shape[0])


_before_constant = get_project_loss_and_eval_dict


def get_project_loss_and_eval_dict():
    losses, evals = _before_constant()
    return losses, {**evals, "Constant": constant}
"""


def weights(run: Path, epoch: int = EPOCHS) -> dict[str, dict[str, torch.Tensor]]:
    return {m: torch.load(run / "checkpoints" / f"{m}_{epoch:06d}.pt", weights_only=True) for m in MODELS}


def val_rows(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if r["split"] == "val"]


def trainer_state(run: Path) -> tuple[str, dict]:
    (path,) = (run / "checkpoints").glob("trainer_*.pt")  # only the newest is kept
    return path.name, torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The toy project (dropout on: a resume must restore the RNG exactly) with ``StopAt`` in front of
    the encoder (off: ``at: -1``); ``config.yml``: batch 18, 3 epochs, ``val_every: {steps: 7}``."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("steps") / "toy")
    with open(toy / "models.py", "a") as fh:
        fh.write(STOPPER)
    with open(toy / "training_utils.py", "a") as fh:
        fh.write(CONSTANT_EVAL)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "StopAt"}
    stopper = {"train": 0, "init_args": {"at": -1}, "inputs": {"features": "dataset", "step": "trainer"}}
    write_config(
        toy,
        "config.yml",
        info_flow={"StopAt": stopper, **flow},
        dataloading_params__batch_size=18,
        training_params__max_training_epochs=EPOCHS,
        training_params__val_every={"steps": 7},
        training_params__log_every=1,
    )
    return toy


@pytest.fixture(scope="module")
def reference(project: Path, tmp_path_factory) -> Path:
    """An uninterrupted run of ``config.yml``."""
    logs = tmp_path_factory.mktemp("reference")
    assert main(["train", str(project / "config.yml"), f"logging_params.logging_dir={logs}"]) == 0
    return only_run(logs)


def stop_config(project: Path, name: str, at: int, signum: int, **changes: object) -> Path:
    raw = yaml.safe_load((project / "config.yml").read_text())
    stopper = {**raw["info_flow"]["StopAt"], "init_args": {"at": at, "signum": int(signum)}}
    return write_config(project, name, info_flow__StopAt=stopper, **changes)


def assert_same_weights(run: Path, reference: Path) -> None:
    for model, state in weights(reference).items():
        ours = weights(run)[model]
        assert all(torch.equal(ours[k], state[k]) for k in state), model


def test_val_every_steps_validates_after_steps_7_14_21_28_and_logs_one_train_row_per_epoch(reference: Path) -> None:
    rows = read_metrics(reference)
    assert [(r["split"], r["step"]) for r in rows] == [
        ("val", 7),
        ("train", 10),
        ("val", 14),
        ("train", 20),
        ("val", 21),
        ("val", 28),
        ("train", 30),
    ]
    assert [r["epoch"] for r in rows if r["split"] == "train"] == [1, 2, 3]
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [1, 2, 3, 3]  # the epoch each ran in
    losses = {"Classifier/ce", "Decoder/reconstruction", "Classifier/accuracy"}
    assert all(losses <= set(r) for r in rows if r["split"] == "val")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(reference))
    events.Reload()
    assert [e.step for e in events.Scalars("val/Classifier/ce")] == VALIDATED
    assert [e.step for e in events.Scalars("train/Classifier/ce")] == [10, 20, 30]


def test_sigterm_between_two_validations_then_resume_gives_the_same_rows_and_weights(
    project: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = stop_config(project, "term.yml", 16, signal.SIGTERM)  # during step 17: between 14 and 21
    monkeypatch.delenv("NO_STOP", raising=False)
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path}"]) == 128 + signal.SIGTERM
    run = only_run(tmp_path)
    assert [r["step"] for r in val_rows(run)] == [7, 14]
    name, state = trainer_state(run)
    assert state["step"] == 17, name  # the exact position, mid-epoch 2
    monkeypatch.setenv("NO_STOP", "1")
    assert main(["train", "--resume", str(run), "--project", str(project)]) == 0
    assert val_rows(run) == val_rows(reference)  # every value, bitwise
    assert read_metrics(run) == read_metrics(reference)
    assert_same_weights(run, reference)


def test_early_stopping_patience_counts_validations(project: Path, tmp_path: Path, capsys) -> None:
    raw = yaml.safe_load((project / "config.yml").read_text())
    evals = {**raw["info_flow"]["Classifier"]["evals"], "Constant": {"inputs": {"class_logits": "Classifier"}}}
    config = write_config(
        project,
        "patience.yml",
        info_flow__Classifier__evals=evals,
        training_params__monitor="Classifier/Constant",
        training_params__monitor_mode="max",
        training_params__early_stopping_patience=2,
    )
    capsys.readouterr()
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    run = only_run(tmp_path)
    # step 7 sets the best; 14 and 21 do not improve on it: two validations without improvement
    assert [r["step"] for r in val_rows(run)] == [7, 14, 21]
    assert all(r["Classifier/Constant"] == 0.0 for r in val_rows(run))
    assert "Early stopping" in out, out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert max(e.step for e in events.Scalars("train_step/Classifier/ce")) == 21  # no step after it


def test_save_every_steps_leaves_a_mid_epoch_checkpoint_that_resumes_a_killed_run(
    project: Path, reference: Path, tmp_path: Path
) -> None:
    # killed during step 9: after the checkpoint of step 5 and the validation of step 7
    config = stop_config(project, "kill.yml", 8, signal.SIGKILL, training_params__save_every={"steps": 5})
    env = {k: v for k, v in os.environ.items() if k != "NO_STOP"}
    killed = run_cli("train", str(config), f"logging_params.logging_dir={tmp_path}", cwd=project, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(tmp_path)
    name, state = trainer_state(run)
    assert name.startswith("trainer_000000_") and state["step"] == 5, name  # inside epoch 1, after step 5
    assert [r["step"] for r in val_rows(run)] == [7]  # written after the checkpoint: resume drops it

    resumed = run_cli(
        "train", "--resume", str(run), "--project", str(project), cwd=project, env={**env, "NO_STOP": "1"}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(run) == read_metrics(reference)
    assert_same_weights(run, reference)


@pytest.mark.parametrize("interval", [{"steps": 0}, {"step": 3}], ids=["zero", "misspelt"])
def test_a_malformed_step_interval_is_one_line_and_exit_2(toy: Path, capsys, interval: dict) -> None:
    config = write_config(toy, "bad.yml", training_params__val_every=interval)
    capsys.readouterr()
    assert main(["train", str(config)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and "training_params.val_every" in line, line
    assert not (toy / "runs").exists()
