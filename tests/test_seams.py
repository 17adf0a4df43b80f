"""Seams between the phases: evaluating a run builds no optimizer, and the pre-run phase and the
Python API depend only on what they need (read from their source, lazy imports included)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_dirs, write_config
from typer.testing import CliRunner

import dlscaffold
from dlscaffold.cli import app

ROOT = Path(dlscaffold.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every ``dlscaffold`` module a file imports, anywhere in it: ``import dlscaffold.x``,
    ``from dlscaffold.x import y`` and ``from dlscaffold import x``, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dlscaffold"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "dlscaffold":
                found.update(f"dlscaffold.{a.name}" for a in node.names)
            elif node.module.startswith("dlscaffold."):
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # a relative import: name it plainly
            found.update(f"dlscaffold.{node.module or a.name}" for a in node.names)
    return found


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("prepare", ("builder", "flow", "epoch", "trainer", "loop")),  # checks build nothing
        ("api", ("evaluate", "cli")),  # the Python API imports no command module
    ],
)
def test_a_module_imports_none_of_what_it_must_not(module: str, forbidden: tuple[str, ...]) -> None:
    imported = _imported_modules(ROOT / f"{module}.py")
    assert imported, module  # the reader finds imports at all
    assert not imported & {f"dlscaffold.{name}" for name in forbidden}, sorted(imported)


def test_the_import_reader_sees_lazy_and_package_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from dlscaffold import flow\n\n\ndef f():\n    from dlscaffold.loop import fit\n    import dlscaffold.epoch\n"
    )
    assert _imported_modules(source) == {"dlscaffold.flow", "dlscaffold.loop", "dlscaffold.epoch"}


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
