"""The idx_dict split, the collation rule, the epoch sampler, and a dataset's faults as one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, run_dirs

from dlscaffold import data
from dlscaffold.data import EpochSampler, collate, make_idx_dict
from dlscaffold.errors import UserError


def test_split_is_deterministic_disjoint_and_complete() -> None:
    a = make_idx_dict(100, 0.2, 10, seed=7)
    assert a == make_idx_dict(100, 0.2, 10, seed=7)
    assert a != make_idx_dict(100, 0.2, 10, seed=8)
    assert len(a["val"]) == 20 and sorted(a["train"] + a["val"]) == list(range(100))
    assert len(a["dev"]) == 10 and set(a["dev"]) <= set(a["train"])


def test_collation_rule() -> None:
    samples = [
        {
            "x": np.ones(3, dtype=np.float64),
            "n": 3,
            "f": 0.5,
            "mask": np.array([True]),
            "img": torch.zeros(2, dtype=torch.uint8),
            "u": np.uint8(7),
            "name": "a",
        },
        {
            "x": np.zeros(3, dtype=np.float64),
            "n": 4,
            "f": 1.5,
            "mask": np.array([False]),
            "img": torch.ones(2, dtype=torch.uint8),
            "u": np.uint8(9),
            "name": "b",
        },
    ]
    batch = collate(samples)
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (2, 3)
    assert batch["n"].dtype == torch.int64 and batch["n"].tolist() == [3, 4]
    assert batch["f"].dtype == torch.float32
    assert batch["mask"].dtype == torch.bool
    assert batch["img"].dtype == torch.uint8  # tensors keep the dtype the project chose
    assert batch["u"].dtype == torch.int64
    assert batch["name"] == ["a", "b"]


def test_epoch_sampler_order_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler(range(10), shuffle=True, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG does not matter
    again = EpochSampler(range(10), shuffle=True, seed=3)
    again.set_epoch(2)
    assert list(again) == first and sorted(first) == list(range(10))
    again.set_epoch(3)
    assert list(again) != first


def test_epoch_sampler_shards_for_data_parallel_ranks() -> None:
    single = EpochSampler(range(7), shuffle=True, seed=1)
    shards = [EpochSampler(range(7), shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    order = list(single)
    assert [list(s) for s in shards] == [order[0::2], order[1::2]]  # positions r, r+N, ...: nothing repeated


def test_training_shards_take_the_same_number_of_steps() -> None:
    # 33 points, 2 ranks, batch 16: rank 0 has 17 (batches of 16 and 1), rank 1 has 16, plus a padding batch
    shards = [EpochSampler(range(33), shuffle=True, seed=1, rank=r, world_size=2, batch_size=16) for r in (0, 1)]
    assert [len(s) for s in shards] == [17, 17]
    assert [s.share(0) for s in shards] == [(16, 32), (16, 32)]
    assert [s.share(1) for s in shards] == [(1, 1), (0, 1)]  # the padding batch weighs nothing
    single = list(EpochSampler(range(33), shuffle=True, seed=1))
    assert set(list(shards[0])[:16]) | set(list(shards[1])[:16]) == set(single[:32])


# ------------------------------------------------------------------ dataset faults, through train

FAILING_INIT = """\
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        path = cfg["dataloading_params"]["dataset_path"]
        if path is None:
            raise FileNotFoundError(path)

    def __len__(self):
        return 0
"""

HUGE_LENGTH = """\
import numpy as np
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        pass

    def __len__(self):
        return 10**12

    def __getitem__(self, i):
        return {"features": np.zeros(8, "float32"), "class_idx": 0}
"""


def test_a_dataset_constructor_that_raises_is_one_line_naming_its_line(toy: Path) -> None:
    (toy / "dataloader.py").write_text(FAILING_INIT)
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {toy / 'dataloader.py'}:8: CustomDataSet(cfg) failed: FileNotFoundError: None; fix dataloader.py "
        "or the dataloading_params it reads (dataset_path: not set); rerun with --debug for the traceback"
    ]
    assert run_dirs(toy) == []
    debug = run_cli("train", "config.yml", "--debug", cwd=toy)  # the traceback, on request
    assert debug.returncode != 0 and "Traceback" in debug.stderr and 'dataloader.py", line 8' in debug.stderr


def test_an_absurd_dataset_length_is_refused_before_anything_is_allocated(toy: Path) -> None:
    (toy / "dataloader.py").write_text(HUGE_LENGTH)
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: CustomDataSet.__len__ returned 1,000,000,000,000: splitting that many points ")
    assert line.endswith("check that __len__ returns the number of points (e.g. len(self.files), not a size in bytes)")
    assert run_dirs(toy) == []


def test_the_length_bound_is_what_memory_can_split(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = list(range(1000))
    monkeypatch.setattr(data, "available_memory", lambda: 1000 * data.SPLIT_BYTES_PER_POINT)
    assert data.dataset_size(dataset) == 1000
    monkeypatch.setattr(data, "available_memory", lambda: 1000 * data.SPLIT_BYTES_PER_POINT - 1)
    with pytest.raises(UserError, match=r"returned 1,000: splitting that many points needs at least"):
        data.dataset_size(dataset)
    monkeypatch.setattr(data, "available_memory", lambda: None)  # unknown: no bound
    assert data.dataset_size(dataset) == 1000
    assert data.available_memory() is None or data.available_memory() > 0
