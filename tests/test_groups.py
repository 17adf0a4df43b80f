"""``dlscaffold train --seeds``: a seed group of runs sharing one split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, run_dirs


@pytest.mark.parametrize("workers", [1, 2])
def test_seeds_make_one_run_per_seed_with_the_first_runs_split(toy: Path, workers: int) -> None:
    result = run_cli(
        "train", "config.yml", "training_params.max_training_epochs=1", "--seeds", "1,2,3", "--workers", str(workers),
        cwd=toy,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = run_dirs(toy)
    assert sorted(run.name.rsplit("_", 1)[1] for run in runs) == ["seed1", "seed2", "seed3"]
    infos = [json.loads((run / "run.json").read_text()) for run in runs]
    assert len({info["group"]["id"] for info in infos}) == 1
    assert sorted(info["group"]["seed"] for info in infos) == [1, 2, 3] and {i["group"]["size"] for i in infos} == {3}
    assert len({(run / "idx_dict.json").read_text() for run in runs}) == 1  # one split
    configs = [(run / "config.yml").read_text() for run in runs]
    assert sorted(next(line for line in c.splitlines() if "seed:" in line).split()[-1] for c in configs) == [
        "1",
        "2",
        "3",
    ]
    assert "--group" in result.stdout


def test_vary_split_lets_the_seed_change_the_split(toy: Path) -> None:
    args = ("train", "config.yml", "training_params.max_training_epochs=1", "--seeds", "1,2", "--vary-split")
    assert run_cli(*args, cwd=toy).returncode == 0
    assert len({(run / "idx_dict.json").read_text() for run in run_dirs(toy)}) == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--seeds", "1,x"), "--seeds '1,x': expected distinct whole numbers"),
        (("--seeds", "1,1"), "--seeds '1,1': expected distinct whole numbers"),
        (("--seeds", "1,2", "--nproc", "2"), "--seeds cannot be combined with --nproc"),
        (("--seeds", "1,2", "training_params.lrn_rat=1"), "training_params.lrn_rat: unknown key"),
    ],
)
def test_bad_seed_groups_are_one_line_and_train_nothing(toy: Path, args: tuple[str, ...], expected: str) -> None:
    result = run_cli("train", "config.yml", *args, cwd=toy)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and expected in errors[0], result.stderr
    assert not run_dirs(toy)
