"""Smoke tests of this project: the config validates, one dev-set epoch trains, evaluate runs.

Run them with ``python -m pytest`` in the project folder after each change to models.py,
dataloader.py, training_utils.py or config.yml: they take seconds on a CPU.
"""

import json
import math
from pathlib import Path

import pytest

from dlscaffold.cli import main
from dlscaffold.prepare import prepare

PROJECT = Path(__file__).resolve().parents[1]
CONFIG = PROJECT / "config.yml"


def test_config_validates():
    prepared = prepare(CONFIG)  # raises ConfigError listing every problem
    assert prepared.config.info_flow


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory) -> Path:
    """One epoch on the dev set, logged to a temporary folder; returns the run folder."""
    logs = tmp_path_factory.mktemp("runs")
    code = main(
        ["train", str(CONFIG), "--dev", f"logging_params.logging_dir={logs}", "training_params.max_training_epochs=1"]
    )
    assert code == 0
    (run_dir,) = [p for p in logs.iterdir() if p.is_dir()]
    return run_dir


def test_one_dev_epoch_trains(dev_run):
    rows = [json.loads(line) for line in (dev_run / "metrics.jsonl").read_text().splitlines()]
    assert {(row["epoch"], row["split"]) for row in rows} == {(1, "train"), (1, "val")}
    values = [v for row in rows for k, v in row.items() if "/" in k]
    assert values and all(math.isfinite(v) for v in values)


def test_evaluate_runs(dev_run, tmp_path):
    out = tmp_path / "eval.json"
    # the run lies outside this folder: name the project whose code evaluates it
    assert main(["evaluate", str(dev_run), "--json", str(out), "--project", str(PROJECT)]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] > 0
    assert all(math.isfinite(v) for v in result["metrics"].values())
