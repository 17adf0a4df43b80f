"""Weight lineage: run.json records where each model's weights came from; `runs --lineage` shows the
tree; resuming or evaluating a run whose source weights file changed warns once."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import copy_project, run_cli, run_dirs, write_config


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(project, pretrain run, head run): the head run loads a frozen Encoder from the pretrain run."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("lineage") / "toy")
    result = run_cli("train", "config.yml", "training_params.max_training_epochs=2", cwd=toy)
    assert result.returncode == 0, result.stderr
    (first,) = run_dirs(toy)
    config = write_config(
        toy,
        "head.yml",
        info_flow__Encoder={"train": 0, "model_dir": str(first), "epoch": "last", "inputs": {"features": "dataset"}},
        logging_params__run_notes="head",
    )
    result = run_cli("train", str(config), "training_params.max_training_epochs=1", cwd=toy)
    assert result.returncode == 0, result.stderr
    (second,) = [r for r in run_dirs(toy) if r != first]
    return toy, first, second


def models_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["models"]


def test_run_json_records_the_run_epoch_and_sha256_of_the_loaded_weights(pair: tuple[Path, Path, Path]) -> None:
    toy, first, second = pair
    assert models_of(first) == {
        name: {"role": "trained", "class": name, "source": None} for name in ("Encoder", "Classifier", "Decoder")
    }
    lineage = models_of(second)
    weights = first / "checkpoints" / "Encoder_000002.pt"  # epoch: last, resolved to the number
    assert lineage["Encoder"] == {
        "role": "frozen",
        "class": "Encoder",
        "source": {
            "run": str(first.resolve()),
            "epoch": 2,
            "file": "Encoder_000002.pt",
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        },
    }
    assert lineage["Classifier"] == {"role": "trained", "class": "Classifier", "source": None}

    shown = run_cli("runs", "--lineage", str(second), cwd=toy)
    assert shown.returncode == 0, shown.stderr
    sha = lineage["Encoder"]["source"]["sha256"]
    assert shown.stdout.splitlines() == [
        f"runs/{second.name}  (completed)",
        f"└── Encoder <- runs/{first.name} epoch 2 (Encoder_000002.pt, sha256 {sha[:8]}...)  (completed)",
    ]
    scratch = run_cli("runs", "--lineage", str(first), cwd=toy)
    assert scratch.stdout.splitlines()[0] == f"runs/{first.name}  (completed)"
    assert "trains every model from scratch" in scratch.stdout

    bad = run_cli("runs", "--lineage", "config.yml", cwd=toy)
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1 and "not a run folder" in bad.stderr


def test_a_changed_source_file_gives_one_warning_on_evaluate_and_resume(pair: tuple[Path, Path, Path]) -> None:
    toy, first, second = pair
    source = first / "checkpoints" / "Encoder_000002.pt"
    recorded = models_of(second)["Encoder"]["source"]
    original = source.read_bytes()

    def warnings(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if "since this run recorded it" in line]

    unchanged = run_cli("evaluate", str(second), cwd=toy)
    assert unchanged.returncode == 0, unchanged.stderr
    assert warnings(unchanged.stderr) == []
    try:
        weights = torch.load(source, weights_only=True)
        torch.save({k: v + 1 for k, v in weights.items()}, source)  # someone retrained or overwrote it
        result = run_cli("evaluate", str(second), cwd=toy)
        assert result.returncode == 0, result.stderr  # a warning, not a failure
        (line,) = warnings(result.stderr)
        assert line.startswith("info_flow.Encoder: ") and str(source.resolve()) in line and "changed" in line

        resumed = run_cli("train", "--resume", str(second), "training_params.max_training_epochs=2", cwd=toy)
        assert resumed.returncode == 0, resumed.stderr
        assert len(warnings(resumed.stderr)) == 1
        assert models_of(second)["Encoder"]["source"] == recorded  # a resume keeps what the run recorded

        shutil.move(first, first.with_name("moved_away"))
        shown = run_cli("runs", "--lineage", str(second), cwd=toy)
        assert shown.returncode == 0 and shown.stdout.splitlines()[1].endswith("(missing)")
    finally:
        if not first.exists():
            shutil.move(first.with_name("moved_away"), first)
        source.write_bytes(original)


def test_the_tree_finds_a_cycle_however_a_run_is_spelled(tmp_path: Path) -> None:
    """Run A's weights come from B, and B's from A written another way (A/../A): hand-made run.json
    files, as a hostile or broken folder may hold. The tree stops at the cycle."""
    from dlscaffold.records.lineage import lineage_lines

    a, b = tmp_path / "a", tmp_path / "b"
    for run, source in ((a, b), (b, a / ".." / "a")):
        run.mkdir()
        (run / "config.yml").write_text("logging_params: {}\n")
        (run / "idx_dict.json").write_text("{}")
        models = {"Encoder": {"role": "frozen", "class": "Net", "source": {"run": str(source), "epoch": 1}}}
        (run / "run.json").write_text(json.dumps({"status": "completed", "models": models}))
    lines = lineage_lines(a)
    assert len(lines) == 3 and lines[1].endswith("(completed)") and lines[2].endswith("(a cycle: already above)")
