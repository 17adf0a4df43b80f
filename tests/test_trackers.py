"""Trackers behind one protocol, and train() as a function a sweep can call many times in one process."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_project, run_cli, run_dirs

from dlscaffold.cli import main
from dlscaffold.config import load_config
from dlscaffold.errors import UserError
from dlscaffold.records.rundir import read_metrics, read_run_info
from dlscaffold.train import RunResult, TrainOptions, train


def _config(project: Path, **logging_params: object) -> Path:
    raw = yaml.safe_load((project / "config.yml").read_text())
    raw["training_params"]["max_training_epochs"] = 3
    raw["logging_params"].update(logging_params)
    (project / "config.yml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return project / "config.yml"


def _events(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.startswith("events.out.tfevents.")]


def test_no_trackers_writes_metrics_jsonl_and_no_tensorboard_events(toy: Path) -> None:
    config = _config(toy, trackers=[])
    assert main(["train", str(config)]) == 0
    (run,) = run_dirs(toy)
    rows = [(r["epoch"], r["split"]) for r in read_metrics(run)]
    assert rows == [(e, s) for e in (1, 2, 3) for s in ("train", "val")]
    assert _events(run) == []


def test_mlflow_run_holds_the_config_and_every_epoch_of_metrics_jsonl(toy: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{toy / 'tracking.db'}"
    config = _config(toy, trackers=["tensorboard", "mlflow"], mlflow_uri=uri)
    assert main(["train", str(config)]) == 0
    (run,) = run_dirs(toy)
    assert _events(run)  # tensorboard beside it
    info = read_run_info(run)["mlflow"]
    assert info["tracking_uri"] == uri
    client = MlflowClient(tracking_uri=uri)
    mlrun = client.get_run(info["run_id"])
    assert mlrun.data.params["training_params.lrn_rate"] == "0.01"
    assert mlrun.data.params["info_flow.Encoder.init_args.enc_dim"] == "4"
    assert mlrun.data.tags["dlscaffold.status"] == "completed" and mlrun.data.tags["dlscaffold.run_dir"] == str(run)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run.name
    rows = read_metrics(run)
    for split in ("train", "val"):
        for name in ("Classifier/accuracy", "Classifier/ce", "Decoder/reconstruction"):
            history = sorted(client.get_metric_history(info["run_id"], f"{split}/{name}"), key=lambda m: m.step)
            expected = [(r["epoch"], r[name]) for r in rows if r["split"] == split]
            assert [m.step for m in history] == [epoch for epoch, _ in expected]
            assert [m.value for m in history] == pytest.approx([value for _, value in expected], rel=1e-6)
    assert client.get_metric_history(info["run_id"], "train_step/Classifier/ce")  # per-step scalars too


def test_a_tracker_that_fails_mid_run_is_switched_off_with_one_warning(toy: Path, monkeypatch, caplog) -> None:
    from dlscaffold.records.trackers import TensorBoard

    original, closed = TensorBoard.epoch_row, []

    def flaky(self, epoch, split, step, values):
        if epoch == 2:
            raise OSError("database is locked")
        original(self, epoch, split, step, values)

    original_close = TensorBoard.close

    def close(self, status):
        closed.append(status)
        original_close(self, status)

    monkeypatch.setattr(TensorBoard, "epoch_row", flaky)
    monkeypatch.setattr(TensorBoard, "close", close)
    config = _config(toy)
    with caplog.at_level(logging.WARNING, logger="dlscaffold"):
        result = train(config, echo=lambda line: None)
    warnings = [r.getMessage() for r in caplog.records if "tracker" in r.getMessage()]
    assert len(warnings) == 1 and "tensorboard" in warnings[0] and "database is locked" in warnings[0]
    assert closed == ["failed"]  # switched off: closed once, at once, to release what it holds
    assert result.status == "completed" and read_run_info(result.run_dir)["status"] == "completed"
    assert len(read_metrics(result.run_dir)) == 6  # metrics.jsonl went on
    assert (result.run_dir / "checkpoints").is_dir()


def test_unknown_tracker_and_missing_mlflow_are_one_config_line(toy: Path, monkeypatch) -> None:
    config = _config(toy, trackers=["tensorbord"])
    with pytest.raises(UserError) as err:
        load_config(config)
    (line,) = err.value.problems
    assert "logging_params.trackers" in line and "unknown tracker 'tensorbord'" in line and "tensorboard" in line
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    config = _config(toy, trackers=["mlflow"])
    with pytest.raises(UserError) as err:
        load_config(config)
    (line,) = err.value.problems
    assert "pip install 'dlscaffold[mlflow]'" in line


def _final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / "checkpoints"
    paths = [p for p in sorted(folder.glob("*_000003.pt")) if not p.name.startswith("trainer")]
    return {p.name: torch.load(p, weights_only=True) for p in paths}


def _same(run_a: Path, run_b: Path) -> None:
    assert (run_a / "metrics.jsonl").read_text() == (run_b / "metrics.jsonl").read_text()
    weights_a, weights_b = _final_weights(run_a), _final_weights(run_b)
    assert weights_a and weights_a.keys() == weights_b.keys()
    for name in weights_a:
        for key, value in weights_a[name].items():
            other = weights_b[name][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, (name, key)


def test_two_runs_in_one_process_equal_two_processes(tmp_path: Path) -> None:
    """A sweep runs trials in one process: they must not see each other (state, modules, options)."""
    project = copy_project("toyproject", tmp_path / "toy")
    config = _config(project, trackers=[])
    options = TrainOptions()
    results, modules = [], []
    before = sys.modules.get("dataloader")  # another test's project, or none: put back as it was
    for _ in range(2):
        results.append(train(config, ["logging_params.run_notes=inproc"], options=options, echo=lambda line: None))
        modules.append(sys.modules.get("dataloader"))
    assert modules == [before, before]  # the run's project code is unloaded after it: no module state carries over
    assert not any(str(project) in str(getattr(m, "__file__", "")) for m in list(sys.modules.values()))
    assert str(project) not in sys.path
    assert options == TrainOptions()  # the caller's options are left as they were
    assert not torch.is_anomaly_enabled()
    for result in results:
        assert isinstance(result, RunResult) and result.status == "completed" and result.epochs == 3
        assert result.monitor == "Classifier/ce" and result.best_epoch in (1, 2, 3)
        rows = [r for r in read_metrics(result.run_dir) if r["split"] == "val"]
        assert result.last_val["Classifier/ce"] == pytest.approx(rows[-1]["Classifier/ce"])
        assert result.best_value == pytest.approx(min(r["Classifier/ce"] for r in rows))
    for _ in range(2):
        cli = run_cli("train", "config.yml", "logging_params.run_notes=cli", cwd=project)
        assert cli.returncode == 0, cli.stderr
    inproc = [r for r in run_dirs(project) if r.name.endswith("inproc")]
    processes = [r for r in run_dirs(project) if r.name.endswith("cli")]
    assert len(inproc) == len(processes) == 2
    for a, b in zip(inproc, processes, strict=True):
        _same(a, b)
    assert json.loads((inproc[1] / "run.json").read_text())["status"] == "completed"


def test_every_tracker_name_the_config_accepts_has_an_opener() -> None:
    from dlscaffold.config import TRACKERS
    from dlscaffold.records.trackers import OPENERS

    assert set(OPENERS) == set(TRACKERS)


def test_tensorboard_scalars_wait_in_memory_and_are_written_together(tmp_path: Path) -> None:
    """At most every FLUSH_SECONDS, all at once (so the writer's thread does not run between steps),
    each with the time it was logged; whatever waits is written at the end."""
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlscaffold.records.trackers import FLUSH_SECONDS, TensorBoard

    def scalars() -> dict[str, list]:
        events = EventAccumulator(str(tmp_path))
        events.Reload()
        return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}

    log = TensorBoard(tmp_path)
    log.epoch_row(1, "train", 10, {"Classifier/ce": 0.5})  # the first row: written at once
    assert [e.step for e in scalars()["train/Classifier/ce"]] == [10]
    logged = time.time()
    log.step_scalars(15, {"Classifier/ce": 0.25, "lr": 0.1})
    log.epoch_row(2, "val", 20, {"Classifier/ce": 0.75})
    assert set(scalars()) == {"train/Classifier/ce"}  # waiting (the test takes far less than FLUSH_SECONDS)
    time.sleep(0.05)
    log.close("completed")
    written = scalars()
    assert [(e.step, e.value) for e in written["train_step/Classifier/ce"]] == [(15, 0.25)]
    assert [(e.step, e.value) for e in written["val/Classifier/ce"]] == [(20, 0.75)]
    assert [e.step for e in written["train_step/lr"]] == [15]
    assert logged <= written["val/Classifier/ce"][0].wall_time < logged + 0.05 < time.time()  # when logged
    assert FLUSH_SECONDS <= 5  # a run's TensorBoard lags it by seconds at most
