"""Training stays what it was: the first training batch, each model's initial weights and its
weights after three training steps, hashed (SHA-256 of the exact bytes) and pinned in
``tests/determinism.json``.

The first run writes that file (commit it); later runs compare and name the first thing that
changed: the data (the dataset, its split, ``transform_batch``), the initialisation of a model, or
the training step. A change you made on purpose is accepted with ``pytest --regen-determinism``
(or ``DLSCAFFOLD_REGEN=1 pytest``), which rewrites the file. The run is built as training builds it,
on the CPU with ``training_params.seed``, in fp32, in a separate process whose kernels use AVX2 (so
that the pins hold on other x86-64 machines, CI's included); nothing is written to ``runs/``.
"""

import json
import os
from pathlib import Path

import pytest

import dlscaffold
from dlscaffold.tools.fingerprint import difference

PROJECT = Path(__file__).resolve().parents[1]
CONFIG = PROJECT / "config.yml"
PINS = Path(__file__).with_name("determinism.json")
ACCEPT = "pytest --regen-determinism (or DLSCAFFOLD_REGEN=1 pytest)"


def test_training_is_deterministic(request):
    current = dlscaffold.fingerprint(CONFIG, steps=3)
    regen = request.config.getoption("--regen-determinism") or os.environ.get("DLSCAFFOLD_REGEN") == "1"
    if regen or not PINS.exists():
        PINS.write_text(json.dumps(current, indent=2) + "\n")
        pytest.skip(f"wrote {PINS.relative_to(PROJECT)}: commit it; later runs compare against it")
    changed = difference(json.loads(PINS.read_text()), current)
    assert changed is None, (
        f"training differs from {PINS.relative_to(PROJECT)}: {changed}. If you changed this on purpose, "
        f"accept it with {ACCEPT} and commit the file."
    )
