"""Evaluating a built run: every configured loss and eval over one split, in eval mode.

What ``dlscaffold evaluate`` (:mod:`dlscaffold.evaluate`) and :meth:`dlscaffold.api.LoadedRun.evaluate`
share, on a run from :func:`~dlscaffold.builder.build_run` with saved weights loaded. It builds no
optimizer and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from dlscaffold import device_data
from dlscaffold.builder import Run
from dlscaffold.data import split_indices
from dlscaffold.epoch import run_epoch
from dlscaffold.progress import Progress
from dlscaffold.rundir import read_metrics
from dlscaffold.runfiles import epoch_number


def set_clock(run: Run, run_dir: Path, epoch: int | str) -> None:
    """Give ``{epoch: trainer}`` / ``{step: trainer}`` inputs what validation gave them after ``epoch``:
    that epoch, and the global step its rows in ``metrics.jsonl`` record (0 when none do)."""
    number = epoch_number(run_dir, epoch)
    steps = [row.get("step") for row in read_metrics(run_dir) if row.get("epoch") == number]
    run.flow.clock.update(
        epoch=number if isinstance(number, int) else 0, step=next((s for s in steps if isinstance(s, int)), 0)
    )


def evaluate_run(run: Run, split: str, progress: Progress, tta: bool = True) -> dict[str, Any]:
    """Every loss and eval of a built run over ``split``, in eval mode.

    Args:
        tta: with the run's test-time augmentation (``training_params.tta_outputs``), if it has one.

    Returns:
        ``{"split", "num_samples", "tta", "metrics": {"<Model>/<name>": value}}``; losses and per-sample
        evals are sample means, ``torchmetrics`` evals are computed over the whole split; ``tta``
        ``{"outputs": [...], "views": N}``, or None for the plain forward pass.
    """
    views = run.views if tta else None
    metrics, count = run_epoch(
        run.flow, split_loader(run, split), run.placement, run.precision, run.transform, progress, split, views=views
    )
    return {"split": split, "num_samples": count, "tta": views.record() if views else None, "metrics": metrics}


def split_loader(run: Run, split: str) -> DataLoader:
    """The run's loader for ``split`` (in order), made when the run was built without it."""
    if split in run.loaders:
        return run.loaders[split]
    indices = split_indices(run.idx_dict, split, "split")
    dl, tp = run.config.dataloading_params, run.config.training_params
    args = (run.dataset, indices, dl.batch_size, False, tp.seed, dl.num_workers, run.placement.pin_memory)
    return device_data.split_loader(dl.device_data, *args, split=split, device=run.placement.device)
