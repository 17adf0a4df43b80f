"""``dlscaffold evaluate``: every configured loss and eval of a run, over one split, in eval mode.

:func:`evaluate` is the command and :func:`evaluate_and_print` what it prints; :func:`evaluate_run` /
:func:`set_clock` / :func:`split_loader` work on a built run (:func:`~dlscaffold.run.builder.build_run`
with saved weights loaded) and are shared with :meth:`dlscaffold.api.LoadedRun.evaluate`. Nothing
here builds an optimizer; only ``--json`` writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from dlscaffold.data import split_indices
from dlscaffold.parts.distributed import World
from dlscaffold.prepare import prepare
from dlscaffold.records.checkpoint import resolve_epoch
from dlscaffold.records.lineage import warn_changed
from dlscaffold.records.rundir import CONFIG_FILE, read_metrics, write_text_atomic
from dlscaffold.records.runfiles import LAST, check_run_dir, epoch_number, parse_epoch
from dlscaffold.records.summaries import to_json
from dlscaffold.run.builder import Run, build_run, loader_of
from dlscaffold.run.epoch import run_epoch
from dlscaffold.run.progress import Progress


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

    The split follows its points' ids where the dataset defines ``point_id(i)``: a data folder whose
    listing changed since (points at other indices) gives the same points, with a note; a point gone
    is one error line (:func:`dlscaffold.parts.point_ids.reuse_split`).

    Args:
        run_dir: the run folder.
        epoch: which saved weights: an epoch number, ``"best"`` or ``"last"`` (the default).
        split: ``train``, ``val``, ``dev`` or ``test`` (when the project provides one).
        json_path: also write the result there, as strict JSON (NaN and infinities as null).
        project_dir: the project's code, taken as is (default: the project folder the run recorded,
            when the run folder lies inside it and its code is unchanged since the run last trained;
            see :func:`dlscaffold.prepare.project_folder`; code is never imported from the run folder).
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
        run_dir / CONFIG_FILE, list(overrides), project_dir, run_dir=run_dir, splits=(split,), training=False
    )
    echo(f"Evaluating with the code of the project in {prepared.project.root}")
    warn_changed(run_dir)  # a weights file this run was loaded from changed since: one warning per model
    models = list(prepared.config.info_flow)
    saved = resolve_epoch(run_dir, models, requested)
    asked = any(item.partition("=")[0].strip() == "training_params.precision" for item in overrides)
    run = build_run(prepared, {split: (split, False)}, device, weights=(run_dir, saved), keep_precision=asked)
    set_clock(run, run_dir, saved)
    every = prepared.config.logging_params.progress_every
    result = evaluate_run(run, split, Progress(progress_bar, console, every=every, echo=echo), tta)
    result = {"run_dir": str(run_dir), "epoch": epoch_number(run_dir, saved), "requested_epoch": requested, **result}
    if json_path is not None:
        write_text_atomic(json_path, to_json(result))
    return result


def evaluate_and_print(
    run_dir: Path,
    overrides: list[str] = (),
    epoch: str = LAST,
    split: str = "val",
    json_file: Path | None = None,
    project_dir: Path | None = None,
    device: str | None = None,
    tta: bool = True,
    *,
    echo: Callable[..., None],
) -> None:
    """``dlscaffold evaluate``: :func:`evaluate`, then a line saying what was evaluated and a table
    of the metrics. ``echo`` is called as ``echo(line)`` or ``echo(line, err=True)``. With
    ``json_file`` ``-`` the JSON alone goes to standard output and everything else (the project's
    own prints included) to standard error; another ``json_file`` is written."""
    import contextlib
    import sys

    from rich.console import Console
    from rich.table import Table

    to_stdout = json_file is not None and str(json_file) == "-"  # the JSON alone on stdout

    def say(line: str) -> None:
        echo(line, err=to_stdout)

    console = Console(stderr=to_stdout)
    # with --json -, whatever the project's code prints goes to stderr too
    with contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
        result = evaluate(
            run_dir,
            parse_epoch(epoch),
            split,
            None if to_stdout else json_file,
            project_dir,
            device,
            console.is_terminal,
            list(overrides),
            echo=say,
            console=console,
            tta=tta,
        )
    asked = result["requested_epoch"]
    which = f"epoch {result['epoch']}" + (f" ({asked})" if isinstance(asked, str) else "")
    views = f", test-time augmentation: {result['tta']['views']} views" if result["tta"] else ""
    say(f"{run_dir}: {which}, split '{split}', {result['num_samples']} samples{views}")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.6g}")
    console.print(table)
    if to_stdout:
        echo(to_json(result))
    elif json_file is not None:
        say(f"Wrote {json_file}")


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
    dl, seed = run.config.dataloading_params, run.config.training_params.seed
    return loader_of(dl, run.dataset, indices, False, seed, run.placement, World(), split)
