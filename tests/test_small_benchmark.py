"""The small-model benchmark runs: ``benchmarks/small.py --quick`` times both arms of each recipe on
each data path and prints the ratios.

Epochs 1 vs 2, one repeat (16 short processes, a minute or two on 2 CPU cores). Nothing about the
timings is asserted: at these sizes the noise exceeds the steps' time, and a ratio is then ``n/a``.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_benchmark

CASES = ("digits/device", "digits/loader", "mean_teacher/device", "mean_teacher/loader")


def test_small_quick_prints_each_recipes_ratios(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    done = run_benchmark("small.py", tmp_path, "--json", str(result_file))
    lines = done.stdout.splitlines()
    for case in CASES:
        for kind in ("time", "CPU time"):
            prefix = f"ratio {case} dlscaffold/handwritten (per-step {kind}): "
            assert sum(line.startswith(prefix) for line in lines) == 1, done.stdout
    assert set(json.loads(result_file.read_text())["results"]) == set(CASES)
