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

from dlscaffold.errors import QuietExit, UserError
from dlscaffold.run.stops import RunInterrupted
from dlscaffold.tools.arch import ArchKind

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
        from dlscaffold._version import __version__

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


ConfigAndOverrides = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="CONFIG_AND_OVERRIDES",
        show_default=False,
        help="CONFIG file, then dotted overrides such as training_params.lrn_rate=3e-4.",
    ),
]
ProjectOption = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Folder with models.py, dataloader.py, training_utils.py [default: the config's folder].",
    ),
]


@app.command()
def train(
    ctx: typer.Context,
    args: ConfigAndOverrides = None,
    project: ProjectOption = None,
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
    seeds: Annotated[
        str | None,
        typer.Option(metavar="S1,S2,...", help="Train once per seed, as a seed group (see `dlscaffold runs --group`)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, metavar="N", help="With --seeds: train this many runs at once, in processes.")
    ] = 1,
    vary_split: Annotated[
        bool, typer.Option("--vary-split", help="With --seeds: let the seed change the split too.")
    ] = False,
    group: Annotated[str | None, typer.Option(hidden=True, metavar="ID:SEED:SIZE")] = None,
    sweep_trial: Annotated[str | None, typer.Option(hidden=True, metavar="SWEEP_DIR:TRIAL:SEED_INDEX")] = None,
) -> None:
    """Train the models a config's info_flow names."""

    def action() -> None:
        from dlscaffold.records.rundir import CONFIG_FILE

        project_dir = _project_default(ctx, project)
        config, overrides = _split_args(list(args or []), resume, project_dir / CONFIG_FILE if project_dir else None)
        if config is not None:  # a FIFO or a device is refused at once, before torch is imported
            from dlscaffold.config import check_config_path

            check_config_path(config)
        if seeds is not None:
            flags = {"dev": dev, "no_save": no_save, "debug": debug, "device": device}
            _train_seeds(seeds, config, overrides, project_dir, resume, nproc, workers, vary_split, **flags)
        if nproc > 1 and "LOCAL_RANK" not in os.environ:  # start torchrun, which runs this command N times
            from dlscaffold.build.distributed import check_launch, launch, launch_args
            from dlscaffold.run.summary import ARGV0_ENV

            check_launch(nproc, config, overrides, resume)  # what every process would refuse: said once, first
            before = os.environ.get(ARGV0_ENV)
            os.environ[ARGV0_ENV] = before or sys.argv[0]  # the processes print a --resume command like this one
            try:
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
                        sweep_trial=sweep_trial,
                    ),
                )
            finally:
                if before is None:
                    os.environ.pop(ARGV0_ENV, None)
            raise typer.Exit(code)
        from dlscaffold.train import TrainOptions
        from dlscaffold.train import train as run_train

        options = TrainOptions(dev=dev, no_save=no_save, debug=debug, device=device, progress_bar=sys.stdout.isatty())
        if group is not None:  # one run of a seed group, started by --seeds --workers N
            from dlscaffold.experiments.groups import group_info

            group_id, seed, size = group.rsplit(":", 2)
            options.run_info, options.run_notes_suffix = group_info(group_id, int(seed), int(size)), f"seed{seed}"
        if sweep_trial is not None:  # a process of a sweep's data-parallel trial (sweep --nproc K)
            from dlscaffold.experiments.sweep import trial_options

            folder, number, index = sweep_trial.rsplit(":", 2)
            trial = trial_options(Path(folder), int(number), int(index), typer.echo)
            options.run_info, options.run_notes_suffix = trial.run_info, trial.run_notes_suffix
            options.on_validation = trial.on_validation
        run_train(config, overrides, project_dir=project_dir, resume=resume, options=options, echo=typer.echo)

    _run(action, debug)


def _train_seeds(
    seeds: str,
    config: Path | None,
    overrides: list[str],
    project_dir: Path | None,
    resume: Path | None,
    nproc: int,
    workers: int,
    vary_split: bool,
    dev: bool,
    no_save: bool,
    debug: bool,
    device: str | None,
) -> None:
    """``train --seeds``: a seed group, one run per seed."""
    from dlscaffold.experiments.groups import parse_seeds, train_group
    from dlscaffold.train import TrainOptions

    chosen = parse_seeds(seeds)
    if resume is not None or nproc > 1 or debug:
        flag = "--resume" if resume is not None else "--nproc" if nproc > 1 else "--debug"
        raise UserError(f"--seeds cannot be combined with {flag}; run each seed's run with it separately")
    if config is None:
        raise UserError("train --seeds: expected a config file first, e.g. dlscaffold train config.yml --seeds 1,2,3")
    from dlscaffold.prepare import prepare

    prepare(config, overrides, project_dir)  # every config problem once, before any run starts
    options = TrainOptions(dev=dev, no_save=no_save, device=device, progress_bar=sys.stdout.isatty() and workers == 1)
    code = train_group(
        config,
        overrides,
        chosen,
        workers=workers,
        vary_split=vary_split,
        project_dir=project_dir,
        options=options,
        echo=typer.echo,
    )
    raise typer.Exit(code)


@app.command(short_help="Train as cluster jobs (SLURM, or here): requeued at the time limit, resumed exactly.")
def submit(
    ctx: typer.Context,
    args: ConfigAndOverrides = None,
    project: ProjectOption = None,
    seeds: Annotated[
        str | None,
        typer.Option(metavar="S1,S2,...", help="One array job per seed: a seed group with one split."),
    ] = None,
    sweep: Annotated[
        Path | None, typer.Option(metavar="SWEEP.yml", help="Run this sweep; its workers are the jobs.")
    ] = None,
    workers: Annotated[int, typer.Option(metavar="N", help="With --sweep: this many worker jobs (an array).")] = 1,
    cluster: Annotated[
        str, typer.Option(metavar="NAME", help="slurm, or local: the same jobs on this machine.")
    ] = "slurm",
    partition: Annotated[str | None, typer.Option(metavar="NAME", help="The SLURM partition.")] = None,
    time_limit: Annotated[
        float, typer.Option("--time", metavar="MINUTES", help="Each job's time limit (0.5: thirty seconds).")
    ] = 60.0,
    nodes: Annotated[int, typer.Option(metavar="N", help="Nodes per job (SLURM).")] = 1,
    gpus_per_node: Annotated[
        int, typer.Option(metavar="N", help="GPUs per node; one data-parallel process per GPU.")
    ] = 0,
    cpus_per_task: Annotated[int | None, typer.Option(metavar="N", help="CPUs per process (SLURM).")] = None,
    mem_gb: Annotated[float | None, typer.Option(metavar="GB", help="Memory per node (SLURM).")] = None,
    max_requeues: Annotated[
        int, typer.Option(metavar="R", help="Requeues after the time limit, at most (preemptions do not count).")
    ] = 3,
    signal_name: Annotated[
        str,
        typer.Option("--signal", metavar="SIG", help="Sent before the time limit: USR2, USR1, HUP or TERM."),
    ] = "USR2",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the jobs; exit with their status.")] = False,
    slurm: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE", show_default=False, help="Any other sbatch option, through submitit (repeatable)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    """Submit a run (dlscaffold train CONFIG), a seed group (--seeds) or a sweep's workers (--sweep) as
    cluster jobs through submitit. Before the time limit the scheduler signals the job; the run saves
    its exact position, the job is requeued and the run resumes in its folder. Logs go to
    <logging_dir>/jobs/<job_id>/. See docs/clusters.md.
    """

    def action() -> int:
        from dlscaffold.config import check_config_path
        from dlscaffold.experiments.submit import Request
        from dlscaffold.experiments.submit import submit as run_submit

        items = list(args or [])
        config = Path(items.pop(0)) if items and "=" not in items[0] else None
        if config is not None:  # a FIFO or a device is refused at once, before torch is imported
            check_config_path(config)
        request = Request(
            config, items, _project_default(ctx, project), seeds, sweep, workers, cluster, partition, time_limit,
            nodes, gpus_per_node, cpus_per_task, mem_gb, max_requeues, signal_name, wait, list(slurm or []),
        )  # fmt: skip
        return run_submit(request, typer.echo)

    code = _run(action, debug)
    if code:
        raise typer.Exit(code)


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
        Path | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="Also write the results to this JSON file; '-': to standard output, the rest to standard error.",
        ),
    ] = None,
    project: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Project folder [default: the one the run recorded].")
    ] = None,
    device: Annotated[str | None, typer.Option(metavar="DEVICE", help="Force a device: cpu, cuda, cuda:1.")] = None,
    no_tta: Annotated[
        bool, typer.Option("--no-tta", help="Without the run's test-time augmentation (training_params.tta_outputs).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    """Compute every configured loss and eval of a run over one split."""

    def action() -> None:
        import contextlib

        from rich.console import Console
        from rich.table import Table

        from dlscaffold.evaluate import evaluate as run_evaluate
        from dlscaffold.records.runfiles import parse_epoch
        from dlscaffold.records.summaries import to_json

        to_stdout = json_file is not None and str(json_file) == "-"  # the JSON alone on stdout

        def say(line: str) -> None:
            typer.echo(line, err=to_stdout)

        console = Console(stderr=to_stdout)
        # with --json -, whatever the project's code prints goes to stderr too
        with contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
            result = run_evaluate(
                run_dir,
                parse_epoch(epoch),
                split,
                None if to_stdout else json_file,
                _project_default(ctx, project),
                device,
                console.is_terminal,
                list(overrides or []),
                echo=say,
                console=console,
                tta=not no_tta,
            )
        asked = result["requested_epoch"]
        which = f"epoch {result['epoch']}" + (f" ({asked})" if isinstance(asked, str) else "")
        tta = result["tta"]
        views = f", test-time augmentation: {tta['views']} views" if tta else ""
        say(f"{run_dir}: {which}, split '{split}', {result['num_samples']} samples{views}")
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in result["metrics"].items():
            table.add_row(name, f"{value:.6g}")
        console.print(table)
        if to_stdout:
            typer.echo(to_json(result))
        elif json_file is not None:
            say(f"Wrote {json_file}")

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
        from dlscaffold.tools.arch import plan_table

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

    Where no git repository around it would track it (none, or one that ignores it), the new project
    is made a git repository of its own, the generated files its first commit: updates merge
    through git.
    """

    def action() -> None:
        from dlscaffold.tools.scaffold import new_project

        result = new_project(dest, list(data or []), template, vcs_ref)
        typer.echo(
            f"Created {result.target} from the template at {result.source} ({result.commit or 'no git version'})."
        )
        if result.repository:
            typer.echo(result.repository)
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"Next: cd {result.target} && python train.py")

    _run(action, debug)


def _report_update(result: Any) -> None:
    """What ``update`` did: the files and config values it changed, then its conflicts (exit 3)."""
    from rich.table import Table
    from rich.text import Text

    from dlscaffold.tools.scaffold import CONFIG_FILE, CONFLICT_EXIT_CODE

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
        in_conflict = "; ".join(
            f"{key}: yours {mine}, the template's {theirs}" for key, mine, theirs in result.config_conflicts
        )
        for name in result.conflicts:
            typer.echo(
                f"  {name}" + (f" (keys in conflict: {in_conflict})" if name == CONFIG_FILE and in_conflict else ""),
                err=True,
            )
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

    The project must be the top of its own git repository, or committed in the one around it, with
    no uncommitted changes. Lists the files the update changed and every config.yml value that
    changed (key.path: old -> new), and the keys in conflict. A file you edited that the new
    template version no longer has is kept and listed as a conflict.

    Exit code 0: updated (or nothing to update); review with `git diff`, then commit.

    Exit code 2: nothing changed; the error says why.

    Exit code 3: updated, but the files listed hold conflicts to resolve.
    """

    def action() -> None:
        from dlscaffold.tools.scaffold import update_project

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
    columns: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help="The table's columns, comma-separated, from run, status, epochs, best, last, seconds, notes "
            "(and trial, params for a sweep folder) (e.g. run,status,best,last) "
            "[default: as many as fit the terminal].",
        ),
    ] = None,
    group: Annotated[
        bool,
        typer.Option(
            "--group",
            help="One row per seed group (runs sharing run.json's group id): n, and mean, std and 95% CI "
            "of the best value and of each final val metric.",
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="table, json, csv, markdown or latex (markdown, latex: a paper table) [default: table].",
        ),
    ] = None,
    lineage: Annotated[
        Path | None,
        typer.Option(
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

        if lineage is not None:
            _print_lineage(lineage, bool(as_json or group or fmt is not None or columns is not None or sort != "run"))
            return

        from dlscaffold.experiments.results import check_format, runs_output
        from dlscaffold.experiments.runs import (
            STALE,
            list_runs,
            parse_columns,
            sort_runs,
            stale_note,
            to_json,
        )
        from dlscaffold.run.summary import program

        chosen = parse_columns(columns) if columns is not None else None
        form = check_format(fmt or ("json" if as_json else "table"))
        if as_json and form != "json":
            raise UserError(f"runs: --json and --format {form} ask for two formats; give one of them")
        if chosen is not None and (group or form != "table"):
            raise UserError("runs: --columns chooses the run table's columns; leave it out with --group or --format")
        rows = sort_runs(list_runs(logging_dir, lambda line: typer.echo(f"warning: {line}", err=True)), sort)
        if group or form in ("csv", "markdown", "latex"):
            output = runs_output(rows, form, group, logging_dir)
            typer.echo(output) if isinstance(output, str) else _print_table(output)
        elif form == "json":
            typer.echo(to_json(rows))
        elif not rows:
            typer.echo(f"No runs in {logging_dir}.")
        else:
            _print_run_table(rows, chosen)
        for row in rows:
            if row["status"] == STALE:
                typer.echo(f"note: {stale_note(logging_dir, row, program('train'))}", err=True)

    _run(action)


def _print_lineage(run_dir: Path, other_options: bool) -> None:
    """``runs --lineage RUN``: the tree of runs whose weights RUN loaded."""
    from dlscaffold.records.lineage import lineage_lines

    if other_options:
        raise UserError(
            "runs: --lineage prints one run's tree; leave out --json, --format, --group, --columns and --sort"
        )
    for line in lineage_lines(run_dir, lambda line: typer.echo(f"warning: {line}", err=True)):
        typer.echo(line)


def _print_run_table(rows: list[dict[str, Any]], chosen: list[str] | None) -> None:
    """The runs table: on a terminal it fits the width (columns left out, with a note); a file or a
    pipe gets whole lines."""
    import shutil

    from dlscaffold.experiments.runs import choose_columns, default_columns, format_table

    if not sys.stdout.isatty():
        _print_table(format_table(rows, chosen))
        return
    short, width = False, shutil.get_terminal_size().columns
    if chosen is None:
        chosen, short = choose_columns(rows, width)
        if len(chosen) < len(default_columns(rows)):
            left_out = ", ".join(c for c in default_columns(rows) if c not in chosen)
            typer.echo(f"note: {left_out} left out to fit the terminal; --columns chooses", err=True)
    from rich.console import Console

    Console(width=width).print(format_table(rows, chosen, short))


@app.command(short_help="Compare groups of runs: differing config keys, mean ± std, Welch p-values, curves.")
def compare(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN...", show_default=False, help="Run folders, or logging / sweep folders whose runs to take."
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            metavar="M",
            show_default=False,
            help="A validation metric, <Model>/<name> or total_loss, compared by its last val value "
            "(repeatable) [default: the monitor's best value].",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.png", help="Also draw each metric's val curve per epoch: a line per group, a ± std band."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare groups of runs (runs sharing a seed group id; a run without one is its own group).

    Prints the config keys whose values differ between the groups' first runs, then per metric
    each group's mean ± std, its mean minus the first group's and Welch's t-test p-value against
    the first group (none for a group of one).
    """

    def action() -> None:
        from dlscaffold.experiments.results import check_plot_path, compare_json, compare_output
        from dlscaffold.experiments.results import compare as run_compare
        from dlscaffold.experiments.results import plot as draw

        if plot is not None:
            check_plot_path(plot)
        result = run_compare(list(paths), metric, lambda line: typer.echo(f"warning: {line}", err=True))
        if as_json:
            typer.echo(compare_json(result))
        else:
            for part in compare_output(result):
                typer.echo(part) if isinstance(part, str) else _print_table(part)
        if plot is not None:
            draw(result, plot)
            typer.echo(f"Wrote {plot}", err=as_json)

    _run(action)


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
    worker: Annotated[Path | None, typer.Option(hidden=True, metavar="SWEEP_DIR")] = None,
) -> None:
    """Run a hyperparameter sweep: trials drawn by Optuna, pruned from their validations, resumable."""

    def action() -> int:
        from dlscaffold.experiments import sweep

        if worker is not None:  # one of --workers N processes
            sweep.work(worker, typer.echo)
            return 0
        if (sweep_file is None) == (resume is None):
            raise UserError(
                "sweep: expected a sweep file (dlscaffold sweep sweep.yml) or --resume SWEEP_DIR, not both"
                if resume is not None
                else "sweep: expected a sweep file, e.g. dlscaffold sweep sweep.yml, or --resume SWEEP_DIR"
            )
        if resume is not None:
            return sweep.resume(resume, workers, typer.echo)
        return sweep.start(sweep_file, workers, project, typer.echo, nproc=nproc)

    code = _run(action)
    if code:
        raise typer.Exit(code)


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
    """The program's exit code. Run as the program (no ``argv``), the command is over: a stop signal
    (SIGTERM, SIGINT, ...) while Python shuts down (most of a second after a run) no longer kills the
    process with a signal's status; it ends with the command's own code."""
    import signal
    import threading

    from dlscaffold.run.stops import STOP_SIGNALS

    if argv is None and threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    return code
