"""Test-time augmentation: ``CustomDataSet.tta_views`` and ``training_params.tta_outputs`` average the
named outputs over weighted views in validation, ``evaluate`` and ``load_run(...).evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_dirs

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

VIEWS = """


def _tta_views(self, batch):
    shifted = dict(batch, features=batch["features"] + 1.0)
    return [(3.0, batch), (1.0, shifted)]  # weights normalised: 0.75 and 0.25


CustomDataSet.tta_views = _tta_views
"""

TTA = "training_params.tta_outputs=[Classifier.class_logits]"


@pytest.fixture
def tta_toy(toy: Path) -> Path:
    (toy / "dataloader.py").write_text((toy / "dataloader.py").read_text() + VIEWS)
    return toy


def test_views_average_the_named_outputs_in_validation_and_evaluate(tta_toy: Path, tmp_path: Path) -> None:
    assert main(["train", str(tta_toy / "config.yml"), "training_params.max_training_epochs=1", TTA]) == 0
    (run_dir,) = run_dirs(tta_toy)
    run = dlscaffold.load_run(run_dir, epoch=1)
    with_tta, plain = run.evaluate("val"), run.evaluate("val", tta=False)
    assert with_tta["tta"] == {"outputs": ["Classifier.class_logits"], "views": 2} and plain["tta"] is None

    items = [run.dataset()[i] for i in run.split["val"]]
    labels = torch.as_tensor([item["class_idx"] for item in items]).long()
    logits = run.forward(items)["Classifier"]["class_logits"]
    shifted = run.forward([dict(item, features=item["features"] + 1.0) for item in items])["Classifier"]["class_logits"]
    averaged = 0.75 * logits + 0.25 * shifted
    expected = torch.nn.functional.cross_entropy(averaged, labels).item()
    assert with_tta["metrics"]["Classifier/ce"] == pytest.approx(expected, rel=1e-5)
    assert plain["metrics"]["Classifier/ce"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5
    )
    logged = [row for row in read_metrics(run_dir) if row["split"] == "val"][-1]
    assert logged["Classifier/ce"] == pytest.approx(expected, rel=1e-5)  # validation used the views

    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run_dir), "--no-tta", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["tta"] is None


def test_tta_outputs_without_tta_views_is_one_line(toy: Path, capsys) -> None:
    assert main(["train", str(toy / "config.yml"), TTA]) == 2
    err = capsys.readouterr().err
    assert "training_params.tta_outputs needs CustomDataSet.tta_views" in err and "Traceback" not in err
