"""The run builder: from a prepared config to data, models and loaders, for every command.

:func:`build_run` is what ``train``, ``evaluate`` and :func:`dlscaffold.load_run` share: seed every
RNG, build the project's dataset, make (or reuse) the ``idx_dict`` split, choose the device and
precision, build the models of ``info_flow`` (loading weights where asked) and one loader per
requested split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch.utils.data import DataLoader

from dlscaffold.config import Config
from dlscaffold.data import batch_transform, make_idx_dict, make_loader, project_test_indices, split_problem
from dlscaffold.device import Placement, select_placement
from dlscaffold.errors import UserError
from dlscaffold.flow import Flow, build_flow
from dlscaffold.precision import Precision
from dlscaffold.prepare import Prepared
from dlscaffold.seeding import seed_everything


@dataclass
class Run:
    """Everything a command computes with."""

    config: Config
    dataset: Any  # the project's CustomDataSet, with its idx_dict attribute set
    idx_dict: dict[str, Any]
    placement: Placement
    precision: Precision
    flow: Flow
    loaders: dict[str, DataLoader]  # by role, e.g. {"train": ..., "val": ...}
    transform: Callable[[dict[str, Any], bool], dict[str, Any]]  # the dataset's transform_batch


def build_run(prepared: Prepared, loaders: dict[str, tuple[str, bool]], device: str | None = None,
              weights: tuple[Path, int] | None = None) -> Run:
    """Build a run's data, models and loaders.

    Args:
        prepared: the checked config and project (:func:`~dlscaffold.prepare.prepare`).
        loaders: role -> (split name, shuffle), e.g. ``{"train": ("train", True), "val": ("val", False)}``.
        device: force a device (``--device``); default from ``use_GPU``.
        weights: ``(run_dir, epoch)`` to load every model from (evaluation, resume); by default only
            models with a ``model_dir`` load weights.
    """
    config, tp, dl = prepared.config, prepared.config.training_params, prepared.config.dataloading_params
    seed_everything(tp.seed)
    dataset = build_dataset(prepared)
    idx_dict = make_split(config, dataset, prepared.saved_split)
    placement = select_placement(tp.use_GPU, device)
    made = {role: make_loader(dataset, _indices(idx_dict, split), dl.batch_size, shuffle, tp.seed, dl.num_workers,
                              placement.pin_memory) for role, (split, shuffle) in loaders.items()}
    flow = build_flow(config, prepared.project, prepared.losses, prepared.evals, placement.device, weights)
    return Run(config, dataset, idx_dict, placement, Precision(tp.precision, placement.device), flow, made,
               batch_transform(dataset))


def build_dataset(prepared: Prepared) -> Any:
    """``CustomDataSet(cfg)`` with the validated config as a plain dict (paths absolute)."""
    dataset = prepared.project.dataset_class(prepared.config.to_dict())
    if len(dataset) == 0:
        raise UserError("CustomDataSet: the dataset is empty; check dataloading_params.dataset_path")
    return dataset


def make_split(config: Config, dataset: Any, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The ``idx_dict``: a saved one (checked against the dataset), or made from the seed.

    Points the project marks as test points (``test_indices()``) are left out of train / val / dev
    and kept under ``test``. The dataset gets the split as its ``idx_dict`` attribute.
    """
    dl = config.dataloading_params
    test = project_test_indices(dataset)
    if saved is not None:
        idx_dict = dict(saved)
        problem = split_problem(idx_dict, len(dataset))
        if idx_dict.get("num_points", len(dataset)) != len(dataset):
            problem = f"it splits {idx_dict['num_points']} points but the dataset has {len(dataset)}"
        if problem:
            raise UserError(f"dataloading_params.idx_dict_path: the saved split does not fit the dataset: {problem}; "
                            "use a split made for this dataset or leave idx_dict_path empty")
    elif test is None:
        idx_dict = make_idx_dict(len(dataset), dl.val_ratio, dl.dev_num, config.training_params.seed)
    else:
        test_set = set(test)
        pool = [i for i in range(len(dataset)) if i not in test_set]
        split = make_idx_dict(len(pool), dl.val_ratio, dl.dev_num, config.training_params.seed)
        idx_dict = {s: [pool[i] for i in split[s]] for s in ("train", "val", "dev")}
        idx_dict.update(num_points=len(dataset), seed=split["seed"])
    if test is not None:
        idx_dict["test"] = sorted(test)
    dataset.idx_dict = idx_dict
    return idx_dict


def _indices(idx_dict: dict[str, Any], split: str) -> list[int]:
    indices = idx_dict.get(split)
    if not isinstance(indices, list):
        names = ", ".join(k for k, v in idx_dict.items() if isinstance(v, list))
        raise UserError(f"--split: found '{split}'; this run has splits: {names}")
    if not indices:
        raise UserError(f"split '{split}' holds no points; an empty split has no metrics: choose another split")
    return indices
