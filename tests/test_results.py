"""Results a researcher can use: best epoch, early stopping, load_run, run listing, provenance,
epoch-0 weights, the trainer source and ensemble members."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import HANG_GUARD_S, run_cli, run_dirs, write_config

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.prepare import prepare
from dlscaffold.records.rundir import read_metrics
from dlscaffold.run.builder import build_run

MODELS = ("Encoder", "Classifier", "Decoder")

EXTRA_MODELS = '''

class EpochEcho(nn.Module):
    """Outputs the trainer's epoch for every sample, and zeros."""

    def forward(self, features, epoch):
        ones = features.new_ones(features.shape[0], 1)
        return {"value": ones * epoch, "zero": ones * 0}


class Ensemble(nn.Module):
    """Three members: the classifier's logits and two shifted copies, (B, 3, K)."""

    def forward(self, class_logits):
        return {"members": torch.stack([class_logits, class_logits.flip(-1), class_logits * 0], dim=1)}


class Picture(nn.Module):
    """The features as a (B, 1, 2, 4) image."""

    def forward(self, features):
        return {"image": features.view(-1, 1, 2, 4)}


class Crash(nn.Module):
    def forward(self, features, step):
        if int(step) == 2:
            raise RuntimeError("the model broke at step 2")
        return {"features": features}


import torch  # noqa: E402

_toy_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_toy_models(), "EpochEcho": EpochEcho, "Ensemble": Ensemble, "Crash": Crash, "Picture": Picture}
'''


def with_extra_models(toy: Path) -> Path:
    with open(toy / "models.py", "a") as fh:
        fh.write(EXTRA_MODELS)
    return toy


def test_best_epoch_is_the_arg_best_and_loads_as_best(toy: Path) -> None:
    result = run_cli("train", "config.yml", "training_params.monitor=Classifier/accuracy", cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    val = [r for r in read_metrics(run) if r["split"] == "val"]
    accuracies = [r["Classifier/accuracy"] for r in val]
    best = json.loads((run / "run.json").read_text())["best"]
    assert best["metric"] == "Classifier/accuracy" and best["value"] == max(accuracies)
    assert best["epoch"] == val[accuracies.index(max(accuracies))]["epoch"]  # the first epoch reaching it
    assert f"Best val Classifier/accuracy: {max(accuracies):.6g} at epoch {best['epoch']}" in result.stdout
    loaded = dlscaffold.load_run(run, epoch="best")
    assert loaded.epoch == best["epoch"]
    for name in MODELS:
        saved = torch.load(run / "checkpoints" / f"{name}_best.pt", weights_only=True)
        assert all(torch.equal(saved[k], v) for k, v in loaded.models[name].state_dict().items())
        assert not loaded.models[name].training
    out = toy / "best.json"
    assert main(["evaluate", str(run), "--epoch", "best", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["Classifier/accuracy"] == max(accuracies)


def test_early_stopping_ends_patience_validations_after_the_best(toy: Path) -> None:
    # a learning rate too small to change the accuracy: epoch 1 stays the best
    result = run_cli(
        "train",
        "config.yml",
        "training_params.monitor=Classifier/accuracy",
        "training_params.lrn_rate=1e-12",
        "training_params.early_stopping_patience=2",
        "training_params.max_training_epochs=20",
        cwd=toy,
    )
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    info = json.loads((run / "run.json").read_text())
    epochs = sorted({r["epoch"] for r in read_metrics(run)})
    assert epochs[-1] == info["best"]["epoch"] + 2 and info["status"] == "completed"
    assert "Early stopping" in result.stdout
    assert (run / "checkpoints" / f"Encoder_{epochs[-1]:06d}.pt").is_file()  # the final checkpoint


def test_load_run_forward_reproduces_evaluate(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=2", cwd=toy).returncode == 0
    (run,) = run_dirs(toy)
    out = toy / "eval.json"
    assert main(["evaluate", str(run), "--json", str(out)]) == 0
    expected = json.loads(out.read_text())["metrics"]
    loaded = dlscaffold.load_run(run, epoch="last")
    from dlscaffold.data import collate

    data = loaded.dataset()
    correct, total = 0, 0
    for start in range(0, len(loaded.split["val"]), 32):
        batch = collate([data[i] for i in loaded.split["val"][start : start + 32]])
        logits = loaded.forward(batch)["Classifier"]["class_logits"]
        correct += int((logits.argmax(-1) == batch["class_idx"]).sum())
        total += len(batch["class_idx"])
    assert abs(correct / total - expected["Classifier/accuracy"]) < 1e-6
    assert loaded.metrics == read_metrics(run) and loaded.config.training_params.max_training_epochs == 2


def test_runs_lists_completed_failed_and_interrupted_runs(toy: Path) -> None:
    toy = with_extra_models(toy)
    logs = toy / "runs"
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    crash = {"train": 0, "inputs": {"features": "dataset", "step": "trainer"}}
    flow = json.loads(json.dumps(__import__("yaml").safe_load((toy / "config.yml").read_text())["info_flow"]))
    flow["Encoder"]["inputs"] = {"features": "Crash"}
    failing = write_config(toy, "failing.yml", info_flow={"Crash": crash, **flow})
    result = run_cli("train", str(failing), cwd=toy)
    assert result.returncode == 2 and "the model broke at step 2" in result.stderr
    slow = subprocess.Popen(
        [sys.executable, "-m", "dlscaffold", "train", "config.yml", "training_params.max_training_epochs=100000"],
        cwd=toy,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert slow.stdout.readline().startswith("Logging and Model Saving Directory")
    time.sleep(0.5)
    slow.send_signal(signal.SIGTERM)
    assert slow.wait(timeout=HANG_GUARD_S) == 143
    result = run_cli("runs", str(logs), "--json", cwd=toy)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(r["status"] for r in rows) == ["completed", "failed", "interrupted"]
    assert all(set(r) == {"run", "status", "epochs", "best", "last_val", "seconds", "run_notes"} for r in rows)
    info = json.loads((run_dirs(toy)[0] / "run.json").read_text())
    assert {"command", "python", "torch", "dlscaffold", "host", "git"} <= set(info["provenance"])


def test_epoch_0_holds_the_initial_weights_and_loads_with_model_dir(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    (first,) = run_dirs(toy)
    initial = build_run(prepare(toy / "config.yml"), {}).flow.models  # the same seed builds the same models
    for name, model in initial.items():
        saved = torch.load(first / "checkpoints" / f"{name}_000000.pt", weights_only=True)
        assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    config = write_config(
        toy,
        "from_zero.yml",
        info_flow__Encoder__model_dir=str(first),
        info_flow__Encoder__epoch=0,
        info_flow__Encoder__train=0,
        training_params__seed=99,
    )
    assert run_cli("train", str(config), "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    second = [r for r in run_dirs(toy) if r != first][0]
    a = torch.load(first / "checkpoints" / "Encoder_000000.pt", weights_only=True)
    b = torch.load(second / "checkpoints" / "Encoder_000001.pt", weights_only=True)  # frozen: still epoch 0's
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_source_and_ensemble_members(toy: Path) -> None:
    toy = with_extra_models(toy)
    flow = __import__("yaml").safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["EpochEcho"] = {
        "train": 0,
        "inputs": {"features": "dataset", "epoch": "trainer"},
        "evals": {
            "ContinuousErrorMag": {"logging_name": "epoch", "inputs": {"value": "EpochEcho", "zero": "EpochEcho"}}
        },
    }
    flow["Ensemble"] = {
        "train": 0,
        "inputs": {"class_logits": "Classifier"},
        "evals": {
            "MultinomialAccuracyEnsemble": {
                "logging_name": "acc",
                "inputs": {"members": "Ensemble", "class_idx": "dataset"},
            }
        },
    }
    config = write_config(toy, "extra.yml", info_flow=flow)
    result = run_cli("train", str(config), "training_params.max_training_epochs=3", cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    rows = read_metrics(run)
    assert [r["EpochEcho/epoch"] for r in rows] == [1, 1, 2, 2, 3, 3]
    assert all({"Ensemble/acc", "Ensemble/acc_0", "Ensemble/acc_1", "Ensemble/acc_2"} <= set(r) for r in rows)
    val = [r for r in rows if r["split"] == "val"]
    assert all(r["Ensemble/acc_0"] == r["Classifier/accuracy"] for r in val)  # member 0 is the classifier itself


def test_log_images_writes_validation_images_and_refuses_non_images(toy: Path) -> None:
    toy = with_extra_models(toy)
    flow = __import__("yaml").safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Picture"] = {"train": 0, "inputs": {"features": "dataset"}}
    config = write_config(toy, "pictures.yml", info_flow=flow, logging_params__log_images=["Picture.image"])
    result = run_cli("train", str(config), "training_params.max_training_epochs=1", cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert "images/Picture.image" in events.Tags()["images"]
    result = run_cli("train", str(config), "logging_params.log_images=[Classifier.class_logits]", cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "'Classifier.class_logits' has shape (2, 3); expected images" in line
    assert run_dirs(toy) == [run]  # refused before a run folder was made


STEP_LOSS = '''

def step_loss(class_logits, step):
    """The trainer's global step for every sample: a loss that depends on the step."""
    return class_logits.new_zeros(class_logits.shape[0]) + step


_toy_terms = get_project_loss_and_eval_dict


def get_project_loss_and_eval_dict():
    losses, evals = _toy_terms()
    return {**losses, "StepLoss": step_loss}, evals
'''


def test_validation_and_evaluate_give_a_step_dependent_loss_the_same_step(toy: Path, tmp_path: Path) -> None:
    with open(toy / "training_utils.py", "a") as fh:
        fh.write(STEP_LOSS)
    flow = __import__("yaml").safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Classifier"]["losses"]["StepLoss"] = {
        "logging_name": "step",
        "weight": 0.0,
        "inputs": {"class_logits": "Classifier", "step": "trainer"},
    }
    config = write_config(toy, "step.yml", info_flow=flow, training_params__max_training_epochs=2)
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    (run,) = run_dirs(toy)
    val = [r for r in read_metrics(run) if r["split"] == "val"]
    assert [r["Classifier/step"] for r in val] == [r["step"] for r in val] == [6, 12]  # the steps done
    for row in val:
        out = tmp_path / f"eval_{row['epoch']}.json"
        assert main(["evaluate", str(run), "--epoch", str(row["epoch"]), "--json", str(out)]) == 0
        assert json.loads(out.read_text())["metrics"]["Classifier/step"] == row["Classifier/step"]
        loaded = dlscaffold.load_run(run, epoch=row["epoch"])
        assert loaded.evaluate()["metrics"]["Classifier/step"] == row["Classifier/step"]
