"""The small-model benchmark runs: ``benchmarks/small.py --quick`` times both arms of each recipe on
each data path and prints the ratios.

Epochs 1 vs 2, one repeat (16 short processes, a minute or two on 2 CPU cores). Nothing about the
timings is asserted: at these sizes the noise exceeds the steps' time, and a ratio is then ``n/a``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
CASES = ("digits/device", "digits/loader", "mean_teacher/device", "mean_teacher/loader")


def test_small_quick_prints_each_recipes_ratios(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "small.py"), "--quick", "--json", str(result_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for case in CASES:
        for kind in ("time", "CPU time"):
            prefix = f"ratio {case} dlscaffold/handwritten (per-step {kind}): "
            assert sum(line.startswith(prefix) for line in lines) == 1, done.stdout
    assert set(json.loads(result_file.read_text())["results"]) == set(CASES)
