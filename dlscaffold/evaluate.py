"""``dlscaffold evaluate``: every configured loss and eval of a run, over one split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from dlscaffold.builder import build_run
from dlscaffold.checkpoint import check_saved_epoch, last_common_epoch
from dlscaffold.epoch import run_epoch
from dlscaffold.errors import UserError
from dlscaffold.prepare import prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import is_run_dir, write_text_atomic


def evaluate(run_dir: Path, epoch: int | None = None, split: str = "val", json_path: Path | None = None,
             project_dir: Path | None = None, device: str | None = None, progress_bar: bool = False,
             overrides: list[str] = (), echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Load a run's config, split and weights and compute its losses and evals over ``split``.

    Args:
        run_dir: the run folder.
        epoch: which saved epoch (default: the last one).
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
    run_dir = run_dir.resolve()
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a run folder (no config.yml and idx_dict.json in it); "
                        "pass a folder printed by dlscaffold train")
    prepared = prepare(run_dir / "config.yml", list(overrides), project_dir, run_dir=run_dir, splits=(split,))
    echo(f"Evaluating with the code of the project in {prepared.project.root}")
    models = list(prepared.config.info_flow)
    if epoch is None:
        epoch = last_common_epoch(run_dir, models)
    else:
        check_saved_epoch(run_dir, models, epoch, "--epoch")
    run = build_run(prepared, {split: (split, False)}, device, weights=(run_dir, epoch))
    metrics, count = run_epoch(run.flow, run.loaders[split], run.placement, run.precision, run.transform,
                               Progress(progress_bar), split)
    result = {"run_dir": str(run_dir), "epoch": epoch, "split": split, "num_samples": count, "metrics": metrics}
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result, indent=2))
    return result
