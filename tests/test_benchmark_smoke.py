"""The shipped benchmark runs: ``benchmarks/overhead.py --quick`` times both arms and prints the ratio.

Tiny sizes, one repeat (about half a minute a recipe on 2 CPU cores). Nothing about the timings is asserted:
on a busy machine the noise can exceed a tiny epoch, and the ratio is then printed as ``n/a``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_benchmark


@pytest.mark.parametrize("recipe", ["resnet", "fast", "gan", "accumulate"])
def test_overhead_quick_prints_both_arms_and_the_ratio(tmp_path: Path, recipe: str) -> None:
    result_file = tmp_path / "result.json"
    done = run_benchmark(
        "overhead.py", tmp_path, "--recipe", recipe, "--json", str(result_file), "--keep", str(tmp_path / "runs")
    )
    lines = done.stdout.splitlines()
    for arm in ("dlscaffold", "handwritten"):
        row = [line for line in lines if line.startswith(f"{arm} ")]
        assert len(row) == 1, done.stdout
        assert " s " in row[0]  # its short, long and per-epoch times
    assert any(line.startswith("ratio dlscaffold/handwritten (per-epoch time): ") for line in lines), done.stdout

    result = json.loads(result_file.read_text())
    assert set(result["summary"]) == {"dlscaffold", "handwritten"}
    for arm, summary in result["summary"].items():
        assert isinstance(summary["per_epoch_s"], float), arm
        assert len(result["walls_s"][arm]["short"]) == len(result["walls_s"][arm]["long"]) == 1
        if recipe != "gan":  # the GAN's arms print their validation losses, no accuracy
            assert 0.0 <= summary["final_val_accuracy"] <= 1.0, arm  # both arms trained and validated
    assert result["ratio"] is None or result["ratio"] > 0
    # each arm wrote what it is timed for: a dlscaffold run folder, the hand-written loop's checkpoints and events
    runs = tmp_path / "runs"
    models = {"fast": ["Cifar10Airbench"], "gan": ["Generator", "Discriminator"]}.get(recipe, ["Cifar10ResNet"])
    for model in models:
        assert list(runs.glob(f"dlscaffold_long_0/*/checkpoints/{model}_000003.pt"))
    assert (runs / "handwritten_long_0" / "checkpoint_000003.pt").is_file()
    assert list((runs / "handwritten_long_0").glob("events.out.tfevents.*"))
