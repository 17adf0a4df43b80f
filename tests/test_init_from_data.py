"""``init_from_data(**inputs)``: a model sets its weights from training points once, before a fresh
run's first epoch; never on ``--resume`` or for a model that loads weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_dirs, write_config

from dlscaffold.cli import main

INIT = """

import json as _json
import os as _os


def _init_from_data(self, encoding):
    with open(_os.environ["INIT_LOG"], "a") as log:
        log.write(_json.dumps({"shape": list(encoding.shape), "training": self.training}) + "\\n")
    self.head.bias.data.fill_(0.125)


Classifier.init_from_data = _init_from_data
"""


@pytest.fixture
def calls(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (toy / "models.py").write_text((toy / "models.py").read_text() + INIT)
    log = tmp_path / "init_calls.jsonl"
    monkeypatch.setenv("INIT_LOG", str(log))
    return log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_called_once_on_a_fresh_run_with_its_inputs_and_never_on_resume(toy: Path, calls: Path) -> None:
    config = write_config(toy, "init.yml", dataloading_params__init_samples=50)
    assert main(["train", str(config), "training_params.max_training_epochs=2"]) == 0
    (run_dir,) = run_dirs(toy)
    # one call, in eval mode, with the Encoder's outputs for 50 training points (Encoder: 8 -> 4)
    assert _calls(calls) == [{"shape": [50, 4], "training": False}]
    initial = torch.load(run_dir / "checkpoints" / "Classifier_000000.pt", weights_only=True)
    assert torch.equal(initial["head.bias"], torch.full((3,), 0.125))

    assert main(["train", "--resume", str(run_dir), "training_params.max_training_epochs=3"]) == 0
    assert len(_calls(calls)) == 1  # the checkpoint holds the weights: no second call


def test_more_samples_than_the_split_holds_gives_the_whole_split(toy: Path, calls: Path) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.max_training_epochs=1"]) == 0
    (run_dir,) = run_dirs(toy)
    train_points = len(json.loads((run_dir / "idx_dict.json").read_text())["train"])
    assert _calls(calls) == [{"shape": [train_points, 4], "training": False}]  # default 5000, capped


def test_not_called_for_a_model_that_loads_weights(toy: Path, calls: Path) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.max_training_epochs=1"]) == 0
    (first,) = run_dirs(toy)
    calls.unlink()
    config = write_config(
        toy,
        "loaded.yml",
        info_flow__Classifier__model_dir=str(first),
        info_flow__Classifier__epoch=1,
        info_flow__Classifier__train=0,
    )
    assert main(["train", str(config), "training_params.max_training_epochs=1"]) == 0
    assert _calls(calls) == []
