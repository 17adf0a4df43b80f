"""Training runs through the real CLI: run folder, metrics, frozen loading, resume, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_dirs, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")


def train_in_process(*args: str) -> int:
    return main(["train", *args])


def test_end_to_end_run_folder_metrics_and_tensorboard(toy: Path) -> None:
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    assert f"Logging and Model Saving Directory: {run}" in result.stdout.splitlines()[0]
    assert run.name.endswith("_1_toy") and run.name[:8].isdigit()
    names = {p.name for p in run.iterdir()}
    assert {"config.yml", "idx_dict.json", "metrics.jsonl", "checkpoints", "run.json"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    checkpoints = {p.name for p in (run / "checkpoints").iterdir()}
    assert (
        {f"{m}_{e:06d}.pt" for m in MODELS for e in range(0, 5)}
        | {f"{m}_best.pt" for m in MODELS}
        | {"trainer_000004.pt"}
    ) == checkpoints

    rows = read_metrics(run)
    assert [(r["epoch"], r["split"]) for r in rows] == [(e, s) for e in range(1, 5) for s in ("train", "val")]
    metric_keys = {"Classifier/ce", "Decoder/reconstruction", "Classifier/accuracy", "Classifier/Top2Accuracy"}
    rates = {f"lr/{m}" for m in MODELS}  # each trained model's learning rate, on train rows
    logged = {"epoch", "split", "step", "total_loss"} | metric_keys  # two losses: their weighted sum too
    assert all(set(r) == logged | (rates if r["split"] == "train" else set()) for r in rows)
    assert [r["step"] for r in rows if r["split"] == "val"] == [6, 12, 18, 24]  # 180 points / 32 per batch
    val_ce = [r["Classifier/ce"] for r in rows if r["split"] == "val"]
    assert val_ce == sorted(val_ce, reverse=True) and val_ce[-1] < 0.5 * val_ce[0]

    idx_dict = json.loads((run / "idx_dict.json").read_text())
    assert len(idx_dict["val"]) == 60 and len(idx_dict["train"]) == 180
    assert not set(idx_dict["val"]) & set(idx_dict["train"]) and set(idx_dict["dev"]) <= set(idx_dict["train"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"{split}/{name}" for split in ("train", "val") for name in metric_keys} <= tags
    assert [e.step for e in events.Scalars("train_step/Classifier/ce")] == list(range(2, 25, 2))  # log_every: 2
    assert [e.step for e in events.Scalars("val/Classifier/ce")] == [6, 12, 18, 24]
    assert events.Scalars("val/Classifier/ce")[-1].value == pytest.approx(val_ce[-1], rel=1e-5)


def test_epoch_values_are_sample_weighted_means(toy: Path) -> None:
    # 60 val points in batches of 32 + 28: a mean of batch means would weigh the last batch more.
    assert (
        train_in_process(
            str(toy / "config.yml"),
            "training_params.max_training_epochs=1",
            "--project",
            str(toy),
            f"logging_params.logging_dir={toy / 'runs'}",
        )
        == 0
    )
    (run,) = run_dirs(toy)
    out = toy / "eval.json"
    assert main(["evaluate", str(run), "--json", str(out), "--project", str(toy)]) == 0
    result = json.loads(out.read_text())
    val_row = [r for r in read_metrics(run) if r["split"] == "val"][0]
    assert result["num_samples"] == 60 and result["epoch"] == 1
    assert result["metrics"] == pytest.approx({k: v for k, v in val_row.items() if "/" in k}, rel=1e-6)
    # the accuracy over 60 samples is a multiple of 1/60
    accuracy = result["metrics"]["Classifier/accuracy"]
    assert round(accuracy * 60, 6) == round(accuracy * 60)


def test_frozen_encoder_from_an_earlier_run_stays_bit_for_bit(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=2", cwd=toy).returncode == 0
    (first,) = run_dirs(toy)
    config = write_config(
        toy,
        "head.yml",
        # init_args left out: they default to the first run's saved config
        info_flow__Encoder={"train": 0, "model_dir": str(first), "epoch": 2, "inputs": {"features": "dataset"}},
        logging_params__run_notes="head",
    )
    result = run_cli("train", str(config), "training_params.max_training_epochs=2", cwd=toy)
    assert result.returncode == 0, result.stderr
    assert "Training Classifier, Decoder on" in result.stdout
    second = [r for r in run_dirs(toy) if r != first][0]
    before = torch.load(first / "checkpoints" / "Encoder_000002.pt", weights_only=True)
    after = torch.load(second / "checkpoints" / "Encoder_000002.pt", weights_only=True)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    head_before = torch.load(first / "checkpoints" / "Classifier_000001.pt", weights_only=True)
    head_after = torch.load(second / "checkpoints" / "Classifier_000002.pt", weights_only=True)
    assert not torch.equal(head_before["head.weight"], head_after["head.weight"])
    saved = (second / "config.yml").read_text()
    assert "enc_dim: 4" in saved  # the resolved init_args were saved with the run


def test_resume_after_epoch_2_matches_an_uninterrupted_run_bitwise(toy: Path) -> None:
    # Dropout in the encoder makes the result depend on the restored RNG state.
    assert train_in_process(str(toy / "config.yml"), "logging_params.run_notes=full") == 0
    assert (
        train_in_process(
            str(toy / "config.yml"), "logging_params.run_notes=part", "training_params.max_training_epochs=2"
        )
        == 0
    )
    full, part = run_dirs(toy)
    assert len(read_metrics(part)) == 4
    assert train_in_process("--resume", str(part), "training_params.max_training_epochs=4") == 0
    for model in MODELS:
        a = torch.load(full / "checkpoints" / f"{model}_000004.pt", weights_only=True)
        b = torch.load(part / "checkpoints" / f"{model}_000004.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), model
    assert read_metrics(full) == read_metrics(part)


def test_resume_drops_rows_written_after_the_last_checkpoint(toy: Path) -> None:
    assert (
        train_in_process(
            str(toy / "config.yml"), "training_params.save_every=2", "training_params.max_training_epochs=3"
        )
        == 0
    )
    (run,) = run_dirs(toy)
    # The run ended at epoch 3 with a checkpoint; pretend it died after epoch 3's rows, before saving.
    for path in (run / "checkpoints").glob("*_000003.pt"):
        path.unlink()
    (run / "checkpoints" / "trainer_000002.pt").write_bytes(b"")  # trainer states are pruned: rebuild below
    assert (
        train_in_process(
            str(toy / "config.yml"),
            "training_params.save_every=2",
            "training_params.max_training_epochs=2",
            "logging_params.run_notes=ref",
        )
        == 0
    )
    ref = [r for r in run_dirs(toy) if r != run][0]
    (run / "checkpoints" / "trainer_000002.pt").write_bytes((ref / "checkpoints" / "trainer_000002.pt").read_bytes())
    assert train_in_process("--resume", str(run), "training_params.max_training_epochs=3") == 0
    expected = [(e, s) for e in (1, 2, 3) for s in ("train", "val")]
    assert [(r["epoch"], r["split"]) for r in read_metrics(run)] == expected


def test_no_save_and_debug(toy: Path) -> None:
    assert train_in_process(str(toy / "config.yml"), "--no-save", "training_params.max_training_epochs=1") == 0
    (run,) = run_dirs(toy)
    assert read_metrics(run) and not (run / "checkpoints").exists()
    result = run_cli("train", "config.yml", "--debug", cwd=toy)
    assert result.returncode == 0 and "nothing is written" in result.stdout and "dev set" in result.stdout
    assert run_dirs(toy) == [run]


def test_a_wrong_tensor_name_fails_before_training(toy: Path) -> None:
    config = write_config(
        toy,
        "bad.yml",
        info_flow__Decoder__losses={"MSE": {"inputs": {"reconstructed": "Decoder", "features": "dataset"}}},
    )
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "info_flow.Decoder.losses.MSE needs tensor 'reconstructed' from Decoder, "
        "but model 'Decoder' hold only: reconstruction"
    ) in result.stderr
    assert not (toy / "runs").exists()


def test_idx_dict_path_reuses_a_split_and_checks_its_length(toy: Path, tmp_path: Path) -> None:
    assert train_in_process(str(toy / "config.yml"), "training_params.max_training_epochs=1") == 0
    (first,) = run_dirs(toy)
    assert (
        train_in_process(
            str(toy / "config.yml"),
            "training_params.max_training_epochs=1",
            "training_params.seed=99",
            f"dataloading_params.idx_dict_path={first}",
        )
        == 0
    )
    second = [r for r in run_dirs(toy) if r != first][0]
    assert json.loads((first / "idx_dict.json").read_text()) == json.loads((second / "idx_dict.json").read_text())
    # the toy dataset has 300 points when a dataset_path is set: the saved 240-point split no longer fits
    result = run_cli(
        "train",
        "config.yml",
        f"dataloading_params.idx_dict_path={first / 'idx_dict.json'}",
        f"dataloading_params.dataset_path={tmp_path}",
        cwd=toy,
    )
    assert result.returncode == 2
    assert "splits 240 points but the dataset has 300" in result.stderr


def test_dev_flag_trains_and_validates_on_the_dev_set(toy: Path) -> None:
    result = run_cli("train", "config.yml", "--dev", "training_params.max_training_epochs=1", cwd=toy)
    assert result.returncode == 0 and "16 train / 16 val points, dev set" in result.stdout
    (run,) = run_dirs(toy)
    assert read_metrics(run)[0]["step"] == 1  # 16 dev points, one batch


def test_optimizer_scheduler_and_clipping_by_name(toy: Path) -> None:
    assert (
        train_in_process(
            str(toy / "config.yml"),
            "training_params.max_training_epochs=2",
            "training_params.grad_clip_norm=1.0",
            "training_params.optimizer={name: SGD, kwargs: {momentum: 0.9}}",
            "training_params.lr_scheduler={name: OneCycleLR, kwargs: {max_lr: 0.1}, interval: step}",
        )
        == 0
    )
    (run,) = run_dirs(toy)
    state = torch.load(run / "checkpoints" / "trainer_000002.pt", weights_only=True)
    assert state["schedulers"]["Encoder"]["total_steps"] == 12 and state["schedulers"]["Encoder"]["last_epoch"] == 12
    assert "momentum_buffer" in state["optimizers"]["Encoder"]["state"][0]


def test_evaluate_errors_are_one_line(toy: Path) -> None:
    result = run_cli("evaluate", str(toy), cwd=toy)
    assert result.returncode == 2 and "not a run folder" in result.stderr
    assert train_in_process(str(toy / "config.yml"), "training_params.max_training_epochs=1") == 0
    (run,) = run_dirs(toy)
    result = run_cli("evaluate", str(run), "--epoch", "7", cwd=toy)
    assert result.returncode == 2 and "holds Encoder weights for epochs: 0, 1" in result.stderr
    result = run_cli("evaluate", str(run), "--split", "test", cwd=toy)
    assert result.returncode == 2 and "this run has splits: train, val, dev" in result.stderr


def test_transform_batch_runs_on_every_batch_with_the_train_flag(toy: Path) -> None:
    source = (toy / "dataloader.py").read_text()
    (toy / "dataloader.py").write_text(
        source
        + """
    def transform_batch(self, batch, train):
        import recorded  # a list the test registered: the project's modules are unloaded after the run

        recorded.calls.append(train)
        batch["features"] = batch["features"] * 0.5
        return batch
"""
    )
    import sys
    import types

    recorded = types.ModuleType("recorded")
    recorded.calls = calls = []
    sys.modules["recorded"] = recorded
    try:
        assert train_in_process(str(toy / "config.yml"), "training_params.max_training_epochs=1") == 0
    finally:
        del sys.modules["recorded"]
    # the one-batch check, 6 training batches (180 / 32), then 2 validation batches (60 / 32)
    assert calls == [True] * 7 + [False] * 2


def test_bf16_precision_trains(toy: Path) -> None:
    assert (
        train_in_process(
            str(toy / "config.yml"), "training_params.precision=bf16", "training_params.max_training_epochs=2"
        )
        == 0
    )
    (run,) = run_dirs(toy)
    rows = read_metrics(run)
    assert all(0.0 < r["Classifier/ce"] < 5.0 for r in rows)
    assert rows[-1]["Classifier/ce"] < rows[1]["Classifier/ce"]


def test_a_shape_mistake_in_a_model_fails_before_training_in_one_line(toy: Path) -> None:
    config = write_config(toy, "bad.yml", info_flow__Encoder__init_args={"in_dim": 6, "enc_dim": 4})
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "error: info_flow.Encoder: Encoder.forward failed on a batch of 2 before training: RuntimeError:"
    )
    assert not (toy / "runs").exists()


def test_model_dir_may_name_the_checkpoints_folder_itself(toy: Path) -> None:
    assert train_in_process(str(toy / "config.yml"), "training_params.max_training_epochs=1") == 0
    (first,) = run_dirs(toy)
    config = write_config(
        toy,
        "head.yml",
        info_flow__Encoder={
            "train": 0,
            "model_dir": str(first / "checkpoints"),
            "epoch": 1,
            "inputs": {"features": "dataset"},
        },
    )
    assert train_in_process(str(config), "training_params.max_training_epochs=1", "logging_params.run_notes=head") == 0
    second = [r for r in run_dirs(toy) if r != first][0]
    a = torch.load(first / "checkpoints" / "Encoder_000001.pt", weights_only=True)
    b = torch.load(second / "checkpoints" / "Encoder_000001.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
