"""The ``dlscaffold`` command line.

Commands import torch lazily, inside their bodies, so ``dlscaffold --help`` answers at once.
A :class:`~dlscaffold.errors.UserError` becomes one line per problem on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dlscaffold.arch import ArchKind
from dlscaffold.errors import QuietExit, UserError
from dlscaffold.stops import RunInterrupted

app = typer.Typer(
    help="dlscaffold: generate a deep-learning research project and train it from its config.",
    no_args_is_help=True,
    add_completion=True,
    # Plain click help: rich's panels print "<bool>" beside every flag and read "[default: ...]"
    # in a help text as markup, dropping it.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from dlscaffold import __version__

        typer.echo(f"dlscaffold {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the dlscaffold version and exit."
        ),
    ] = False,
) -> None:
    """dlscaffold: generate a deep-learning research project and train it from its config."""


T = TypeVar("T")


def _run(action: Callable[[], T], debug: bool = False) -> T:
    """Run a command body; a user error becomes ``error: ...`` lines and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return action()
    except UserError as exc:
        if debug:
            raise
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        if len(exc.problems) > 1:
            typer.echo(f"{len(exc.problems)} problems found; nothing was run.", err=True)
        raise typer.Exit(2) from None
    except (RunInterrupted, QuietExit) as exc:  # a signal ended a run after saving it; another process failed
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _split_args(args: list[str], resume: Path | None, default_config: Path | None) -> tuple[Path | None, list[str]]:
    """(config, overrides) from ``train``'s arguments; a project's ``train.py`` defaults to its config.yml."""
    if resume is not None:
        return None, args
    if args and "=" not in args[0]:
        return Path(args[0]), args[1:]
    if default_config is not None:
        return default_config, args
    raise UserError("train: expected a config file first, e.g. dlscaffold train config.yml [key.path=value ...]")


def _project_default(ctx: typer.Context, project: Path | None) -> Path | None:
    """``--project``, else the folder a project's own ``train.py`` / ``evaluate.py`` passed to :func:`main`."""
    return project if project is not None else (ctx.obj or {}).get("project")


@app.command()
def train(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CONFIG_AND_OVERRIDES",
            show_default=False,
            help="CONFIG file, then dotted overrides such as training_params.lrn_rate=3e-4.",
        ),
    ] = None,
    project: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Folder with models.py, dataloader.py, training_utils.py [default: the config's folder].",
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(metavar="RUN_DIR", help="Continue this run folder from its last checkpoint.")
    ] = None,
    dev: Annotated[bool, typer.Option("--dev", help="Train and validate on the dev set only.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Log metrics but keep no checkpoints.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Dev set, anomaly detection, nothing written; full tracebacks.")
    ] = False,
    device: Annotated[str | None, typer.Option(metavar="DEVICE", help="Force a device: cpu, cuda, cuda:1.")] = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Train data-parallel in this many processes on this machine (started through torchrun).",
        ),
    ] = 1,
) -> None:
    """Train the models a config's info_flow names."""

    def action() -> None:
        project_dir = _project_default(ctx, project)
        config, overrides = _split_args(list(args or []), resume, project_dir / "config.yml" if project_dir else None)
        if nproc > 1 and "LOCAL_RANK" not in os.environ:  # start torchrun, which runs this command N times
            from dlscaffold.distributed import launch, launch_args

            code = launch(
                nproc,
                launch_args(
                    config,
                    overrides,
                    project=project_dir,
                    resume=resume,
                    dev=dev,
                    no_save=no_save,
                    debug=debug,
                    device=device,
                ),
            )
            raise typer.Exit(code)
        from dlscaffold.train import TrainOptions
        from dlscaffold.train import train as run_train

        options = TrainOptions(dev=dev, no_save=no_save, debug=debug, device=device, progress_bar=sys.stdout.isatty())
        run_train(config, overrides, project_dir=project_dir, resume=resume, options=options, echo=typer.echo)

    _run(action, debug)


@app.command()
def evaluate(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder printed by `dlscaffold train`.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="Dotted changes to the run's config, e.g. dataloading_params.dataset_path=/new/place.",
            show_default=False,
        ),
    ] = None,
    epoch: Annotated[
        str, typer.Option(metavar="N|best|last", help="Saved epoch to load: a number, best or last.")
    ] = "last",
    split: Annotated[
        str, typer.Option(metavar="SPLIT", help="train, val, dev, or test where the project provides one.")
    ] = "val",
    json_file: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Also write the results to this JSON file.")
    ] = None,
    project: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Project folder [default: the one the run recorded].")
    ] = None,
    device: Annotated[str | None, typer.Option(metavar="DEVICE", help="Force a device: cpu, cuda, cuda:1.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    """Compute every configured loss and eval of a run over one split."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        from dlscaffold.evaluate import evaluate as run_evaluate
        from dlscaffold.runfiles import parse_epoch

        result = run_evaluate(
            run_dir,
            parse_epoch(epoch),
            split,
            json_file,
            _project_default(ctx, project),
            device,
            sys.stdout.isatty(),
            list(overrides or []),
            echo=typer.echo,
        )
        typer.echo(f"{run_dir}: epoch {result['epoch']}, split '{split}', {result['num_samples']} samples")
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in result["metrics"].items():
            table.add_row(name, f"{value:.6g}")
        Console().print(table)
        if json_file is not None:
            typer.echo(f"Wrote {json_file}")

    _run(action, debug)


# ------------------------------------------------------- arch, new, update (plain functions elsewhere)


def _print_table(table: Any) -> None:
    """Print a rich table at its natural width at least: a narrow terminal then wraps lines instead
    of rich cutting digits off numbers."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    console.width = max(console.width, natural)
    console.print(table)


@app.command("arch", short_help="Print a module's layer plan with parameter counts.")
def arch_command(
    kind: Annotated[ArchKind, typer.Argument(help="Which module to plan.", show_default=False)],
    input_size: Annotated[
        str,
        typer.Option(
            "--input",
            metavar="SIZE",
            show_default=False,
            help="Input size, comma-separated: C,H,W (conv2d, deconv2d), "
            "C,L (conv1d, deconv1d) or a feature count (fcn, resnetfcn).",
        ),
    ],
    output_size: Annotated[
        str,
        typer.Option(
            "--output", metavar="SIZE", show_default=False, help="Output size, in the same layout as --input."
        ),
    ],
    num_layers: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Linear layers, fcn and resnetfcn only (default 2).")
    ] = None,
    hidden_size: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Hidden width, fcn only (default max(input, output)).")
    ] = None,
    batchnorm: Annotated[
        bool | None,
        typer.Option("--batchnorm/--no-batchnorm", help="BatchNorm in hidden layers (default on, off for resnetfcn)."),
    ] = None,
    nonlinear: Annotated[
        bool, typer.Option("--nonlinear", help="Norm/activation/dropout after the last layer too.")
    ] = False,
    dropout: Annotated[bool, typer.Option("--dropout", help="Dropout after each activation.")] = False,
    adaptive_pool: Annotated[
        bool, typer.Option("--adaptive-pool", help="Reach sizes the strides cannot by adaptive pooling (conv kinds).")
    ] = False,
) -> None:
    """Print the layers a module would build from the given sizes, with parameter counts."""

    def action() -> None:
        from dlscaffold.arch import plan_table

        _print_table(
            plan_table(
                kind,
                input_size,
                output_size,
                num_layers=num_layers,
                hidden_size=hidden_size,
                batchnorm=batchnorm,
                nonlinear=nonlinear,
                dropout=dropout,
                adaptive_pool=adaptive_pool,
            )
        )

    _run(action)


DataOption = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        metavar="KEY=VALUE",
        show_default=False,
        help="Answer a template question, e.g. -d project_name='Digit study' (repeatable).",
    ),
]
VcsRefOption = Annotated[
    str,
    typer.Option(
        "--vcs-ref",
        metavar="REF",
        show_default=False,
        help="Template version: a tag, branch or commit of the template's git repository (default: HEAD).",
    ),
]
ScaffoldDebugOption = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]


@app.command("new", short_help="Generate a new project from the dlscaffold template.")
def new_command(
    dest: Annotated[
        Path,
        typer.Argument(
            metavar="DEST", show_default=False, help="Folder to create; its name is the default project name."
        ),
    ],
    data: DataOption = None,
    defaults: Annotated[
        bool,
        typer.Option(
            "--defaults",
            help="Take the default of every question not answered with --data. "
            "dlscaffold new never prompts, so this is always the case; accepted as in copier.",
        ),
    ] = False,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            metavar="PATH_OR_URL",
            show_default=False,
            help="Template source: path or git URL of a dlscaffold checkout (default: the checkout this dlscaffold "
            "is installed from). A relative path is recorded relative to the new project.",
        ),
    ] = None,
    vcs_ref: VcsRefOption = "HEAD",
    debug: ScaffoldDebugOption = False,
) -> None:
    """Generate a new project from the dlscaffold template (offline, without questions).

    The project's answers file records the template version it came from: the template's tag, or
    its commit where there is no tag. A local template with uncommitted changes is copied with
    them, with a note; the project records the last commit all the same, because uncommitted
    changes belong to no template version: `dlscaffold update` treats them as your own edits.
    """

    def action() -> None:
        from dlscaffold.scaffold import new_project

        result = new_project(dest, list(data or []), template, vcs_ref)
        typer.echo(
            f"Created {result.target} from the template at {result.source} ({result.commit or 'no git version'})."
        )
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"Next: cd {result.target} && python train.py")

    _run(action, debug)


def _report_update(result: Any) -> None:
    """What ``update`` did: the files and config values it changed, then its conflicts (exit 3)."""
    from rich.table import Table
    from rich.text import Text

    from dlscaffold.scaffold import CONFIG_FILE, CONFLICT_EXIT_CODE

    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if result.up_to_date:
        typer.echo(f"{result.project}: up to date with template version {result.after}; nothing to update")
        return
    versions = (
        f"at template version {result.after}"
        if result.before == result.after
        else f"from template version {result.before} to {result.after}"
    )
    typer.echo(f"Updated {result.project} {versions}; review with `git diff`, then commit")
    if result.changed:
        typer.echo("Files changed:")
        for what, name in result.changed:
            typer.echo(f"  {what:<9} {name}")
    if result.config_changes:
        table = Table(title=f"{CONFIG_FILE} values changed")
        table.add_column("key.path: old -> new", no_wrap=True)
        for key, old, new in result.config_changes:
            table.add_row(Text(f"{key}: {old} -> {new}"))
        _print_table(table)
    if result.conflicts or result.kept:
        typer.echo(
            f"error: template changes conflict with your edits in {len(result.conflicts) + len(result.kept)} "
            "file(s); resolve the <<<<<<< / >>>>>>> blocks (or .rej files), then git add and commit:",
            err=True,
        )
        for name in result.conflicts:
            typer.echo(f"  {name}", err=True)
        for name in result.kept:
            typer.echo(
                f"  {name} (the template no longer has this file; kept because you edited it: keep or delete it)",
                err=True,
            )
        raise typer.Exit(CONFLICT_EXIT_CODE)


@app.command("update", short_help="Bring template changes into a project, keeping your edits.")
def update_command(
    project_dir: Annotated[
        Path,
        typer.Argument(metavar="PROJECT", show_default=False, help="The project folder (default: the current folder)."),
    ] = Path("."),
    data: DataOption = None,
    vcs_ref: VcsRefOption = "HEAD",
    debug: ScaffoldDebugOption = False,
) -> None:
    """Bring template changes into a project, keeping your edits (a 3-way merge through git).

    Lists the files the update changed and every config.yml value that changed (key.path: old ->
    new). A file you edited that the new template version no longer has is kept and listed as a
    conflict.

    Exit code 0: updated (or nothing to update); review with `git diff`, then commit.

    Exit code 2: nothing changed; the error says why.

    Exit code 3: updated, but the files listed hold conflicts to resolve.
    """

    def action() -> None:
        from dlscaffold.scaffold import update_project

        _report_update(update_project(project_dir, list(data or []), vcs_ref))

    _run(action, debug)


@app.command()
def runs(
    logging_dir: Annotated[Path, typer.Argument(help="A logging folder holding run folders.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON instead of a table.")] = False,
    sort: Annotated[
        str,
        typer.Option(
            help="run, status, epochs, best, seconds, run_notes or val:<Model>/<name>; a leading '-' reverses."
        ),
    ] = "run",
) -> None:
    """List the runs of a logging folder: status, epochs, best and last val metrics, duration."""

    def action() -> None:
        from rich.console import Console

        from dlscaffold.runs import format_table, list_runs, sort_runs, to_json

        rows = sort_runs(list_runs(logging_dir, lambda line: typer.echo(f"warning: {line}", err=True)), sort)
        if as_json:
            typer.echo(to_json(rows))
        elif not rows:
            typer.echo(f"No runs in {logging_dir}.")
        else:
            Console().print(format_table(rows))

    _run(action)


def main(argv: list[str] | None = None, project: Path | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Args:
        argv: the command line after the program name.
        project: a project folder to use when ``--project`` is not given (and, for ``train``, whose
            ``config.yml`` to use when no config is named). A generated project's ``train.py`` is
            ``sys.exit(main(["train", *sys.argv[1:]], project=HERE))``.
    """
    try:
        app(args=argv, prog_name="dlscaffold", obj={"project": project})
    except SystemExit as exc:
        return _exiting(argv, exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    return _exiting(argv, 0)


def _exiting(argv: list[str] | None, code: int) -> int:
    """The program's exit code. Run as the program (no ``argv``), the command is over: a SIGTERM or
    SIGINT while Python shuts down (most of a second after a run) no longer kills the process with
    a signal's status; it ends with the command's own code."""
    import signal
    import threading

    if argv is None and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
    return code
