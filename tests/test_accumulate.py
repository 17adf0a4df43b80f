"""Gradient accumulation (``training_params.accumulate: k``), written as a user runs it: k batches of
size B train like one batch of size k x B (a short last group included, across data-parallel ranks
too); logged losses are per-sample means; a stop or a kill between two batches of a group resumes
bitwise; schedulers count optimizer steps. And ``reduction: sum`` on a loss, checked by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import HANG_GUARD_S, copy_project, only_run, run_cli, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")
EPOCHS = 2  # the toy project has 180 training points: 5 batches of 32 and a short one of 20 an epoch

# Appended to a project's models.py: a frozen pass-through model that sends its own process a signal
# during the ``micro``-th forward pass of global step ``at`` (the step as {step: trainer} reads it), so a
# stop or a kill lands between two batches of one accumulation group. $NO_STOP switches it off.
STOPPER = """

class StopAt(nn.Module):
    def __init__(self, at: int, micro: int = 1, signum: int = 15):
        super().__init__()
        self.at, self.micro, self.signum = at, micro, signum
        self.calls = 0

    def forward(self, features, step):
        import os

        if int(step) == self.at and not os.environ.get("NO_STOP"):
            self.calls += 1
            if self.calls == self.micro:
                os.kill(os.getpid(), self.signum)
        return {"features": features}


_before_stopper = get_ref_model_dict


def get_ref_model_dict():
    return {**_before_stopper(), "StopAt": StopAt}
"""


def train(config: Path, logs: Path, *overrides: str) -> Path:
    """Train in this process; the run folder."""
    assert main(["train", str(config), f"logging_params.logging_dir={logs}", *overrides]) == 0
    return only_run(logs)


def weights(run: Path, epoch: int, models: tuple[str, ...] = MODELS) -> dict[str, dict[str, torch.Tensor]]:
    return {m: torch.load(run / "checkpoints" / f"{m}_{epoch:06d}.pt", weights_only=True) for m in models}


def step_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The per-step scalars TensorBoard holds, ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("train_step/")]
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


def assert_close_weights(run: Path, reference: Path) -> None:
    for model, state in weights(reference, EPOCHS).items():
        ours = weights(run, EPOCHS)[model]
        assert ours.keys() == state.keys(), model
        for key, tensor in state.items():
            assert torch.allclose(ours[key], tensor, atol=1e-6), (model, key, (ours[key] - tensor).abs().max())


def assert_close_rows(rows: list[dict], reference: list[dict]) -> None:
    assert [(r["epoch"], r["split"], r["step"]) for r in rows] == [
        (r["epoch"], r["split"], r["step"]) for r in reference
    ]
    for row, ref in zip(rows, reference, strict=True):
        assert row.keys() == ref.keys(), (row, ref)
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, abs=1e-6), (row["epoch"], row["split"], key)


# ------------------------------------------------------------------ k batches of B = one batch of k x B


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The toy project without dropout (no randomness in a step), trained with plain SGD."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("accumulate") / "toy")
    models = toy / "models.py"
    models.write_text(models.read_text().replace("nn.Dropout(0.1)", "nn.Identity()"))
    write_config(
        toy,
        "config.yml",
        training_params__max_training_epochs=EPOCHS,
        training_params__optimizer={"name": "SGD"},
        training_params__lrn_rate=0.05,
        training_params__log_every=1,
    )
    return toy


@pytest.fixture(scope="module")
def big_batch(plain: Path, tmp_path_factory) -> Path:
    """One process, batch 32, no accumulation: the reference."""
    return train(plain / "config.yml", tmp_path_factory.mktemp("big"), "dataloading_params.batch_size=32")


def test_four_batches_of_8_train_like_one_batch_of_32_with_a_short_last_group(
    plain: Path, big_batch: Path, tmp_path: Path
) -> None:
    # 180 points: 23 batches of 8 (the last holds 4), so each epoch's last group is 3 batches, 20 points
    run = train(plain / "config.yml", tmp_path, "dataloading_params.batch_size=8", "training_params.accumulate=4")
    assert_close_weights(run, big_batch)
    rows, reference = read_metrics(run), read_metrics(big_batch)
    assert [r["step"] for r in reference if r["split"] == "train"] == [6, 12]  # optimizer steps
    assert_close_rows(rows, reference)  # epoch losses: per-sample means over the same points

    ours, theirs = step_scalars(run), step_scalars(big_batch)
    assert "train_step/Classifier/ce" in theirs
    assert ours.keys() == theirs.keys()
    for tag, values in theirs.items():  # log_every 1: one value per optimizer step, never k times a mean
        assert [s for s, _ in ours[tag]] == [s for s, _ in values] == list(range(1, 6 * EPOCHS + 1)), tag
        for (step, value), (_, expected) in zip(ours[tag], values, strict=True):
            assert value == pytest.approx(expected, abs=1e-6), (tag, step)


def test_two_processes_of_batch_4_accumulating_4_train_like_one_process_of_batch_32(
    plain: Path, big_batch: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlscaffold",
            "train",
            str(plain / "config.yml"),
            "--nproc",
            "2",
            f"logging_params.logging_dir={tmp_path}",
            "dataloading_params.batch_size=4",
            "training_params.accumulate=4",
        ],
        cwd=plain,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    assert_close_weights(run, big_batch)
    assert_close_rows(read_metrics(run), read_metrics(big_batch))


# ------------------------------------------------------------------ the scheduler counts optimizer steps


def test_a_step_scheduler_steps_once_per_group(toy: Path) -> None:
    # batch 18: 10 batches an epoch; accumulate 4: groups of 4, 4 and 2 batches, 3 optimizer steps
    scheduler = {"name": "StepLR", "kwargs": {"step_size": 1, "gamma": 0.5}, "interval": "step"}
    config = write_config(
        toy,
        "steplr.yml",
        dataloading_params__batch_size=18,
        training_params__accumulate=4,
        training_params__max_training_epochs=1,
        training_params__lr_scheduler=scheduler,
        training_params__log_every=1,
    )
    run = train(config, toy / "runs")
    (row,) = [r for r in read_metrics(run) if r["split"] == "train"]
    assert row["step"] == 3
    for model in MODELS:
        assert row[f"lr/{model}"] == pytest.approx(0.01 * 0.5**3, rel=1e-9), model
    logged = step_scalars(run)["train_step/lr/Encoder"]
    assert [s for s, _ in logged] == [1, 2, 3]
    assert [v for _, v in logged] == pytest.approx([0.005, 0.0025, 0.00125], rel=1e-6)


# ------------------------------------------------------------------ stops and kills inside a group


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory) -> Path:
    """The toy project (dropout on: a resume must restore the RNG exactly) with ``StopAt`` in front of
    the encoder; ``config.yml`` trains 3 epochs of 6 groups (23 batches of 8, accumulate 4)."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("stoppable") / "toy")
    with open(toy / "models.py", "a") as fh:
        fh.write(STOPPER)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "StopAt"}
    stopper = {"train": 0, "init_args": {"at": -1}, "inputs": {"features": "dataset", "step": "trainer"}}
    write_config(
        toy,
        "config.yml",
        info_flow={"StopAt": stopper, **flow},
        dataloading_params__batch_size=8,
        training_params__accumulate=4,
        training_params__max_training_epochs=3,
        training_params__log_every=1,
    )
    return toy


@pytest.fixture(scope="module")
def uninterrupted(stoppable: Path, tmp_path_factory) -> Path:
    return train(stoppable / "config.yml", tmp_path_factory.mktemp("uninterrupted"))


def stop_config(project: Path, name: str, at: int, micro: int, signum: int, **changes: object) -> Path:
    raw = yaml.safe_load((project / "config.yml").read_text())
    stopper = {**raw["info_flow"]["StopAt"], "init_args": {"at": at, "micro": micro, "signum": int(signum)}}
    return write_config(project, name, info_flow__StopAt=stopper, **changes)


def assert_same_run(run: Path, reference: Path, epochs: int = 3) -> None:
    assert read_metrics(run) == read_metrics(reference)
    for model, state in weights(reference, epochs).items():
        ours = weights(run, epochs)[model]
        assert all(torch.equal(ours[k], state[k]) for k in state), model


def trainer_state(run: Path) -> tuple[str, dict]:
    (path,) = (run / "checkpoints").glob("trainer_*.pt")  # only the newest is kept
    return path.name, torch.load(path, weights_only=True)


@pytest.mark.parametrize("save_every", [1, {"steps": 2}], ids=["epochs", "steps"])
def test_kill_9_between_the_second_and_third_batch_of_a_group_then_resume_is_bitwise(
    stoppable: Path, uninterrupted: Path, tmp_path: Path, save_every: object
) -> None:
    # during the ninth step (8 done, as {step: trainer} reads it): the third group of epoch 2
    config = stop_config(stoppable, "kill.yml", 8, 3, signal.SIGKILL, training_params__save_every=save_every)
    env = {k: v for k, v in os.environ.items() if k != "NO_STOP"}
    killed = run_cli("train", str(config), f"logging_params.logging_dir={tmp_path}", cwd=stoppable, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(tmp_path)
    name, state = trainer_state(run)
    assert state["step"] == (6 if save_every == 1 else 8), name  # the last checkpoint before the kill

    resumed = run_cli(
        "train", "--resume", str(run), "--project", str(stoppable), cwd=stoppable, env={**env, "NO_STOP": "1"}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, uninterrupted)


@pytest.mark.parametrize(("at", "micro"), [(8, 2), (5, 2)], ids=["mid-epoch", "short-last-group-of-epoch-1"])
def test_sigterm_inside_a_group_stops_at_its_end_and_resumes_bitwise(
    stoppable: Path, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, micro: int
) -> None:
    config = stop_config(stoppable, f"term_{at}.yml", at, micro, signal.SIGTERM)
    monkeypatch.delenv("NO_STOP", raising=False)
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path}"]) == 128 + signal.SIGTERM
    run = only_run(tmp_path)
    name, state = trainer_state(run)
    assert state["step"] == at + 1, name  # the group the signal came in was finished, then saved
    monkeypatch.setenv("NO_STOP", "1")
    assert main(["train", "--resume", str(run), "--project", str(stoppable)]) == 0
    assert_same_run(run, uninterrupted)


# ------------------------------------------------------------------ BatchNorm under accumulation

NORM_ENCODER = """

class NormEncoder(Encoder):
    def __init__(self, in_dim: int, enc_dim: int):
        super().__init__(in_dim, enc_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, enc_dim))


_before_norm = get_ref_model_dict


def get_ref_model_dict():
    return {**_before_norm(), "NormEncoder": NormEncoder}
"""


def test_a_model_with_batchnorm_under_accumulate_gets_one_warning_naming_it(toy: Path) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(NORM_ENCODER)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow = {"NormEncoder": flow.pop("Encoder"), **flow}
    flow["Classifier"]["inputs"] = flow["Decoder"]["inputs"] = {"encoding": "NormEncoder"}
    config = write_config(
        toy, "norm.yml", info_flow=flow, dataloading_params__batch_size=8, training_params__max_training_epochs=1
    )
    common = ("train", str(config), "--dev", "--no-save")  # 16 dev points: 2 batches of 8
    result = run_cli(*common, "training_params.accumulate=2", cwd=toy)
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "BatchNorm" in line]
    assert len(lines) == 1 and "NormEncoder" in lines[0], lines
    plain = run_cli(*common, cwd=toy)
    assert plain.returncode == 0, plain.stderr
    assert "BatchNorm" not in plain.stdout + plain.stderr


# ------------------------------------------------------------------ reduction: sum

# A linear model whose per-sample loss is its own output: the gradient of a batch's summed loss is
# the sum of its inputs whatever the weights, so SGD's result is known by hand, in any batch order.
LINEAR_MODEL = """

class Linear(nn.Module):
    def __init__(self, in_dim: int):
        super().__init__()
        self.lin = nn.Linear(in_dim, 1)

    def forward(self, features):
        return {"value": self.lin(features)}


_before_linear = get_ref_model_dict


def get_ref_model_dict():
    return {**_before_linear(), "Linear": Linear}
"""
OUTPUT_LOSS = """

def output_loss(value):
    return value[:, 0]


_before_output = get_project_loss_and_eval_dict


def get_project_loss_and_eval_dict():
    losses, evals = _before_output()
    return {**losses, "OutputLoss": output_loss}, evals
"""
LR = 0.01


@pytest.fixture
def summed(toy: Path) -> Path:
    """The toy project with ``Linear`` trained by SGD on ``OutputLoss`` with ``reduction: sum``, batch 32."""
    with open(toy / "models.py", "a") as fh:
        fh.write(LINEAR_MODEL)
    with open(toy / "training_utils.py", "a") as fh:
        fh.write(OUTPUT_LOSS)
    loss = {"logging_name": "out", "reduction": "sum", "inputs": {"value": "Linear"}}
    flow = {"Linear": {"train": 1, "init_args": {"in_dim": 8}, "inputs": {"features": "dataset"}}}
    flow["Linear"]["losses"] = {"OutputLoss": loss}
    return write_config(
        toy,
        "summed.yml",
        info_flow=flow,
        dataloading_params__batch_size=32,
        training_params__max_training_epochs=1,
        training_params__optimizer={"name": "SGD"},
        training_params__lrn_rate=LR,
        training_params__log_every=1,
    )


def features_of(project: Path, run: Path, split: str) -> np.ndarray:
    """The float32 features of a split's points, as the project's dataset gives them (float64 here)."""
    spec = importlib.util.spec_from_file_location("summed_toy_data", project / "dataloader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dataset = module.CustomDataSet(yaml.safe_load((run / "config.yml").read_text()))
    indices = json.loads((run / "idx_dict.json").read_text())[split]
    return np.stack([dataset[i]["features"] for i in indices]).astype(np.float32).astype(np.float64)


def linear(run: Path, epoch: int) -> tuple[np.ndarray, float]:
    state = torch.load(run / "checkpoints" / f"Linear_{epoch:06d}.pt", weights_only=True)
    return state["lin.weight"][0].double().numpy(), float(state["lin.bias"][0])


def test_reduction_sum_over_six_batches_with_a_short_last_one_is_sgd_on_the_summed_loss(
    toy: Path, summed: Path
) -> None:
    run = train(summed, toy / "runs")  # 180 training points: 5 batches of 32, one of 20
    (w0, b0), (w1, b1) = linear(run, 0), linear(run, 1)
    x = features_of(toy, run, "train")
    assert len(x) == 180
    np.testing.assert_allclose(w1, w0 - LR * x.sum(axis=0), rtol=0, atol=1e-5)
    assert b1 == pytest.approx(b0 - LR * 180, abs=1e-5)
    (val,) = [r for r in read_metrics(run) if r["split"] == "val"]
    v = features_of(toy, run, "val")
    assert val["Linear/out"] == pytest.approx(float((v @ w1 + b1).mean()), rel=1e-5, abs=1e-5)  # a mean, not a sum


def test_reduction_sum_on_one_short_batch_logs_per_sample_means(toy: Path, summed: Path) -> None:
    run = train(summed, toy / "runs", "--dev")  # 16 dev points, batch 32: one short batch, one step
    (w0, b0), (w1, b1) = linear(run, 0), linear(run, 1)
    x = features_of(toy, run, "dev")
    assert len(x) == 16
    np.testing.assert_allclose(w1, w0 - LR * x.sum(axis=0), rtol=0, atol=1e-5)
    assert b1 == pytest.approx(b0 - LR * 16, abs=1e-5)
    train_row, val_row = read_metrics(run)
    assert train_row["Linear/out"] == pytest.approx(float((x @ w0 + b0).mean()), rel=1e-5, abs=1e-5)  # before the step
    assert val_row["Linear/out"] == pytest.approx(float((x @ w1 + b1).mean()), rel=1e-5, abs=1e-5)  # the dev set again
    ((step, value),) = step_scalars(run)["train_step/Linear/out"]
    assert step == 1 and value == pytest.approx(train_row["Linear/out"], abs=1e-5)
