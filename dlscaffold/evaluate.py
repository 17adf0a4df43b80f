"""``dlscaffold evaluate``: every configured loss and eval of a run, over one split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlscaffold.checks import saved_epochs
from dlscaffold.data import batch_transform, make_loader
from dlscaffold.device import select_placement
from dlscaffold.errors import UserError
from dlscaffold.flow import build_flow
from dlscaffold.prepare import build_dataset, load_split, prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import is_run_dir, recorded_project, write_text_atomic
from dlscaffold.seeding import seed_everything
from dlscaffold.train import run_epoch


def last_saved_epoch(run_dir: Path, models: list[str]) -> int:
    """The newest epoch for which the run holds weights of every model."""
    common = set.intersection(*(set(saved_epochs(run_dir, m)) for m in models))
    if not common:
        raise UserError(f"{run_dir}: no epoch with saved weights of every model ({', '.join(models)}); was it run with --no-save?")
    return max(common)


def evaluate(run_dir: Path, epoch: int | None = None, split: str = "val", json_path: Path | None = None,
             project_dir: Path | None = None, device: str | None = None, progress_bar: bool = False,
             overrides: list[str] = ()) -> dict[str, Any]:
    """Load a run's config, split and weights and compute its losses and evals over ``split``.

    Args:
        run_dir: the run folder.
        epoch: which saved epoch (default: the last one).
        split: ``train``, ``val``, ``dev`` or ``test`` (when the project provides one).
        json_path: also write the result there.
        project_dir: the project's code (default: the one recorded with the run).
        overrides: dotted ``key=value`` changes to the run's config, e.g. a moved ``dataset_path``.

    Returns:
        ``{"run_dir", "epoch", "split", "num_samples", "metrics": {"<Model>/<name>": value}}``.
    """
    run_dir = run_dir.resolve()
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a run folder (no config.yml and idx_dict.json in it); pass a folder printed by dlscaffold train")
    project_dir = project_dir or recorded_project(run_dir) or run_dir
    prepared = prepare(run_dir / "config.yml", list(overrides), project_dir)
    config = prepared.config
    models = list(config.info_flow)
    if epoch is None:
        epoch = last_saved_epoch(run_dir, models)
    else:
        missing = [m for m in models if epoch not in saved_epochs(run_dir, m)]
        if missing:
            saved = ", ".join(map(str, saved_epochs(run_dir, missing[0]))) or "none"
            raise UserError(f"--epoch: found {epoch}; {run_dir} holds {missing[0]} weights for epochs: {saved}")
    seed_everything(config.training_params.seed)
    dataset = build_dataset(prepared)
    idx_dict = load_split(config, dataset, saved=run_dir)
    if split not in idx_dict or not isinstance(idx_dict[split], list):
        raise UserError(f"--split: found '{split}'; this run has splits: {', '.join(k for k, v in idx_dict.items() if isinstance(v, list))}")
    placement = select_placement(config.training_params.use_GPU, device, config.training_params.precision)
    flow = build_flow(config, prepared.project, prepared.losses, prepared.evals, placement.device, (run_dir, epoch))
    dl = config.dataloading_params
    loader = make_loader(dataset, idx_dict[split], dl.batch_size, False, 0, dl.num_workers, placement.pin_memory)
    metrics, count = run_epoch(flow, loader, placement, batch_transform(dataset), Progress(progress_bar), split)
    result = {"run_dir": str(run_dir), "epoch": epoch, "split": split, "num_samples": count, "metrics": metrics}
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result, indent=2))
    return result
