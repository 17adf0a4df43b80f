"""Datasets read a batch at a time: a ``CustomDataSet`` with ``__getitems__(indices)`` returning a dict
of batched values is read through it by the DataLoader (torch's batched fetch), gives the same
tensors as collating its points one by one, and so trains to the same weights and metrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_config

from dlscaffold import data
from dlscaffold.cli import main
from dlscaffold.data import Collate, DatasetItemError, collate, collate_batch, make_loader
from dlscaffold.records.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
BATCHED = """

def _getitems(self, indices):
    return {"features": self.features[indices], "class_idx": self.labels[indices]}


CustomDataSet.__getitems__ = _getitems
"""


def train(config: Path, logs: Path, *args: str) -> Path:
    assert main(["train", str(config), f"logging_params.logging_dir={logs}", *args]) == 0
    (run,) = [p for p in logs.iterdir() if p.is_dir()]
    return run


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every model's weights of every saved epoch, by file name."""
    files = sorted(p for p in (run / "checkpoints").glob("*.pt") if not p.name.startswith("trainer"))
    return {p.name: torch.load(p, weights_only=True) for p in files}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return (
        bool(wa)
        and wa.keys() == wb.keys()
        and all(wa[f].keys() == wb[f].keys() and all(torch.equal(wa[f][k], wb[f][k]) for k in wa[f]) for f in wa)
    )


def test_a_dataset_read_by_batches_trains_to_the_same_weights_and_metrics(toy: Path, monkeypatch) -> None:
    config = write_config(toy, "points.yml", training_params__max_training_epochs=2)
    by_points = train(config, toy / "runs_points")
    with open(toy / "dataloader.py", "a") as fh:
        fh.write(BATCHED)
    calls = []
    read = data._NamedBatchErrors.__getitems__
    monkeypatch.setattr(data._NamedBatchErrors, "__getitems__", lambda self, i: calls.append(len(i)) or read(self, i))
    by_batches = train(config, toy / "runs_batches")
    assert calls and max(calls) == 32  # the loaders read whole batches (the toy's batch size)
    assert read_metrics(by_batches) == read_metrics(by_points)
    assert same_weights(by_batches, by_points)


def test_workers_read_batches_too(toy: Path) -> None:
    config = write_config(toy, "points.yml", training_params__max_training_epochs=1)
    by_points = train(config, toy / "runs_points")
    with open(toy / "dataloader.py", "a") as fh:
        fh.write(BATCHED)
    by_workers = train(config, toy / "runs_workers", "dataloading_params.num_workers=2")
    assert read_metrics(by_workers) == read_metrics(by_points)
    assert same_weights(by_workers, by_points)


def test_a_batch_is_collated_as_its_points() -> None:
    rng = np.random.default_rng(0)
    images, labels, flags = rng.random((20, 1, 4, 4)), np.arange(20) % 7, np.arange(20) > 9
    tokens = torch.arange(40, dtype=torch.uint8).view(20, 2)
    indices = [3, 1, 7, 19]
    points = collate(
        [{"x": images[i], "y": labels[i], "f": flags[i], "t": tokens[i], "s": f"p{i}", "n": 0.5 * i} for i in indices]
    )
    batch = collate_batch(
        {
            "x": images[indices],
            "y": labels[indices],
            "f": flags[indices],
            "t": tokens[indices],
            "s": np.array([f"p{i}" for i in indices]),
            "n": [0.5 * i for i in indices],
        }
    )
    assert points.keys() == batch.keys()
    for name, value in points.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == batch[name].dtype and torch.equal(value, batch[name]), name
            assert value.stride() == batch[name].stride(), name
        else:
            assert value == batch[name], name


def test_a_batch_never_shares_the_datasets_memory() -> None:
    array, tensor = np.zeros((10, 3), dtype=np.float32), torch.zeros(10, 3)
    batch = collate_batch({"a": array[2:6], "t": tensor[2:6]})  # views of the dataset's storage
    batch["a"] += 1
    batch["t"] += 1
    assert not array.any() and not tensor.any()


def test_a_batch_that_does_not_fit_its_indices_is_one_line() -> None:
    class Short(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> dict:
            return {"x": np.float32(i)}

        def __getitems__(self, indices: list[int]) -> dict:
            return {"x": np.zeros(len(indices) - 1, dtype=np.float32)}

    loader = make_loader(Short(), list(range(10)), 4, False, 0, 0, False)
    with pytest.raises(DatasetItemError, match=r"__getitems__\(\[0, 1, 2, \.\.\.\]\): 'x' holds 3 value\(s\) for 4"):
        next(iter(loader))


def test_an_error_in_getitems_names_the_batch() -> None:
    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> dict:
            return {"x": np.float32(i)}

        def __getitems__(self, indices: list[int]) -> dict:
            raise OSError("disk gone")

    loader = make_loader(Broken(), list(range(10)), 2, False, 0, 0, False)
    with pytest.raises(DatasetItemError, match=r"CustomDataSet.__getitems__\(\[0, 1\]\) failed: OSError: disk gone"):
        next(iter(loader))


def test_a_getitems_returning_points_is_collated_point_by_point() -> None:
    class Points(torch.utils.data.Dataset):  # torch's own convention: a list of samples
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> dict:
            return {"x": np.float64(i), "y": i % 2}

        def __getitems__(self, indices: list[int]) -> list[dict]:
            return [self[i] for i in indices]

    batch = next(iter(make_loader(Points(), list(range(6)), 4, False, 0, 0, False)))
    assert batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64
    assert batch["x"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_collate_checks_class_ranges_of_whole_batches_too() -> None:
    check = Collate()
    check.limit("y", 3, "Classifier outputs", "info_flow.Classifier.losses.MultinomialNLL")
    with pytest.raises(DatasetItemError, match="holds 5 but Classifier outputs 3 classes"):
        check({"y": np.array([0, 5, 1])})


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="the template's digits need scikit-learn")
def test_the_templates_dataset_gives_its_points_by_batch() -> None:
    spec = importlib.util.spec_from_file_location("template_dataloader_getitems", ROOT / "template" / "dataloader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dataset = module.CustomDataSet({"dataloading_params": {"dataset_args": {}}})
    indices = [5, 0, 1796, 42]
    points, batch = collate([dataset[i] for i in indices]), collate_batch(dataset.__getitems__(indices))
    assert points.keys() == batch.keys()
    assert all(torch.equal(points[k], batch[k]) and points[k].dtype == batch[k].dtype for k in points)
