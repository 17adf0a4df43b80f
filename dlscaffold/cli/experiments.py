"""The commands that read and search many runs: ``runs``, ``compare`` and ``sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer import Argument, Option

from dlscaffold.cli.base import app, run_action
from dlscaffold.errors import UserError


@app.command()
def runs(
    logging_dir: Annotated[Path, Argument(help="A logging folder holding run folders.")] = Path("runs"),
    as_json: Annotated[bool, Option("--json", help="Print the runs as JSON instead of a table.")] = False,
    sort: Annotated[
        str, Option(help="run, status, epochs, best, seconds, run_notes or val:<Model>/<name>; a leading '-' reverses.")
    ] = "run",
    columns: Annotated[
        str | None,
        Option(
            metavar="NAMES",
            help="The table's columns, comma-separated, from run, status, epochs, best, last, seconds, notes "
            "(and trial, params for a sweep folder) (e.g. run,status,best,last) "
            "[default: as many as fit the terminal].",
        ),
    ] = None,
    group: Annotated[
        bool,
        Option(
            "--group",
            help="One row per seed group (runs sharing run.json's group id): n, and mean, std and 95% CI "
            "of the best value and of each final val metric.",
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        Option(
            "--format",
            metavar="FORMAT",
            help="table, json, csv, markdown or latex (markdown, latex: a paper table) [default: table].",
        ),
    ] = None,
    lineage: Annotated[
        Path | None,
        Option(
            "--lineage",
            metavar="RUN",
            help="Instead of the table, the tree of runs whose weights RUN loaded (info_flow.<Model>.model_dir), "
            "recursively: model, run, epoch, file, SHA-256, status.",
        ),
    ] = None,
) -> None:
    """List the runs of a logging folder (or a sweep folder's trial runs): status, epochs, best and
    last val metrics, duration.

    On a terminal the table fits its width: metric names lose their model prefix, then the notes,
    time and epochs columns are left out, as needed. A run whose run.json says running while no
    process holds its lock is listed as stale (it was killed): continue it with train --resume.
    With --group, one row per seed group instead (see docs/experiments.md). With --lineage RUN, the
    runs RUN's models were loaded from, as a tree (see docs/runtime.md).
    """

    def action() -> None:
        from dlscaffold.experiments.results import show_runs

        show_runs(logging_dir, as_json, sort, columns, group, fmt, lineage, typer.echo)

    run_action(action)


@app.command(short_help="Compare groups of runs: differing config keys, mean ± std, Welch p-values, curves.")
def compare(
    paths: Annotated[
        list[Path],
        Argument(
            metavar="RUN...", show_default=False, help="Run folders, or logging / sweep folders whose runs to take."
        ),
    ],
    metric: Annotated[
        list[str] | None,
        Option(
            "--metric",
            metavar="M",
            show_default=False,
            help="A validation metric, <Model>/<name> or total_loss, compared by its last val value "
            "(repeatable) [default: the monitor's best value].",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        Option(metavar="FILE.png", help="Also draw each metric's val curve per epoch: a line per group, a ± std band."),
    ] = None,
    as_json: Annotated[bool, Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare groups of runs (runs sharing a seed group id; a run without one is its own group).

    Prints the config keys whose values differ between the groups' first runs, then per metric
    each group's mean ± std, its mean minus the first group's and Welch's t-test p-value against
    the first group (none for a group of one).
    """

    def action() -> None:
        from dlscaffold.experiments.results import show_comparison

        show_comparison(paths, metric, plot, as_json, typer.echo)

    run_action(action)


@app.command("sweep", short_help="Search hyperparameters with Optuna; each trial is a run folder.")
def sweep_command(
    sweep_file: Annotated[
        Path | None, typer.Argument(metavar="SWEEP_FILE", show_default=False, help="The sweep file (YAML).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, metavar="N", help="Run this many trials at once, in processes.")] = 1,
    nproc: Annotated[
        int,
        typer.Option(min=1, metavar="K", help="Train each trial data-parallel in K processes (torchrun)."),
    ] = 1,
    project: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder with the project's code [default: the base config's folder]."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(metavar="SWEEP_DIR", help="Continue this sweep folder after a stop or a crash."),
    ] = None,
) -> None:
    """Run a hyperparameter sweep: trials drawn by Optuna, pruned from their validations, resumable."""

    def action() -> int:
        from dlscaffold.experiments import sweep

        if (sweep_file is None) == (resume is None):
            raise UserError(
                "sweep: expected a sweep file (dlscaffold sweep sweep.yml) or --resume SWEEP_DIR, not both"
                if resume is not None
                else "sweep: expected a sweep file, e.g. dlscaffold sweep sweep.yml, or --resume SWEEP_DIR"
            )
        if resume is not None:
            return sweep.resume(resume, workers, typer.echo)
        return sweep.start(sweep_file, workers, project, typer.echo, nproc=nproc)

    code = run_action(action)
    if code:
        raise typer.Exit(code)
