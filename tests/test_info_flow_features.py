"""info_flow: ``epoch: best|last`` for models loaded from an earlier run, and renamed inputs
(``z: Encoder.latent``, ``target: dataset.class_idx``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_dirs, write_config

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.errors import ConfigError
from dlscaffold.prepare import prepare
from dlscaffold.records.rundir import read_metrics, read_run_info


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _problems(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        prepare(config)
    return info.value.problems


# ------------------------------------------------------------------------------ epoch: best|last


def test_epoch_best_and_last_load_those_weights_and_the_run_records_their_numbers(toy: Path) -> None:
    # The monitored loss falls every epoch, so with mode max the best epoch is the first, not the last;
    # save_every 2 saves epochs 0, 2 and 3: the best epoch's weights are only in <Model>_best.pt.
    first_overrides = [
        "training_params.max_training_epochs=3",
        "training_params.save_every=2",
        "training_params.monitor=Classifier/ce",
        "training_params.monitor_mode=max",
    ]
    assert main(["train", str(toy / "config.yml"), *first_overrides]) == 0
    (first,) = run_dirs(toy)
    best = read_run_info(first)["best"]["epoch"]
    assert best == 1 and not (first / "checkpoints" / "Encoder_000001.pt").exists()
    assert not _same(
        _weights(first / "checkpoints" / "Encoder_best.pt"), _weights(first / "checkpoints" / "Encoder_000003.pt")
    )

    config = write_config(
        toy,
        "loaded.yml",
        info_flow__Encoder={"train": 0, "model_dir": str(first), "epoch": "best", "inputs": {"features": "dataset"}},
        info_flow__Classifier={
            **yaml.safe_load((toy / "config.yml").read_text())["info_flow"]["Classifier"],
            "train": 0,
            "model_dir": str(first),
            "epoch": "last",
        },
        logging_params__run_notes="loaded",
    )
    assert main(["train", str(config), "training_params.max_training_epochs=1"]) == 0
    (second,) = [r for r in run_dirs(toy) if r != first]
    saved = yaml.safe_load((second / "config.yml").read_text())["info_flow"]
    assert saved["Encoder"]["epoch"] == 1 and saved["Classifier"]["epoch"] == 3
    # frozen models: the second run's weights are the loaded ones
    assert _same(
        _weights(second / "checkpoints" / "Encoder_000001.pt"), _weights(first / "checkpoints" / "Encoder_best.pt")
    )
    assert _same(
        _weights(second / "checkpoints" / "Classifier_000001.pt"),
        _weights(first / "checkpoints" / "Classifier_000003.pt"),
    )
    # the recorded numbers name those weights when the second run's config is checked again
    loaded = dlscaffold.load_run(second, epoch="last")
    assert loaded.config.info_flow["Encoder"].epoch == 1


def test_a_bad_epoch_is_one_config_line_found_before_anything_is_built(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_best = _fake_run(tmp_path / "no_best", [0, 2], best=False)
    unrecorded = _fake_run(tmp_path / "unrecorded", [0, 2], best=True)  # no run.json says which epoch
    key = "info_flow.Encoder"

    def config(model_dir: Path, epoch: object) -> Path:
        return write_config(
            toy, "loaded.yml", info_flow__Encoder__model_dir=str(model_dir), info_flow__Encoder__epoch=epoch
        )

    assert prepare(config(no_best, "last")).config.info_flow["Encoder"].epoch == 2
    assert prepare(config(no_best, "2")).config.info_flow["Encoder"].epoch == 2
    assert _problems(config(no_best, "bestest")) == [
        f"{key}.epoch: found 'bestest' (str); expected a saved epoch number, best or last"
    ]
    assert _problems(config(no_best, "best")) == [
        f"{key}.epoch: {no_best} records no best epoch (no <Model>_best.pt); use last or a number"
    ]
    assert _problems(config(no_best, 7)) == [f"{key}.epoch: found 7; {no_best} holds Encoder weights for epochs: 0, 2"]
    assert _problems(config(tmp_path / "empty", "last")) == [
        f"{key}.model_dir: found '{tmp_path / 'empty'}', which does not exist; expected an earlier run's folder"
    ]
    (tmp_path / "empty").mkdir()
    (problem,) = _problems(config(tmp_path / "empty", "last"))
    assert problem.startswith(f"{key}.epoch: found last; ") and "no epoch with saved weights" in problem
    (problem,) = _problems(config(unrecorded, "best"))
    assert problem.startswith(f"{key}.epoch: found best, but no run.json") and "epochs: 0, 2" in problem

    # through the CLI: exit 2, the line alone, no traceback, no run folder
    assert main(["train", str(config(no_best, "bestest"))]) == 2
    err = capsys.readouterr().err
    assert f"error: {key}.epoch: found 'bestest' (str); expected a saved epoch number, best or last" in err
    assert "Traceback" not in err and not run_dirs(toy)


def _fake_run(folder: Path, epochs: list[int], best: bool) -> Path:
    """A folder with Encoder weights for ``epochs`` (and ``Encoder_best.pt``), but no run.json."""
    from torch import nn

    (folder / "checkpoints").mkdir(parents=True)
    state = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4)).state_dict()
    state = {f"net.{k}": v for k, v in state.items()}
    for epoch in epochs:
        torch.save(state, folder / "checkpoints" / f"Encoder_{epoch:06d}.pt")
    if best:
        torch.save(state, folder / "checkpoints" / "Encoder_best.pt")
    return folder


# ------------------------------------------------------------------------------ renamed inputs

# The toy project with forward arguments named unlike the tensors they take.
RENAMED_MODELS = """
from torch import nn


class Encoder(nn.Module):
    def __init__(self, in_dim: int, enc_dim: int):
        super().__init__()
        self.net = nn.Linear(in_dim, enc_dim)

    def forward(self, x):
        return {"latent": self.net(x)}


class Classifier(nn.Module):
    def __init__(self, enc_dim: int):
        super().__init__()
        self.head = nn.Linear(enc_dim, 3)

    def forward(self, z):
        return {"class_logits": self.head(z)}


class Decoder(nn.Module):
    def __init__(self, enc_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Linear(enc_dim, out_dim)

    def forward(self, z):
        return {"reconstruction": self.net(z)}


def get_ref_model_dict():
    return {"Encoder": Encoder, "Classifier": Classifier, "Decoder": Decoder}
"""

RENAMED_FLOW = {
    "Encoder": {"init_args": {"in_dim": 8, "enc_dim": 4}, "inputs": {"x": "dataset.features"}},
    "Classifier": {
        "init_args": {"enc_dim": 4},
        "inputs": {"z": "Encoder.latent"},
        "losses": {
            "MultinomialNLL": {
                "logging_name": "ce",
                "inputs": {"logits": "Classifier.class_logits", "target": "dataset.class_idx"},
            }
        },
        "evals": {  # the plain form, beside the renamed one
            "MultinomialAccuracy": {
                "logging_name": "accuracy",
                "inputs": {"class_logits": "Classifier", "class_idx": "dataset"},
            },
        },
    },
    "Decoder": {
        "init_args": {"enc_dim": 4, "out_dim": 8},
        "inputs": {"z": "Encoder.latent"},
        "losses": {
            "MSE": {"inputs": {"prediction": "Decoder.reconstruction", "target": "dataset.features"}},
        },
    },
}


def _renamed_project(toy: Path) -> Path:
    (toy / "models.py").write_text(RENAMED_MODELS)
    return write_config(toy, "renamed.yml", info_flow=RENAMED_FLOW, training_params__max_training_epochs=2)


def test_renamed_inputs_train_validate_evaluate_and_load(toy: Path) -> None:
    config = _renamed_project(toy)
    assert main(["train", str(config)]) == 0
    (run,) = run_dirs(toy)
    rows = read_metrics(run)
    assert [(r["epoch"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    ce = [r["Classifier/ce"] for r in rows if r["split"] == "train"]
    assert ce[1] < ce[0]  # the renamed loss inputs reach the loss and its gradients the models

    val_metrics = {k: v for k, v in rows[-1].items() if "/" in k}
    assert main(["evaluate", str(run), "--json", str(toy / "eval.json")]) == 0
    assert json.loads((toy / "eval.json").read_text())["metrics"] == pytest.approx(val_metrics, rel=1e-6)
    loaded = dlscaffold.load_run(run, epoch="last")
    assert loaded.evaluate("val")["metrics"] == pytest.approx(val_metrics, rel=1e-6)
    items = [loaded.dataset()[i] for i in loaded.split["val"][:3]]
    outputs = loaded.forward(items)
    expected = loaded.models["Encoder"].net(torch.as_tensor(items[0]["features"], dtype=torch.float32))
    assert torch.allclose(outputs["Encoder"]["latent"][0], expected)
    assert outputs["Decoder"]["reconstruction"].shape == (3, 8)


def test_a_misspelt_renamed_input_is_one_line_with_a_suggestion(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _renamed_project(toy)
    bad, raw = toy / "bad.yml", yaml.safe_load(config.read_text())
    raw["info_flow"]["Classifier"]["inputs"] = {"z": "Encoder.latnet"}
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: info_flow.Classifier.inputs.z needs tensor 'latnet' from Encoder, but model 'Encoder' hold only: "
        "latent; did you mean 'Encoder.latent'?"
    ]
    assert not run_dirs(toy)

    raw["info_flow"]["Classifier"]["inputs"] = {"z": "Encoder.latent"}
    raw["info_flow"]["Decoder"]["losses"]["MSE"]["inputs"]["target"] = "dataset.featurs"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["train", str(bad)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: info_flow.Decoder.losses.MSE needs tensor 'featurs' from dataset")
    assert line.endswith("did you mean 'dataset.features'?")


def test_renamed_sources_are_checked_like_every_source(toy: Path) -> None:
    config = _renamed_project(toy)
    raw = yaml.safe_load(config.read_text())
    flow = raw["info_flow"]
    flow["Encoder"]["inputs"] = {"x": "Decoder.reconstruction"}  # built after the Encoder
    flow["Classifier"]["inputs"] = {"z": "Encodr.latent"}
    flow["Decoder"]["inputs"] = {"z": "Encoder."}
    flow["Classifier"]["losses"]["MultinomialNLL"]["inputs"]["target"] = "datset.class_idx"
    flow["Decoder"]["losses"]["MSE"]["inputs"]["target"] = "trainer.epochs"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    problems = _problems(config)
    expected_starts = [
        "info_flow.Encoder.inputs.x: source 'Decoder' is built after this model",
        "info_flow.Classifier.inputs.z: unknown source 'Encodr'; did you mean 'Encoder'?",
        "info_flow.Classifier.losses.MultinomialNLL.inputs.target: unknown source 'datset'; did you mean 'dataset'?",
        "info_flow.Decoder.inputs.z: found 'Encoder.'; expected a source",
        "info_flow.Decoder.losses.MSE.inputs.target: the trainer gives only epoch and step",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert any(p.startswith(start) for p in problems), (start, problems)
