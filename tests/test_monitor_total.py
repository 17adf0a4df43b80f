"""``training_params.monitor: total``: the weighted sum of the losses, logged as ``total_loss`` and
picking the best epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_dirs, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

WEIGHTS = {"Classifier/ce": 1.0, "Decoder/reconstruction": 0.5}  # the toy project's two losses


def test_monitor_total_logs_the_objective_and_picks_the_best_epoch_by_it(toy: Path, capsys) -> None:
    config = write_config(toy, "total.yml", training_params__monitor="total", training_params__max_training_epochs=3)
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    (run,) = run_dirs(toy)
    rows = read_metrics(run)
    assert {r["split"] for r in rows} == {"train", "val"}
    for row in rows:
        assert row["total_loss"] == pytest.approx(sum(w * row[name] for name, w in WEIGHTS.items()), rel=1e-9)
    val = {r["epoch"]: r["total_loss"] for r in rows if r["split"] == "val"}
    best = json.loads((run / "run.json").read_text())["best"]
    assert best == {"epoch": min(val, key=val.get), "metric": "total_loss", "value": min(val.values())}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.value for e in events.Scalars("val/total_loss")] == pytest.approx(list(val.values()))

    capsys.readouterr()
    assert main(["runs", str(toy / "runs")]) == 0
    assert f"{best['epoch']}: total_loss=" in capsys.readouterr().out


def test_monitor_names_are_checked_before_training(toy: Path, capsys) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.monitor=totl"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert "training_params.monitor: found 'totl'" in line and "did you mean 'total'?" in line, line
    assert run_dirs(toy) == []
