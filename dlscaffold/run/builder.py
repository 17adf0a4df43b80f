"""The run builder: from a prepared config to data, models and loaders, for every command.

:func:`build_run` is what ``train``, ``evaluate`` and :func:`dlscaffold.load_run` share: seed every
RNG, build the project's dataset, make (or reuse) the ``idx_dict`` split, choose the device and
precision, build the models of ``info_flow`` (loading weights where asked) and one loader per
requested split.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dlscaffold.config import Config, DataloadingParams
from dlscaffold.data import (
    batch_transform,
    dataset_size,
    make_idx_dict,
    make_loader,
    project_test_indices,
    split_indices,
    split_problem,
)
from dlscaffold.errors import CodeError, UserError, first_line
from dlscaffold.parts.device import Placement, select_placement
from dlscaffold.parts.device_data import DeviceLoader, split_loader
from dlscaffold.parts.distributed import World, process_batch_size
from dlscaffold.parts.flow import Flow, build_flow
from dlscaffold.parts.point_ids import point_index, record_identity, reuse_split
from dlscaffold.parts.precision import Precision, choose
from dlscaffold.parts.seeding import seed_everything
from dlscaffold.parts.tta import Views, views_of
from dlscaffold.prepare import Prepared
from dlscaffold.project.code import _where as code_location


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
    views: Views | None = None  # test-time augmentation (training_params.tta_outputs)


def build_run(
    prepared: Prepared,
    loaders: dict[str, tuple[str, bool]],
    device: str | None = None,
    weights: tuple[Path, int | str] | None = None,
    world: World | None = None,
    keep_precision: bool = False,
) -> Run:
    """Build a run's data, models and loaders.

    Args:
        prepared: the checked config and project (:func:`~dlscaffold.prepare.prepare`).
        loaders: role -> (split name, shuffle), e.g. ``{"train": ("train", True), "val": ("val", False)}``.
        device: force a device (``--device``); default from ``use_GPU``.
        weights: ``(run_dir, epoch)`` to load every model from (evaluation, resume); by default only
            models with a ``model_dir`` load weights.
        world: this process's rank among data-parallel processes: its loaders take its share.
        keep_precision: evaluate in the config's precision even where it is slow on this device
            (by default such a run is evaluated in fp32: :func:`~dlscaffold.parts.precision.choose`).
    """
    config, tp, dl = prepared.config, prepared.config.training_params, prepared.config.dataloading_params
    world = world or World()
    process_batch_size(dl.batch_size, dl.global_batch_size, world.world_size)  # refused before any work
    dataset, idx_dict = dataset_and_split(prepared)
    placement = select_placement(tp.use_GPU, device, tp.channels_last)
    warn_open_hdf5(dataset, dl)
    made = {
        role: loader_of(dl, dataset, split_indices(idx_dict, split), shuffle, tp.seed, placement, world, split)
        for role, (split, shuffle) in loaders.items()
    }
    flow = build_flow(config, prepared.project, prepared.losses, prepared.evals, placement.device, weights)
    if tp.channels_last:
        for model in flow.models.values():
            model.to(memory_format=torch.channels_last)
    return Run(
        config,
        dataset,
        idx_dict,
        placement,
        Precision(_precision(tp.precision, placement, "train" in loaders, keep_precision), placement.device),
        flow,
        made,
        batch_transform(dataset),
        views_of(dataset, config),
    )


def loader_of(
    dl: DataloadingParams,
    dataset: Any,
    indices: list[int],
    shuffle: bool,
    seed: int,
    placement: Placement,
    world: World,
    split: str,
) -> DataLoader | DeviceLoader:
    """The loader of ``indices`` (the points of ``split``) as the config says: a DataLoader with the
    config's worker options (``pin_memory`` only when the run computes on a CUDA device, and there
    by default), or with
    ``device_data`` the split stacked on the device."""
    batch_size = process_batch_size(dl.batch_size, dl.global_batch_size, world.world_size)  # this process's
    if dl.device_data:
        args = (dataset, indices, batch_size, shuffle, seed, 0, False, world.rank, world.world_size)
        return split_loader(True, *args, split=split, device=placement.device)
    return make_loader(
        dataset,
        indices,
        batch_size,
        shuffle,
        seed,
        dl.num_workers,
        placement.is_cuda and dl.pin_memory is not False,  # default: pinned on a CUDA device
        world.rank,
        world.world_size,
        persistent_workers=dl.persistent_workers,
        prefetch_factor=dl.prefetch_factor,
    )


def _precision(name: str, placement: Placement, training: bool, keep: bool) -> str:
    """The precision the run computes in (``auto`` resolved; a slow one said, or in evaluation replaced)."""
    chosen, line = choose(name, placement.device, training, keep)
    if line is not None:
        logging.getLogger("dlscaffold").warning(line)
    return chosen


def warn_open_hdf5(dataset: Any, dl: DataloadingParams) -> None:
    """One warning line when the dataset holds an open HDF5 file or dataset (an attribute ``__init__``
    set) and the DataLoader will start workers: forked, each would read through the one handle the
    main process opened, which HDF5 does not support (wrong values, errors or a crash); spawned,
    none can start (h5py objects cannot be pickled). h5py is looked for only where the project has
    imported it already."""
    h5py = sys.modules.get("h5py")
    if h5py is None or dl.device_data or dl.num_workers == 0:
        return
    method = _start_method()
    for name, value in vars(dataset).items() if hasattr(dataset, "__dict__") else ():
        if isinstance(value, (h5py.File, h5py.Dataset)) and value:  # false once closed
            logging.getLogger("dlscaffold").warning(
                "warning: CustomDataSet.%s is an HDF5 %s opened in __init__, and num_workers: %d %s; open the "
                "file lazily in __getitem__, once per process (docs/data.md, 'One large HDF5 file')",
                name,
                "file" if isinstance(value, h5py.File) else "dataset",
                dl.num_workers,
                "forks workers that would share its handle"
                if method == "fork"
                else f"starts workers by {method}, which cannot receive it (h5py objects cannot be pickled)",
            )
            return


def _start_method() -> str:
    """How DataLoader workers start: the multiprocessing start method set, else the platform's default."""
    method = multiprocessing.get_start_method(allow_none=True)
    return method or multiprocessing.get_all_start_methods()[0]


def dataset_and_split(prepared: Prepared) -> tuple[Any, dict[str, Any]]:
    """The project's dataset, built after seeding every RNG with ``training_params.seed``, and its
    ``idx_dict`` split (:func:`make_split`): what a run trains on."""
    seed_everything(prepared.config.training_params.seed)
    dataset = build_dataset(prepared)
    return dataset, make_split(prepared.config, dataset, prepared.saved_split)


def build_dataset(prepared: Prepared) -> Any:
    """``CustomDataSet(cfg)`` with the validated config as a plain dict (paths absolute).

    Raises:
        UserError: the constructor raised (one line naming the line of ``dataloader.py`` it raised
            at and the exception; ``--debug`` shows the traceback), or ``__len__`` fails, gives no
            points or more than memory can split (:func:`~dlscaffold.data.dataset_size`).
    """
    file = prepared.project.root / "dataloader.py"
    try:
        dataset = prepared.project.dataset_class(prepared.config.to_dict())
    except (UserError, CodeError):
        raise
    except Exception as exc:  # the project's code: a missing file, a package not installed, a bug
        path = prepared.config.dataloading_params.dataset_path
        raise UserError(
            f"{code_location(exc, file)}: CustomDataSet(cfg) failed: {first_line(exc)}; fix dataloader.py or the "
            f"dataloading_params it reads (dataset_path: {path or 'not set'}); rerun with --debug for the traceback"
        ) from exc
    if dataset_size(dataset) == 0:
        raise UserError("CustomDataSet: the dataset is empty; check dataloading_params.dataset_path")
    return dataset


def make_split(config: Config, dataset: Any, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The ``idx_dict``: a saved one (mapped through its points' ids onto today's indices where it
    can be, :func:`~dlscaffold.parts.point_ids.reuse_split`, then checked against the dataset), or
    made from the seed.

    Points the project marks as test points (``test_indices()``) are left out of train / val / dev
    and kept under ``test``. The split records its points' ids (a dataset with ``point_id(i)``) or
    the dataset's fingerprint. The dataset gets the split as its ``idx_dict`` attribute.
    """
    dl = config.dataloading_params
    test = project_test_indices(dataset)
    by_id = point_index(dataset)
    if saved is not None:
        idx_dict = reuse_split(saved, dataset, by_id, keep=("test",) if test is not None else ())
        problem = split_problem(idx_dict, len(dataset))
        if idx_dict.get("num_points", len(dataset)) != len(dataset):
            problem = f"it splits {idx_dict['num_points']} points but the dataset has {len(dataset)}"
        if problem:
            raise UserError(
                f"dataloading_params.idx_dict_path: the saved split does not fit the dataset: {problem}; "
                "use a split made for this dataset or leave idx_dict_path empty"
            )
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
    record_identity(idx_dict, dataset, by_id)
    dataset.idx_dict = idx_dict
    return idx_dict


def wrap_for_training(run: Run, world: World) -> None:
    """What training calls instead of each trained model: SyncBatchNorm and DistributedDataParallel
    under data-parallel training, then ``torch.compile`` (``training_params.compile``). Frozen
    models stay as they are; checkpoints keep holding the plain modules' state_dicts."""
    tp, flow = run.config.training_params, run.flow
    if tp.compile:
        _check_compile(run.placement.device)
    for name in flow.trained:
        if world.distributed and tp.sync_batchnorm:
            flow.models[name] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(flow.models[name])
        wrapped = flow.models[name]
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [run.placement.device.index] if run.placement.is_cuda else None
            wrapped = DistributedDataParallel(wrapped, device_ids=ids, find_unused_parameters=tp.find_unused_parameters)
        flow.wrapped[name] = torch.compile(wrapped) if tp.compile else wrapped
    if world.distributed:  # the same initial weights everywhere (DDP broadcast them), different dropout per rank
        torch.manual_seed((tp.seed + world.rank) % 2**63)


def _check_compile(device: torch.device) -> None:
    """``torch.compile`` needs dynamo on this Python and, on the CPU, a C++ compiler."""
    import shutil

    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise UserError(
            "training_params.compile: torch.compile is not supported on this platform (Python "
            "version or OS); set compile: false"
        )
    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        raise UserError(
            "training_params.compile: torch.compile on the CPU needs a C++ compiler (g++ or clang++), "
            "and none is on PATH; install one or set compile: false"
        )
