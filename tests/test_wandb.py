"""The Weights & Biases tracker, offline: what its transaction log holds, resume, and the config checks."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_dirs, write_config

from dlscaffold.cli import main
from dlscaffold.config import load_config
from dlscaffold.config.schema import WandbParams
from dlscaffold.errors import UserError
from dlscaffold.records.rundir import read_metrics, read_run_info
from dlscaffold.records.trackers import WandB

pytest.importorskip("wandb")

METRICS = ("Classifier/ce", "Classifier/accuracy", "Decoder/reconstruction", "total_loss")


def _records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-<id>.wandb`` transaction log: a LevelDB-style log of 32 KiB
    blocks after a 7-byte file header, each chunk with a 7-byte header (CRC, length, type: 1 a whole
    record, 2/3/4 its first, middle and last part)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, parts, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts, pos = parts + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def _read(offline_run: Path) -> dict[str, Any]:
    """An offline run folder as ``{"id", "config", "history": {step: {key: value}}, "exit_code"}``."""
    (log,) = offline_run.glob("run-*.wandb")
    read: dict[str, Any] = {"config": {}, "history": {}, "exit_code": None}
    for record in _records(log):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            read["config"].update({item.key: json.loads(item.value_json) for item in updates})
            read["id"] = record.run.run_id if kind == "run" else read.get("id")
        elif kind == "history":
            items = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            read["history"].setdefault(record.history.step.num, {}).update(items)
        elif kind == "exit":
            read["exit_code"] = record.exit.exit_code
    return read


def _wandb_variables() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("WANDB_")}


def _offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def _assert_epochs_match(history: dict[int, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Each metrics.jsonl row's values, and its epoch, at the row's step under ``<split>/``."""
    assert rows
    for row in rows:
        logged = history[row["step"]]
        assert logged["epoch"] == row["epoch"]
        expected = [row[name] for name in METRICS]
        assert [logged[f"{row['split']}/{name}"] for name in METRICS] == pytest.approx(expected, rel=1e-6)


def test_offline_run_holds_the_config_and_every_epoch_of_metrics_jsonl(toy: Path) -> None:
    exit_hook, environment = sys.exit, _wandb_variables()
    config = write_config(toy, logging_params__trackers=["wandb"], training_params__max_training_epochs=2)
    assert main(["train", str(config)]) == 0
    (run,) = run_dirs(toy)
    (offline,) = _offline_runs(run)
    read = _read(offline)
    assert read["id"] == read_run_info(run)["wandb_run_id"] and offline.name.endswith(read["id"])
    assert read["config"]["training_params.lrn_rate"] == 0.01
    assert read["config"]["info_flow.Encoder.init_args.enc_dim"] == 4
    assert read["config"]["logging_params.trackers"] == ["wandb"]
    _assert_epochs_match(read["history"], read_metrics(run))
    steps = [step for step, values in read["history"].items() if "train_step/Classifier/ce" in values]
    assert steps == list(range(2, 13, 2))  # log_every: 2, 6 steps an epoch
    assert read["exit_code"] == 0
    # The process as it was: W&B's service stopped, its exit and exception hooks taken back.
    assert _wandb_variables() == environment and sys.exit is exit_hook
    assert "wandb" not in getattr(sys.excepthook, "__module__", "")


def test_resume_continues_the_same_wandb_run(toy: Path) -> None:
    config = write_config(toy, logging_params__trackers=["wandb"], training_params__max_training_epochs=2)
    assert main(["train", str(config)]) == 0
    (run,) = run_dirs(toy)
    run_id = read_run_info(run)["wandb_run_id"]
    assert main(["train", "--resume", str(run), "training_params.max_training_epochs=3"]) == 0
    assert read_run_info(run)["wandb_run_id"] == run_id
    first, second = (_read(path) for path in _offline_runs(run))  # wandb sync uploads both, in this order
    assert first["id"] == second["id"] == run_id
    assert second["config"]["training_params.max_training_epochs"] == 3
    rows = read_metrics(run)
    _assert_epochs_match(first["history"], [r for r in rows if r["epoch"] <= 2])
    _assert_epochs_match(second["history"], [r for r in rows if r["epoch"] == 3])
    assert min(second["history"]) > max(first["history"])  # the resumed session logs only its own steps


def test_images_and_a_failed_run_s_exit_code(tmp_path: Path) -> None:
    tracker = WandB(tmp_path, {"a": {"b": 1}}, WandbParams(tags=["smoke"]))
    tracker.images(3, {"images/Decoder.image": torch.rand(3, 4, 6), "images/dataset.mask": torch.rand(1, 4, 6)})
    tracker.close("failed")
    (offline,) = _offline_runs(tmp_path)
    read = _read(offline)
    assert read["config"] == {"a.b": 1, "_wandb": read["config"]["_wandb"]}
    from PIL import Image

    logged = read["history"][3]
    for key, mode in (("images/Decoder.image", "RGB"), ("images/dataset.mask", "L")):
        assert logged[f"{key}/_type"] == "image-file"
        with Image.open(offline / "files" / logged[f"{key}/path"]) as image:
            assert image.size == (6, 4) and image.mode == mode
    assert read["exit_code"] == 1
    assert "wandb_run_id" in read_run_info(tmp_path)


def test_config_problems_are_one_line_each(toy: Path, monkeypatch) -> None:
    config = write_config(toy, "unused.yml", logging_params__wandb={"project": "digits"})  # trackers: [tensorboard]
    with pytest.raises(UserError) as err:
        load_config(config)
    (line,) = err.value.problems
    assert line.startswith("logging_params.wandb:") and "logging_params.trackers" in line
    config = write_config(toy, "mode.yml", logging_params__trackers=["wandb"], logging_params__wandb={"mode": "x"})
    with pytest.raises(UserError) as err:
        load_config(config)
    (line,) = err.value.problems
    assert line.startswith("logging_params.wandb.mode:") and "offline" in line
    config = write_config(toy, "key.yml", logging_params__trackers=["wandb"], logging_params__wandb={"projet": "a"})
    with pytest.raises(UserError) as err:
        load_config(config)
    (line,) = err.value.problems
    assert "logging_params.wandb.projet: unknown key" in line and "project" in line

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = write_config(toy, "missing.yml", logging_params__trackers=["wandb"])
    with pytest.raises(UserError) as err:
        load_config(config)
    (line,) = err.value.problems
    assert line.startswith("logging_params.trackers:") and "pip install 'dlscaffold[wandb]'" in line
