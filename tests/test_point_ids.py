"""Point identities: a reused split follows its points' ids, not their places in today's listing.

The project here reads one ``.npy`` file per point from ``<dataset_path>/points/`` in ``sorted(glob)``
order and names each point by its path relative to ``dataset_path``. A file added so that it sorts
first moves every point to the next index; a removed (or renamed) file is a point gone.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_project, run_cli, run_dirs, write_config

from dlscaffold.errors import UserError
from dlscaffold.parts.point_ids import ids_problem, point_index, record_identity, reuse_split

POINTS = 60

DATALOADER = '''"""One .npy file per point: 8 features, then the class."""

import glob
import os

import numpy as np
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        self.root = cfg["dataloading_params"]["dataset_path"]
        self.files = sorted(glob.glob(os.path.join(self.root, "points", "*.npy")))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        values = np.load(self.files[i])
        return {"features": values[:8], "class_idx": int(values[8])}

    def point_id(self, i):
        return os.path.relpath(self.files[i], self.root)
'''


def write_points(folder: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 2.0, size=(3, 8))
    (folder / "points").mkdir(parents=True)
    for k in range(POINTS):
        label = k % 3
        np.save(folder / "points" / f"p{k:03d}.npy", np.append(centers[label] + rng.normal(size=8), label))


def file_project(folder: Path) -> Path:
    """The toy project reading its points from files (``data/points/p000.npy`` ...), 1 epoch."""
    project = copy_project("toyproject", folder)
    (project / "dataloader.py").write_text(DATALOADER)
    write_points(project / "data")
    write_config(
        project,
        dataloading_params__dataset_path=str(project / "data"),
        dataloading_params__batch_size=16,
        training_params__max_training_epochs=1,
    )
    return project


def shifted_copy(project: Path, name: str) -> Path:
    """A copy of the project's data with one more point, ``points/a_new.npy``, which sorts first:
    every point of the split is at the next index."""
    changed = project / name
    shutil.copytree(project / "data", changed)
    shutil.copy(changed / "points" / "p000.npy", changed / "points" / "a_new.npy")
    return changed


def notes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("idx_dict: ")]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def evaluate(run: Path, out: Path, *overrides: str) -> tuple[dict, str]:
    result = run_cli("evaluate", str(run), "--epoch", "last", "--json", str(out), *overrides, cwd=run.parent.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())["metrics"], result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The file project and its one-epoch run: ``(project, run)``. Tests leave both as they were."""
    project = file_project(tmp_path_factory.mktemp("ids") / "project")
    result = run_cli("train", "config.yml", cwd=project)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(project)
    return project, run


# ------------------------------------------------------------------------------ the CLI


def test_a_run_records_its_points_ids(trained: tuple[Path, Path]) -> None:
    project, run = trained
    split = json.loads((run / "idx_dict.json").read_text())
    assert list(split) == ["train", "val", "dev", "num_points", "seed", "ids"]  # the older keys as they were
    listing = sorted(p.name for p in (project / "data" / "points").iterdir())
    for name in ("train", "val", "dev"):
        assert split["ids"][name] == [f"points/{listing[i]}" for i in split[name]]


def test_evaluate_on_a_shifted_listing_follows_the_ids(trained: tuple[Path, Path], tmp_path: Path) -> None:
    project, run = trained
    before, plain = evaluate(run, tmp_path / "before.json")
    assert notes(plain) == []  # nothing moved
    changed = shifted_copy(project, "shifted")
    try:
        after, stdout = evaluate(run, tmp_path / "after.json", f"dataloading_params.dataset_path={changed}")
    finally:
        shutil.rmtree(changed)
    assert after == before  # the same points, in the same order
    assert notes(stdout) == [
        f"idx_dict: {POINTS} points moved (their ids are at other indices now) and the dataset has "
        f"{POINTS + 1} points now, {POINTS} when the split was made; the split follows the ids"
    ]


@pytest.mark.parametrize("change", ["removed", "renamed"])
def test_a_point_gone_from_the_data_is_one_error_naming_it(trained: tuple[Path, Path], change: str) -> None:
    project, run = trained
    gone = json.loads((run / "idx_dict.json").read_text())["ids"]["val"][0]
    changed = project / change
    shutil.copytree(project / "data", changed)
    try:
        if change == "removed":
            (changed / gone).unlink()
        else:  # a renamed file is another point: its old id is gone
            (changed / gone).rename(changed / "points" / "a_first.npy")
        result = run_cli("evaluate", str(run), f"dataloading_params.dataset_path={changed}", cwd=project)
    finally:
        shutil.rmtree(changed)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"error: idx_dict: 1 point of the split is not in the dataset any more: {gone} (1 missing); "
        "restore them, or train a new split"
    ]


def test_idx_dict_path_to_an_earlier_run_maps_by_ids(trained: tuple[Path, Path]) -> None:
    project, run = trained
    changed = shifted_copy(project, "shifted_for_reuse")
    logs = project / "reuse_runs"
    try:
        result = run_cli(
            "train",
            "config.yml",
            "training_params.seed=99",
            f"dataloading_params.idx_dict_path={run}",
            f"dataloading_params.dataset_path={changed}",
            f"logging_params.logging_dir={logs}",
            cwd=project,
        )
        assert result.returncode == 0, result.stderr
        assert len(notes(result.stdout)) == 1 and warnings(result.stderr) == []
        (second,) = [p for p in logs.iterdir() if p.is_dir()]
        saved, reused = (json.loads((r / "idx_dict.json").read_text()) for r in (run, second))
        assert reused["ids"] == saved["ids"] and reused["num_points"] == POINTS + 1
        for name in ("train", "val", "dev"):
            assert reused[name] == [i + 1 for i in saved[name]]  # each point one index further, in the saved order
    finally:
        shutil.rmtree(changed)
        shutil.rmtree(logs, ignore_errors=True)


def test_a_split_saved_before_point_ids_is_used_with_a_warning(trained: tuple[Path, Path], tmp_path: Path) -> None:
    project, run = trained
    path = run / "idx_dict.json"
    text = path.read_text()
    split = json.loads(text)
    try:
        path.write_text(json.dumps({k: v for k, v in split.items() if k != "ids"}))  # as an older version wrote it
        result = run_cli("evaluate", str(run), "--json", str(tmp_path / "old.json"), cwd=project)
    finally:
        path.write_text(text)
    assert result.returncode == 0, result.stderr
    (line,) = warnings(result.stderr)
    assert "records no point ids" in line and "cannot be detected" in line
    assert json.loads((tmp_path / "old.json").read_text())["num_samples"] == len(split["val"])


def test_resume_after_a_shifted_listing_keeps_the_split(tmp_path: Path) -> None:
    project = file_project(tmp_path / "project")
    assert run_cli("train", "config.yml", cwd=project).returncode == 0
    (run,) = run_dirs(project)
    saved = json.loads((run / "idx_dict.json").read_text())
    shutil.copy(project / "data" / "points" / "p000.npy", project / "data" / "points" / "a_new.npy")  # sorts first
    result = run_cli("train", "--resume", str(run), "training_params.max_training_epochs=2", cwd=project)
    assert result.returncode == 0, result.stderr
    assert len(notes(result.stdout)) == 1 and "points moved" in notes(result.stdout)[0]
    resumed = json.loads((run / "idx_dict.json").read_text())
    assert resumed["ids"] == saved["ids"]  # the same points
    assert resumed["val"] == [i + 1 for i in saved["val"]] and resumed["num_points"] == POINTS + 1
    again = run_cli("train", "--resume", str(run), "training_params.max_training_epochs=3", cwd=project)
    assert again.returncode == 0 and notes(again.stdout) == []  # the run's split now names today's indices


def test_without_point_id_a_reuse_warns_once(toy: Path, tmp_path: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    (run,) = run_dirs(toy)
    split = json.loads((run / "idx_dict.json").read_text())
    assert split["fingerprint"] == {"points": 240, "class": "CustomDataSet"} and "ids" not in split
    for older in (False, True):
        if older:  # an idx_dict.json from before point ids: neither ids nor a fingerprint
            del split["fingerprint"]
            (run / "idx_dict.json").write_text(json.dumps(split))
        result = run_cli("evaluate", str(run), cwd=toy)
        assert result.returncode == 0, result.stderr
        assert warnings(result.stderr) == [
            "warning: CustomDataSet defines no point_id(i), so a changed data folder (renamed, added or removed "
            "files) cannot be detected when this split is reused; define point_id (docs/data.md)"
        ]


# ----------------------------------------------------------------------- the functions


class Listing:
    """A dataset of named points, listed in the given order."""

    def __init__(self, names: list[object], ids: bool = True):
        self.names = names
        if ids:
            self.point_id = lambda i: self.names[i]

    def __len__(self) -> int:
        return len(self.names)


def saved_split(names: list[str]) -> dict:
    split = {"train": [0, 2, 3], "val": [1], "dev": [0], "num_points": len(names), "seed": 1}
    record_identity(split, Listing(names), point_index(Listing(names)))
    return split


def test_reuse_maps_the_ids_in_the_saved_order(capsys: pytest.CaptureFixture[str]) -> None:
    split = saved_split(["a", "b", "c", "d"])
    assert split["ids"] == {"train": ["a", "c", "d"], "val": ["b"], "dev": ["a"]}
    today = Listing(["d", "c", "b", "a"])
    reused = reuse_split(split, today, point_index(today))
    assert reused["train"] == [3, 1, 0] and reused["val"] == [2] and reused["dev"] == [3]
    assert capsys.readouterr().out.splitlines() == [
        "idx_dict: 4 points moved (their ids are at other indices now); the split follows the ids"
    ]
    unchanged = Listing(["a", "b", "c", "d"])
    assert reuse_split(split, unchanged, point_index(unchanged)) == split
    assert capsys.readouterr().out == ""


def test_missing_duplicate_and_bad_ids_are_one_line() -> None:
    split = saved_split(["a", "b", "c", "d"])
    today = Listing(["a", "d"])
    with pytest.raises(UserError) as info:
        reuse_split(split, today, point_index(today))
    assert info.value.problems == [
        "idx_dict: 2 points of the split are not in the dataset any more: b, c (2 missing); "
        "restore them, or train a new split"
    ]
    with pytest.raises(UserError, match=r"^Listing.point_id: points 0 and 2 have the same id 'a'; expected one id"):
        point_index(Listing(["a", "b", "a"]))
    with pytest.raises(UserError, match=r"^Listing.point_id\(1\) returned int; expected a string"):
        point_index(Listing(["a", 7]))
    assert ids_problem({**split, "ids": {**split["ids"], "val": []}}) == (
        "'ids' of split 'val': expected a list of 1 strings, one per index of 'val'"
    )
    assert ids_problem(split) is None and ids_problem({"train": [0], "val": [1]}) is None


def test_a_split_that_cannot_be_checked_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    old = {"train": [0, 2, 3], "val": [1], "dev": [0]}
    plain = Listing(["a", "b", "c", "d"], ids=False)
    with caplog.at_level(logging.WARNING, logger="dlscaffold"):
        assert reuse_split(old, plain, point_index(plain)) == old
        named = Listing(["a", "b", "c", "d"])
        assert reuse_split(old, named, point_index(named)) == old
    first, second = (r.getMessage() for r in caplog.records)
    assert first.startswith("warning: Listing defines no point_id(i), so a changed data folder")
    assert second.startswith("warning: the reused split records no point ids")
    record_identity(old, plain, None)
    assert old["fingerprint"] == {"points": 4, "class": "Listing"}
