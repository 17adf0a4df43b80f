"""docs/losses.md is generated from the registry; it must match what the code declares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dlscaffold.losses import EVALS, LOSSES
from dlscaffold.losses_doc import reference_markdown

PAGE = Path(__file__).resolve().parents[1] / "docs" / "losses.md"


def test_docs_losses_md_matches_the_registry() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/losses.md is out of date: run `python -m dlscaffold.losses_doc > docs/losses.md`"
    )


def test_every_built_in_has_a_row() -> None:
    page = reference_markdown()
    for name in {**LOSSES, **EVALS}:
        assert f"| `{name}` |" in page
    assert "do not edit" in page.splitlines()[3]


def test_the_generator_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dlscaffold.losses_doc"], capture_output=True, text=True, encoding="utf-8", check=True
    )
    assert result.stdout == reference_markdown()
