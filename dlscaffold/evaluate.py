"""``dlscaffold evaluate``: every configured loss and eval of a run, over one split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from dlscaffold.builder import Run, build_run
from dlscaffold.checkpoint import resolve_epoch
from dlscaffold.data import make_loader
from dlscaffold.epoch import run_epoch
from dlscaffold.errors import UserError
from dlscaffold.prepare import prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import is_run_dir, read_metrics, read_run_info, write_text_atomic


def evaluate(run_dir: Path, epoch: int | str | None = None, split: str = "val", json_path: Path | None = None,
             project_dir: Path | None = None, device: str | None = None, progress_bar: bool = False,
             overrides: list[str] = (), echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Load a run's config, split and weights and compute its losses and evals over ``split``.

    Args:
        run_dir: the run folder.
        epoch: which saved weights: an epoch number, ``"best"`` or ``"last"`` (the default).
        split: ``train``, ``val``, ``dev`` or ``test`` (when the project provides one).
        json_path: also write the result there.
        project_dir: the project's code (default: the one recorded with the run, when it still
            exists; code is never imported from the run folder).
        device: force a device (``cpu``, ``cuda``, ``cuda:1``).
        progress_bar: show a progress bar (on a terminal).
        overrides: dotted ``key=value`` changes to the run's config, e.g. a moved ``dataset_path``.
        echo: where the human-readable lines go.

    Returns:
        ``{"run_dir", "epoch", "split", "num_samples", "metrics": {"<Model>/<name>": value}}``.
    """
    run_dir = check_run_dir(run_dir)
    prepared = prepare(run_dir / "config.yml", list(overrides), project_dir, run_dir=run_dir, splits=(split,))
    echo(f"Evaluating with the code of the project in {prepared.project.root}")
    models = list(prepared.config.info_flow)
    epoch = resolve_epoch(run_dir, models, epoch)
    run = build_run(prepared, {split: (split, False)}, device, weights=(run_dir, epoch))
    set_clock(run, run_dir, epoch)
    result = evaluate_run(run, split, Progress(progress_bar))
    result = {"run_dir": str(run_dir), "epoch": epoch, **result}
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result, indent=2))
    return result


def check_run_dir(run_dir: Path) -> Path:
    """The run folder, absolute; a one-line :class:`UserError` when ``run_dir`` is not one."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a run folder (no config.yml and idx_dict.json in it); "
                        "pass a folder printed by dlscaffold train")
    return run_dir


def set_clock(run: Run, run_dir: Path, epoch: int | str) -> None:
    """Give ``{epoch: trainer}`` / ``{step: trainer}`` inputs what validation gave them after ``epoch``:
    that epoch, and the global step its rows in ``metrics.jsonl`` record (0 when none do)."""
    number = epoch_number(run_dir, epoch)
    steps = [row.get("step") for row in read_metrics(run_dir) if row.get("epoch") == number]
    run.flow.clock.update(epoch=number if isinstance(number, int) else 0,
                          step=next((s for s in steps if isinstance(s, int)), 0))


def epoch_number(run_dir: Path, epoch: int | str) -> int | str:
    """The number of a saved epoch: for ``"best"`` the epoch ``run.json`` records as best (``"best"``
    itself when it records none)."""
    if epoch != "best":
        return epoch
    best = read_run_info(run_dir).get("best")
    number = best.get("epoch") if isinstance(best, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else epoch


def evaluate_run(run: Run, split: str, progress: Progress) -> dict[str, Any]:
    """Every loss and eval of a built run over ``split``, in eval mode.

    Returns:
        ``{"split", "num_samples", "metrics": {"<Model>/<name>": value}}``; losses and per-sample
        evals are sample means, ``torchmetrics`` evals are computed over the whole split.
    """
    metrics, count = run_epoch(run.flow, split_loader(run, split), run.placement, run.precision, run.transform,
                               progress, split)
    return {"split": split, "num_samples": count, "metrics": metrics}


def split_loader(run: Run, split: str) -> DataLoader:
    """The run's loader for ``split`` (in order), made when the run was built without it."""
    if split in run.loaders:
        return run.loaders[split]
    indices = run.idx_dict.get(split)
    if not isinstance(indices, list):
        names = ", ".join(k for k, v in run.idx_dict.items() if isinstance(v, list))
        raise UserError(f"split: found '{split}'; this run has splits: {names}")
    if not indices:
        raise UserError(f"split '{split}' holds no points; an empty split has no metrics: choose another split")
    dl, tp = run.config.dataloading_params, run.config.training_params
    return make_loader(run.dataset, indices, dl.batch_size, False, tp.seed, dl.num_workers, run.placement.pin_memory)
