"""``training_params.monitor: none``: a run without a best epoch (a GAN's). No ``<Model>_best.pt``, no
``best`` in run.json, no best lines; ``best`` is refused in one line and ``last`` is the default epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, run_dirs, write_config

from dlscaffold.api import load_run
from dlscaffold.cli import main
from dlscaffold.config import load_config
from dlscaffold.config.monitor import NONE, monitored
from dlscaffold.errors import UserError
from dlscaffold.records.checkpoint import resolve_epoch, trained_without_monitor
from dlscaffold.records.rundir import read_run_info
from dlscaffold.run.summary import best_epoch_line

MODELS = ["Encoder", "Classifier", "Decoder"]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error")]


def _as_if_monitor_none(run: Path) -> None:
    """Make a trained run look as one trained with ``monitor: none`` leaves it: the config says so, no
    best weights, no best record."""
    config = yaml.safe_load((run / "config.yml").read_text())
    config["training_params"]["monitor"] = NONE
    (run / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for path in (run / "checkpoints").glob("*_best.pt"):
        path.unlink()
    (run / "run.json").write_text(json.dumps({k: v for k, v in read_run_info(run).items() if k != "best"}))


# ------------------------------------------------------------------------------ the config


def test_monitored_is_none_and_no_best_epoch_line(toy: Path) -> None:
    config = load_config(toy / "config.yml", [f"training_params.monitor={NONE}"])
    assert config.training_params.monitor == "none"  # a string, not YAML's null
    assert monitored(config) == (None, "min")
    assert best_epoch_line(config) is None
    assert best_epoch_line(load_config(toy / "config.yml")) is not None  # two losses, no monitor: the line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training_params.early_stopping_patience=2", "training_params.early_stopping_patience: found 2"),
        ("training_params.monitor_mode=max", "training_params.monitor_mode: found max"),
    ],
)
def test_patience_and_mode_with_monitor_none_are_config_errors(toy: Path, capsys, override: str, expected: str) -> None:
    assert main(["train", str(toy / "config.yml"), f"training_params.monitor={NONE}", override]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert expected in line and "monitor is none" in line, line
    assert run_dirs(toy) == []


def test_a_misspelled_monitor_suggests_none(toy: Path, capsys) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.monitor=nne"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "training_params.monitor: found 'nne'" in line and "did you mean 'none'?" in line, line


def test_a_sweep_without_a_metric_over_monitor_none_is_one_line(toy: Path, capsys) -> None:
    config = write_config(toy, "none.yml", training_params__monitor=NONE)
    for fields in ({}, {"metric": NONE}):
        spec = {
            "config": config.name,
            "trials": 2,
            "overrides": ["training_params.max_training_epochs=1"],
            "params": {"training_params.lrn_rate": {"float": [1.0e-3, 1.0e-1], "log": True}},
            **fields,
        }
        (toy / "sweep.yml").write_text(yaml.safe_dump(spec))
        assert main(["sweep", str(toy / "sweep.yml")]) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert "metric:" in line and "no value to optimise" in line, line
        assert not (toy / "runs" / "sweeps").exists()


# ------------------------------------------------------------------------------ resolving epochs


def _fake_run(folder: Path, monitor: str | None) -> Path:
    """A run folder as far as resolving epochs reads it: its config and weight files (not loadable)."""
    (folder / "checkpoints").mkdir(parents=True)
    params = {"monitor": monitor} if monitor else {}
    (folder / "config.yml").write_text(yaml.safe_dump({"training_params": params}))
    for name in MODELS:
        for epoch in (1, 2):
            (folder / "checkpoints" / f"{name}_{epoch:06d}.pt").write_bytes(b"")
    return folder


def test_resolve_epoch_refuses_best_of_a_run_without_monitor(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", NONE)
    assert trained_without_monitor(run) and trained_without_monitor(run / "checkpoints")
    assert resolve_epoch(run, MODELS, None) == 2 and resolve_epoch(run, MODELS, "last") == 2
    assert resolve_epoch(run, MODELS, 1) == 1
    for folder in (run, run / "checkpoints"):
        with pytest.raises(UserError) as err:
            resolve_epoch(folder, MODELS, "best")
        (line,) = err.value.problems
        assert line.startswith("--epoch: found best;") and "training_params.monitor: none" in line, line
        assert "no best epoch" in line and "use last or an epoch number" in line and "\n" not in line


def test_other_runs_keep_their_best_epoch_message(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", None)
    assert not trained_without_monitor(run) and not trained_without_monitor(tmp_path / "nothing")
    with pytest.raises(UserError, match="records no best epoch"):
        resolve_epoch(run, MODELS, "best")
    for name in MODELS:
        (run / "checkpoints" / f"{name}_best.pt").write_bytes(b"")
    assert resolve_epoch(run, MODELS, "best") == "best"


# ------------------------------------------------------------------------------ a trained run


@pytest.fixture(scope="module")
def no_best_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The toy project trained for 2 epochs, its run then made to look as ``monitor: none`` leaves it."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("none") / "toy")
    config = write_config(toy, "two.yml", training_params__max_training_epochs=2)
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    (run,) = run_dirs(toy)
    _as_if_monitor_none(run)
    return toy, run


def test_load_run_defaults_to_last_and_refuses_best(no_best_run: tuple[Path, Path]) -> None:
    _, run = no_best_run
    loaded = load_run(run)
    assert loaded.epoch == 2 and loaded.requested_epoch == "last"
    assert load_run(run, epoch=1).epoch == 1
    with pytest.raises(UserError) as err:
        load_run(run, epoch="best")
    (line,) = err.value.problems
    assert line.startswith("epoch: found best;") and "training_params.monitor: none" in line, line


def test_evaluate_loads_the_last_epoch_and_refuses_best(no_best_run: tuple[Path, Path], capsys) -> None:
    _, run = no_best_run
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert f"{run}: epoch 2 (last)" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--epoch", "best"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "--epoch: found best;" in line and "training_params.monitor: none" in line, line


def test_a_model_dir_at_best_of_such_a_run_is_a_config_error(no_best_run: tuple[Path, Path], capsys) -> None:
    toy, run = no_best_run
    config = write_config(
        toy, "from_none.yml", info_flow__Encoder__model_dir=str(run), info_flow__Encoder__epoch="best"
    )
    capsys.readouterr()
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'other'}"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: info_flow.Encoder.epoch: found best;"), line
    assert "training_params.monitor: none" in line and "no best epoch" in line, line
    assert not (toy / "other").exists()


# ------------------------------------------------------------------------------ end to end


def test_a_run_with_monitor_none_keeps_no_best(toy: Path, capsys) -> None:
    """Trained with ``monitor: none``: no best weights, record or lines; the last epoch is the default."""
    config = write_config(toy, "none.yml", training_params__monitor=NONE, training_params__max_training_epochs=3)
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    out = capsys.readouterr().out
    (run,) = run_dirs(toy)
    assert "Best val" not in out and "best epoch: by" not in out, out
    assert not list((run / "checkpoints").glob("*_best.pt"))
    assert "best" not in read_run_info(run)
    assert load_run(run).epoch == 3
    with pytest.raises(UserError, match="training_params.monitor: none"):
        load_run(run, epoch="best")

    assert main(["evaluate", str(run)]) == 0
    assert f"{run}: epoch 3 (last)" in capsys.readouterr().out
