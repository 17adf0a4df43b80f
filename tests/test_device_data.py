"""``dataloading_params.device_data``: splits stacked once on the device, batched by index selection
in the sampler's order; bitwise the same run as the DataLoader path, and exact across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_dirs, signalling_config
from test_trustworthy import run_dirs_in

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

NOISY_TRANSFORM = """


def _transform_batch(self, batch, train):
    if train:  # draws from torch's RNG: the two paths must see the same stream
        batch["features"] = batch["features"] + 0.1 * torch.randn_like(batch["features"])
    return batch


CustomDataSet.transform_batch = _transform_batch
"""

MODELS = ("Encoder", "Classifier", "Decoder")


@pytest.fixture
def noisy(toy: Path) -> Path:
    source = (toy / "dataloader.py").read_text()
    (toy / "dataloader.py").write_text(
        ("import torch\n" if "import torch\n" not in source else "") + source + NOISY_TRANSFORM
    )
    return toy


def _same_runs(a: Path, b: Path, epoch: int) -> None:
    assert read_metrics(a) == read_metrics(b)
    for name in MODELS:
        x = torch.load(a / "checkpoints" / f"{name}_{epoch:06d}.pt", weights_only=True)
        y = torch.load(b / "checkpoints" / f"{name}_{epoch:06d}.pt", weights_only=True)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_device_data_gives_bitwise_the_dataloader_runs_weights(noisy: Path, tmp_path: Path) -> None:
    common = [str(noisy / "config.yml"), "training_params.max_training_epochs=2", "dataloading_params.batch_size=16"]
    assert main(["train", *common, f"logging_params.logging_dir={tmp_path / 'loader'}"]) == 0
    assert (
        main(
            ["train", *common, "dataloading_params.device_data=true", f"logging_params.logging_dir={tmp_path / 'dev'}"]
        )
        == 0
    )
    (loader,), (device,) = run_dirs_in(tmp_path / "loader"), run_dirs_in(tmp_path / "dev")
    assert yaml.safe_load((device / "config.yml").read_text())["dataloading_params"]["device_data"] is True
    _same_runs(device, loader, 2)


def test_a_sigterm_mid_epoch_then_resume_with_device_data_is_exact(noisy: Path, tmp_path: Path, monkeypatch) -> None:
    config = signalling_config(noisy, 5, dataloading_params__device_data=True)  # 12 steps an epoch
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.delenv("RESUMED")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 143
    (run,) = run_dirs_in(tmp_path / "stopped")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", "--resume", str(run), "--project", str(noisy)]) == 0
    (straight,) = run_dirs_in(tmp_path / "straight")
    _same_runs(run, straight, 3)


def test_a_split_too_big_for_the_device_is_one_line(toy: Path, monkeypatch, capsys) -> None:
    import dlscaffold.parts.device_data

    monkeypatch.setattr(dlscaffold.parts.device_data, "free_memory", lambda device: 1000)
    assert main(["train", str(toy / "config.yml"), "dataloading_params.device_data=true"]) == 2
    err = capsys.readouterr().err
    assert "dataloading_params.device_data: the 'train' split stacks to" in err
    assert "set device_data: false" in err and "Traceback" not in err
    assert not run_dirs(toy)


def test_evaluate_of_a_device_data_run_equals_its_validation(toy: Path) -> None:
    import dlscaffold

    overrides = ["training_params.max_training_epochs=1", "dataloading_params.device_data=true"]
    assert main(["train", str(toy / "config.yml"), *overrides]) == 0
    (run_dir,) = run_dirs(toy)
    logged = [row for row in read_metrics(run_dir) if row["split"] == "val"][-1]
    result = dlscaffold.load_run(run_dir, epoch=1).evaluate("val")
    assert result["metrics"]["Classifier/accuracy"] == logged["Classifier/accuracy"]
    assert dlscaffold.load_run(run_dir, epoch=1).evaluate("dev")["num_samples"] == 16  # a split built on demand
