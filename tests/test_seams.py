"""Seams between the phases: evaluating a run builds no optimizer (what each module may import is
tests/test_layers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_dirs, write_config
from typer.testing import CliRunner

import dlscaffold
from dlscaffold.cli import app

ROOT = Path(dlscaffold.__file__).parent


@pytest.fixture
def optimizers_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``torch.optim.Optimizer`` constructed from now on, by class name."""
    built: list[str] = []
    original = torch.optim.Optimizer.__init__

    def counting(self: torch.optim.Optimizer, *args: object, **kwargs: object) -> None:
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", counting)
    return built


def test_evaluate_and_load_run_construct_no_optimizer(toy: Path, optimizers_built: list[str]) -> None:
    result = run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy)  # its own process
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)

    loaded = dlscaffold.load_run(run, epoch="last")
    evaluated = loaded.evaluate()
    out = toy / "eval.json"
    cli = CliRunner().invoke(app, ["evaluate", str(run), "--epoch", "last", "--json", str(out)])
    assert cli.exit_code == 0, cli.output
    assert optimizers_built == []
    assert json.loads(out.read_text())["metrics"] == pytest.approx(evaluated["metrics"])

    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # the counter counts
    assert optimizers_built == ["SGD"]


def test_training_still_checks_the_optimizer_settings_before_anything_is_built(toy: Path) -> None:
    config = write_config(toy, "bad.yml", training_params__optimizer={"name": "SGD", "kwargs": {"lr": -1.0}})
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: training_params.optimizer: the optimizer rejects its settings (ValueError:" in result.stderr
    assert not (toy / "runs").exists()


def test_the_best_weights_are_the_saved_epoch_not_a_second_write(toy: Path) -> None:
    """The best epoch's weights are its own epoch file (a hard link), and they load as that epoch."""
    config = write_config(
        toy,
        training_params__max_training_epochs=3,
        training_params__monitor="Classifier/accuracy",
        training_params__monitor_mode="max",
    )
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    best = json.loads((run / "run.json").read_text())["best"]
    for model in ("Encoder", "Classifier", "Decoder"):
        saved = run / "checkpoints" / f"{model}_{best['epoch']:06d}.pt"
        best_file = run / "checkpoints" / f"{model}_best.pt"
        assert best_file.stat().st_ino == saved.stat().st_ino
        assert all(
            torch.equal(a, b) for a, b in zip(torch.load(best_file).values(), torch.load(saved).values(), strict=True)
        )
