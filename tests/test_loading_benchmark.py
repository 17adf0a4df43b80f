"""The data-loading benchmark runs: ``benchmarks/loading.py --quick`` times both arms on each pattern of
docs/data.md and prints each pattern's ratio.

Tiny datasets, one repeat (one to two minutes in all on 2 CPU cores). Nothing about the timings is asserted:
on a busy machine the noise can exceed a tiny epoch, and a ratio is then printed as ``n/a``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import run_benchmark

NEEDS = {"points": "h5py", "large": "h5py", "memmap": "numpy", "images": "PIL"}


def test_loading_quick_prints_each_patterns_ratio(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    done = run_benchmark("loading.py", tmp_path, "--json", str(result_file))
    lines = done.stdout.splitlines()
    expected = [name for name, need in NEEDS.items() if importlib.util.find_spec(need) is not None]
    for name in expected:
        rows = [line for line in lines if line.startswith(f"ratio {name} dlscaffold/handwritten (per-epoch time): ")]
        assert len(rows) == 1, done.stdout
    skipped = set(NEEDS) - set(expected)
    assert all(any(line.startswith("skipped: ") and name in line for line in lines) for name in skipped), done.stdout

    result = json.loads(result_file.read_text())
    assert list(result["patterns"]) == expected
    for name, pattern in result["patterns"].items():
        assert set(pattern["summary"]) == {"dlscaffold", "handwritten"}, name
        for arm, summary in pattern["summary"].items():
            assert isinstance(summary["per_epoch_s"], float), (name, arm)
            assert 0.0 <= summary["final_val_accuracy"] <= 1.0, (name, arm)  # both arms trained and validated
    if "memmap" in expected and Path("/proc/self/smaps").exists():  # the memory is sampled from /proc (Linux)
        memory = result["patterns"]["memmap"]["memory"]
        assert memory["array_bytes"] > 0 and memory["dlscaffold"]["main"]["VmRSS"] > 0, memory
