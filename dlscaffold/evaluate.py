"""``dlscaffold evaluate``: every configured loss and eval of a run, over one split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlscaffold.builder import build_run
from dlscaffold.checkpoint import resolve_epoch
from dlscaffold.evaluation import evaluate_run, set_clock
from dlscaffold.lineage import warn_changed
from dlscaffold.prepare import prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import write_text_atomic
from dlscaffold.runfiles import LAST, check_run_dir, epoch_number, parse_epoch
from dlscaffold.runs import to_json


def evaluate(
    run_dir: Path,
    epoch: int | str | None = None,
    split: str = "val",
    json_path: Path | None = None,
    project_dir: Path | None = None,
    device: str | None = None,
    progress_bar: bool = False,
    overrides: list[str] = (),
    echo: Callable[[str], None] = print,
    console: Any = None,
    tta: bool = True,
) -> dict[str, Any]:
    """Load a run's config, split and weights and compute its losses and evals over ``split``.

    Args:
        run_dir: the run folder.
        epoch: which saved weights: an epoch number, ``"best"`` or ``"last"`` (the default).
        split: ``train``, ``val``, ``dev`` or ``test`` (when the project provides one).
        json_path: also write the result there, as strict JSON (NaN and infinities as null).
        project_dir: the project's code (default: the one recorded with the run, when it still
            exists; code is never imported from the run folder).
        device: force a device (``cpu``, ``cuda``, ``cuda:1``).
        progress_bar: show a progress bar (on a terminal).
        overrides: dotted ``key=value`` changes to the run's config, e.g. a moved ``dataset_path``.
        echo: where the human-readable lines go (and the plain progress lines, without a bar).
        console: where the bar is drawn (a ``rich.console.Console``); default: rich's, on stdout.
        tta: with the run's test-time augmentation (``training_params.tta_outputs``), if it has one.

    Returns:
        ``{"run_dir", "epoch", "requested_epoch", "split", "num_samples", "tta", "metrics": {"<Model>/<name>": v}}``:
        ``epoch`` is the number of the epoch whose weights were loaded (``"best"`` only for a run whose
        run.json does not say which epoch that is), ``requested_epoch`` what was asked: ``"best"``,
        ``"last"`` or the number.
    """
    requested = parse_epoch(LAST if epoch is None else epoch)
    run_dir = check_run_dir(run_dir)
    prepared = prepare(
        run_dir / "config.yml", list(overrides), project_dir, run_dir=run_dir, splits=(split,), training=False
    )
    echo(f"Evaluating with the code of the project in {prepared.project.root}")
    warn_changed(run_dir)  # a weights file this run was loaded from changed since: one warning per model
    models = list(prepared.config.info_flow)
    saved = resolve_epoch(run_dir, models, requested)
    run = build_run(prepared, {split: (split, False)}, device, weights=(run_dir, saved))
    set_clock(run, run_dir, saved)
    every = prepared.config.logging_params.progress_every
    result = evaluate_run(run, split, Progress(progress_bar, console, every=every, echo=echo), tta)
    result = {"run_dir": str(run_dir), "epoch": epoch_number(run_dir, saved), "requested_epoch": requested, **result}
    if json_path is not None:
        write_text_atomic(json_path, to_json(result))
    return result
