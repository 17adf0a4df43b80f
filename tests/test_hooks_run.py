"""Project hooks in real runs, through the CLI: an image logged every N steps reaches TensorBoard at
those steps, a hook's stop ends the run ``completed`` with its reason recorded, and a hook that
raises ends the run in one line naming the project's line, its last checkpoint intact."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import run_cli, run_dirs, write_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HOOKS = """

class Grid:
    \"\"\"Logs the decoder's reconstructions of the last batch as an image grid.\"\"\"

    def __call__(self, ctx, rows=2):
        recon = ctx.outputs["Decoder"]["reconstruction"][:4]
        ctx.log_image("samples", recon.reshape(len(recon), 1, rows, -1))


def stop_at(ctx, step=15):
    if ctx.step >= step:
        ctx.stop(f"reached step {ctx.step}")


def broken(ctx):
    if ctx.epoch == 2:
        return 1 / 0  # the hook's bug
    return None


def get_project_hooks():
    return {"Grid": Grid(), "StopAt": stop_at, "Broken": broken}
"""


def _with_hooks(toy: Path, hooks: list[dict]) -> Path:
    (toy / "training_utils.py").write_text((toy / "training_utils.py").read_text() + HOOKS)
    return write_config(
        toy,
        "hooks.yml",
        dataloading_params__batch_size=8,
        training_params__max_training_epochs=3,
        training_params__hooks=hooks,
    )


def _steps(run: Path) -> int:
    return max(row["step"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()))


def test_an_image_hook_every_10_steps_reaches_tensorboard_at_those_steps(toy: Path) -> None:
    config = _with_hooks(toy, [{"name": "Grid", "event": "step", "every": 10, "options": {"rows": 2}}])
    done = run_cli("train", str(config), cwd=toy)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = run_dirs(toy)
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    steps = [e.step for e in events.Images("samples")]
    assert steps == list(range(10, _steps(run) + 1, 10))


def test_a_hook_stop_ends_the_run_completed_with_its_reason(toy: Path) -> None:
    config = _with_hooks(toy, [{"name": "StopAt", "event": "step", "every": 5, "options": {"step": 15}}])
    done = run_cli("train", str(config), cwd=toy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reached step 15" in done.stdout
    (run,) = run_dirs(toy)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["stop_reason"] == "reached step 15"
    assert _steps(run) == 15  # stopped after the step that asked, not at the epoch's end
    state = torch.load(sorted((run / "checkpoints").glob("trainer_*.pt"))[-1], weights_only=True)
    assert state["step"] == 15


def test_a_hook_that_raises_is_one_line_and_keeps_the_last_checkpoint(toy: Path) -> None:
    config = _with_hooks(toy, [{"name": "Broken", "event": "epoch"}])
    line = next(i for i, t in enumerate((toy / "training_utils.py").read_text().splitlines(), 1) if "hook's bug" in t)
    done = run_cli("train", str(config), cwd=toy)
    assert done.returncode != 0
    errors = [text for text in done.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1 and f"training_utils.py:{line}" in errors[0], done.stderr
    assert "ZeroDivisionError" in errors[0] and "Traceback" not in done.stderr
    (run,) = run_dirs(toy)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    evaluated = run_cli("evaluate", str(run), "--epoch", "1", cwd=toy)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
