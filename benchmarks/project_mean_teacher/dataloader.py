"""The mean-teacher benchmark's data: the template's ``CustomDataSet`` (scikit-learn's 8x8 digits),
imported from ``template/dataloader.py`` (not copied), so that this benchmark, the ``digits`` one and
a new project read the same class."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from example_code import load  # noqa: E402  (benchmarks/example_code.py)

CustomDataSet = load(
    Path(__file__).resolve().parents[2] / "template" / "dataloader.py", "dlscaffold_benchmark_template_dataloader"
).CustomDataSet
