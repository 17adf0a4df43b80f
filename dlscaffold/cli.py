"""The ``dlscaffold`` command line: the commands and their options. Each command's body calls a plain
function of the module that owns the work, which also checks the options against each other and
prints the results (``echo(line)``, ``echo(line, err=True)``: :func:`typer.echo`).

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
from typing import Annotated, TypeVar

import typer
from typer import Argument, Option

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
        bool, Option("--version", callback=_print_version, is_eager=True, help="Print the dlscaffold version and exit.")
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


def _split_args(args: list[str], resume: Path | None, project_dir: Path | None) -> tuple[Path | None, list[str]]:
    """(config, overrides) from ``train``'s arguments; a project's ``train.py`` defaults to its
    config.yml. A config that is a FIFO or a device is refused at once, before torch is imported."""
    from dlscaffold.config import check_config_path
    from dlscaffold.records.rundir import CONFIG_FILE

    if resume is not None:
        return None, args
    if args and "=" not in args[0]:
        config, overrides = Path(args[0]), args[1:]
    elif project_dir is not None:
        config, overrides = project_dir / CONFIG_FILE, args
    else:
        raise UserError("train: expected a config file first, e.g. dlscaffold train config.yml [key.path=value ...]")
    check_config_path(config)
    return config, overrides


def _project_default(ctx: typer.Context, project: Path | None, run_dir: Path | None = None) -> Path | None:
    """``--project`` (its code taken as is), else the folder a project's own ``train.py`` /
    ``evaluate.py`` passed to :func:`main`. For a run folder (``evaluate RUN``, ``train --resume RUN``)
    that folder is a default, not a choice: it is used only while it holds the code the run last ran,
    the check a project folder the run recorded gets (:func:`dlscaffold.prepare.check_project_code`)."""
    if project is not None:
        return project
    default = (ctx.obj or {}).get("project")
    if default is not None and run_dir is not None:
        from dlscaffold.records.rundir import is_run_dir

        if is_run_dir(Path(run_dir).expanduser()):  # otherwise the command says it is not a run folder
            from dlscaffold.prepare import check_project_code

            check_project_code(Path(default), Path(run_dir).expanduser(), script=True)
    return default


# options that several commands share
ConfigAndOverrides = Annotated[
    list[str] | None,
    Argument(
        metavar="CONFIG_AND_OVERRIDES",
        show_default=False,
        help="CONFIG file, then dotted overrides such as training_params.lrn_rate=3e-4.",
    ),
]
ProjectOption = Annotated[
    Path | None,
    Option(
        metavar="DIR", help="Folder with models.py, dataloader.py, training_utils.py [default: the config's folder]."
    ),
]
DebugOption = Annotated[bool, Option("--debug", help="Show full tracebacks.")]
DeviceOption = Annotated[str | None, Option(metavar="DEVICE", help="Force a device: cpu, cuda, cuda:1.")]
DataOption = Annotated[
    list[str] | None,
    Option(
        "--data",
        "-d",
        metavar="KEY=VALUE",
        show_default=False,
        help="Answer a template question, e.g. -d project_name='Digit study' (repeatable).",
    ),
]
VcsRefOption = Annotated[
    str,
    Option(
        "--vcs-ref",
        metavar="REF",
        show_default=False,
        help="Template version: a tag, branch or commit of the template's git repository (default: HEAD).",
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
    device: DeviceOption = None,
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
) -> None:
    """Train the models a config's info_flow names."""

    def action() -> int:
        project_dir = _project_default(ctx, project, resume)
        config, overrides = _split_args(list(args or []), resume, project_dir)
        flags = {"dev": dev, "no_save": no_save, "debug": debug, "device": device}
        if nproc > 1 and seeds is None and "LOCAL_RANK" not in os.environ:  # torchrun runs this command N times
            from dlscaffold.run.launch import launch_train

            return launch_train(nproc, config, overrides, project=project_dir, resume=resume, **flags)
        from dlscaffold.train import TrainOptions
        from dlscaffold.train import train as run_train

        options = TrainOptions(**flags, progress_bar=sys.stdout.isatty())
        if seeds is not None:  # a seed group: groups.py checks what --seeds can be combined with
            from dlscaffold.experiments.groups import train_seeds

            group = {"resume": resume, "nproc": nproc, "workers": workers, "vary_split": vary_split}
            return train_seeds(seeds, config, overrides, project_dir=project_dir, options=options, **group)
        run_train(config, overrides, project_dir=project_dir, resume=resume, options=options, echo=typer.echo)
        return 0

    code = _run(action, debug)
    if code:
        raise typer.Exit(code)


@app.command(short_help="Train as cluster jobs (SLURM, or here): requeued at the time limit, resumed exactly.")
def submit(
    ctx: typer.Context,
    args: ConfigAndOverrides = None,
    project: ProjectOption = None,
    seeds: Annotated[
        str | None, Option(metavar="S1,S2,...", help="One array job per seed: a seed group with one split.")
    ] = None,
    sweep: Annotated[Path | None, Option(metavar="SWEEP.yml", help="Run this sweep; its workers are the jobs.")] = None,
    workers: Annotated[int, Option(metavar="N", help="With --sweep: this many worker jobs (an array).")] = 1,
    cluster: Annotated[str, Option(metavar="NAME", help="slurm, or local: the same jobs on this machine.")] = "slurm",
    partition: Annotated[str | None, Option(metavar="NAME", help="The SLURM partition.")] = None,
    time: Annotated[
        float, Option("--time", metavar="MINUTES", help="Each job's time limit (0.5: thirty seconds).")
    ] = 60.0,
    nodes: Annotated[int, Option(metavar="N", help="Nodes per job (SLURM).")] = 1,
    gpus_per_node: Annotated[int, Option(metavar="N", help="GPUs per node; one data-parallel process per GPU.")] = 0,
    cpus_per_task: Annotated[int | None, Option(metavar="N", help="CPUs per process (SLURM).")] = None,
    mem_gb: Annotated[float | None, Option(metavar="GB", help="Memory per node (SLURM).")] = None,
    max_requeues: Annotated[
        int, Option(metavar="R", help="Requeues after the time limit, at most (preemptions do not count).")
    ] = 3,
    signal: Annotated[
        str, Option("--signal", metavar="SIG", help="Sent before the time limit: USR2, USR1, HUP or TERM.")
    ] = "USR2",
    wait: Annotated[bool, Option("--wait", help="Wait for the jobs; exit with their status.")] = False,
    slurm: Annotated[
        list[str] | None,
        Option(metavar="KEY=VALUE", show_default=False, help="Any other sbatch option, through submitit (repeatable)."),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Submit a run (dlscaffold train CONFIG), a seed group (--seeds) or a sweep's workers (--sweep) as
    cluster jobs through submitit. Before the time limit the scheduler signals the job; the run saves
    its exact position, the job is requeued and the run resumes in its folder. Logs go to
    <logging_dir>/jobs/<job_id>/. See docs/clusters.md.
    """

    def action() -> int:
        from dlscaffold.experiments.submit import Request
        from dlscaffold.experiments.submit import submit as run_submit

        # the options by name are the Request's fields
        options = {**ctx.params, "project": _project_default(ctx, project), "slurm": list(slurm or [])}
        del options["args"], options["debug"]
        return run_submit(Request.from_args(list(args or []), **options), typer.echo)

    raise typer.Exit(_run(action, debug))  # 0, or with --wait the jobs' status


@app.command()
def evaluate(
    ctx: typer.Context,
    run_dir: Annotated[Path, Argument(metavar="RUN_DIR", help="A run folder printed by `dlscaffold train`.")],
    overrides: Annotated[
        list[str] | None,
        Argument(
            metavar="KEY=VALUE",
            help="Dotted changes to the run's config, e.g. dataloading_params.dataset_path=/new/place.",
            show_default=False,
        ),
    ] = None,
    epoch: Annotated[str, Option(metavar="N|best|last", help="Saved epoch to load: a number, best or last.")] = "last",
    split: Annotated[
        str, Option(metavar="SPLIT", help="train, val, dev, or test where the project provides one.")
    ] = "val",
    json_file: Annotated[
        Path | None,
        Option(
            "--json",
            metavar="FILE",
            help="Also write the results to this JSON file; '-': to standard output, the rest to standard error.",
        ),
    ] = None,
    project: Annotated[
        Path | None, Option(metavar="DIR", help="Project folder [default: the one the run recorded].")
    ] = None,
    device: DeviceOption = None,
    no_tta: Annotated[
        bool, Option("--no-tta", help="Without the run's test-time augmentation (training_params.tta_outputs).")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Compute every configured loss and eval of a run over one split."""

    def action() -> None:
        from dlscaffold.evaluate import evaluate_and_print

        project_dir = _project_default(ctx, project, run_dir)
        evaluate_and_print(
            run_dir, overrides or [], epoch, split, json_file, project_dir, device, not no_tta, echo=typer.echo
        )

    _run(action, debug)


@app.command("arch", short_help="Print a module's layer plan with parameter counts.")
def arch_command(
    kind: Annotated[ArchKind, Argument(help="Which module to plan.", show_default=False)],
    input_size: Annotated[
        str,
        Option(
            "--input",
            metavar="SIZE",
            show_default=False,
            help="Input size, comma-separated: C,H,W (conv2d, deconv2d), "
            "C,L (conv1d, deconv1d) or a feature count (fcn, resnetfcn).",
        ),
    ],
    output_size: Annotated[
        str, Option("--output", metavar="SIZE", show_default=False, help="Output size, in the same layout as --input.")
    ],
    num_layers: Annotated[
        int | None, Option(min=1, metavar="N", help="Linear layers, fcn and resnetfcn only (default 2).")
    ] = None,
    hidden_size: Annotated[
        int | None, Option(min=1, metavar="N", help="Hidden width, fcn only (default max(input, output)).")
    ] = None,
    batchnorm: Annotated[
        bool | None,
        Option("--batchnorm/--no-batchnorm", help="BatchNorm in hidden layers (default on, off for resnetfcn)."),
    ] = None,
    nonlinear: Annotated[bool, Option("--nonlinear", help="Norm/activation/dropout after the last layer too.")] = False,
    dropout: Annotated[bool, Option("--dropout", help="Dropout after each activation.")] = False,
    adaptive_pool: Annotated[
        bool, Option("--adaptive-pool", help="Reach sizes the strides cannot by adaptive pooling (conv kinds).")
    ] = False,
) -> None:
    """Print the layers a module would build from the given sizes, with parameter counts."""

    def action() -> None:
        from dlscaffold.experiments.runs import print_table
        from dlscaffold.tools.arch import plan_table

        options = (num_layers, hidden_size, batchnorm, nonlinear, dropout, adaptive_pool)
        print_table(plan_table(kind, input_size, output_size, *options))

    _run(action)


@app.command("schema", short_help="Write the config's JSON Schema, for editors' YAML completion.")
def schema_command(
    output: Annotated[
        Path | None,
        Option("--output", "-o", metavar="FILE", help="Write it to FILE [default: standard output]."),
    ] = None,
) -> None:
    """Write the JSON Schema of config.yml (every key, its type, range, default and description)."""

    def action() -> None:
        from dlscaffold.tools.schema import write_schema

        write_schema(output, echo=typer.echo)

    _run(action)


@app.command("export", short_help="Export a run's model (or part of its flow) for deployment, checked.")
def export_command(
    ctx: typer.Context,
    run_dir: Annotated[Path, Argument(metavar="RUN_DIR", help="A run folder printed by `dlscaffold train`.")],
    model: Annotated[str | None, Option("--model", metavar="NAME", help="One model of the run's info_flow.")] = None,
    outputs: Annotated[
        list[str] | None,
        Option(
            "--outputs",
            metavar="MODEL.TENSOR",
            show_default=False,
            help="Outputs to compute (repeatable): the models they need, routed as in training, as one module.",
        ),
    ] = None,
    fmt: Annotated[
        str, Option("--format", metavar="FORMAT", help="exported-program (torch.export, .pt2) or onnx.")
    ] = "exported-program",
    epoch: Annotated[
        str | None,
        Option(
            metavar="N|best|last",
            help="Saved epoch to export: a number, best or last [default: best; last for a run with monitor: none].",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        Option(
            "--output",
            "-o",
            metavar="FILE",
            help="File to write (.pt2 or .onnx) [default: RUN_DIR/exports/<MODEL or outputs>-<EPOCH>.pt2|.onnx]; "
            "<stem>.export.json is written beside it.",
        ),
    ] = None,
    project: Annotated[
        Path | None, Option(metavar="DIR", help="Project folder [default: the one the run recorded].")
    ] = None,
    device: Annotated[
        str | None, Option(metavar="DEVICE", help="Where to trace and check the export: cpu, cuda [default: cpu].")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Export a model or a piece of the info_flow graph (torch.export or ONNX), checked on the run's
    validation samples against the run's own outputs before it is written (docs/export.md)."""

    def action() -> None:
        from dlscaffold.tools.export import export_run

        project_dir = _project_default(ctx, project, run_dir)
        export_run(run_dir, model, outputs or [], fmt, epoch, output, project_dir, device, echo=typer.echo)

    _run(action, debug)


@app.command("profile", short_help="Profile training steps: time per model, loss and optimizer step.")
def profile_command(
    ctx: typer.Context,
    args: ConfigAndOverrides = None,
    steps: Annotated[int, Option(min=1, metavar="N", help="Training steps to profile (after the warm-up).")] = 10,
    warmup: Annotated[int, Option(min=0, metavar="N", help="Untimed steps first.")] = 3,
    trace: Annotated[
        Path | None,
        Option(metavar="FILE", help="Chrome/Perfetto trace to write [default: profile_trace.json here]."),
    ] = None,
    project: ProjectOption = None,
    device: DeviceOption = None,
    debug: DebugOption = False,
) -> None:
    """Run N training steps under torch.profiler; print each model's, loss's and optimizer's share."""

    def action() -> None:
        from dlscaffold.tools.profile import profile_config

        config, overrides = _split_args(args or [], None, (ctx.obj or {}).get("project"))
        profile_config(config, overrides, steps, warmup, trace, _project_default(ctx, project), device, echo=typer.echo)

    _run(action, debug)


@app.command("new", short_help="Generate a new project from the dlscaffold template.")
def new_command(
    dest: Annotated[
        Path,
        Argument(metavar="DEST", show_default=False, help="Folder to create; its name is the default project name."),
    ],
    data: DataOption = None,
    defaults: Annotated[
        bool,
        Option(
            "--defaults",
            help="Take the default of every question not answered with --data. "
            "dlscaffold new never prompts, so this is always the case; accepted as in copier.",
        ),
    ] = False,
    template: Annotated[
        str | None,
        Option(
            "--template",
            metavar="PATH_OR_URL",
            show_default=False,
            help="Template source: path or git URL of a dlscaffold checkout (default: the checkout this dlscaffold "
            "is installed from). A relative path is recorded relative to the new project.",
        ),
    ] = None,
    vcs_ref: VcsRefOption = "HEAD",
    debug: DebugOption = False,
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
        from dlscaffold.tools.scaffold import new_project, report_new

        report_new(new_project(dest, list(data or []), template, vcs_ref), typer.echo)

    _run(action, debug)


@app.command("update", short_help="Bring template changes into a project, keeping your edits.")
def update_command(
    project_dir: Annotated[
        Path, Argument(metavar="PROJECT", show_default=False, help="The project folder (default: the current folder).")
    ] = Path("."),
    data: DataOption = None,
    vcs_ref: VcsRefOption = "HEAD",
    debug: DebugOption = False,
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

    def action() -> int:
        from dlscaffold.experiments.runs import print_table
        from dlscaffold.tools.scaffold import report_update, update_project

        return report_update(update_project(project_dir, list(data or []), vcs_ref), typer.echo, print_table)

    raise typer.Exit(_run(action, debug))  # 0, or 3: conflicts to resolve


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

    _run(action)


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

    code = _run(action)
    if code:
        raise typer.Exit(code)


def main(argv: list[str] | None = None, project: Path | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Args:
        argv: the command line after the program name.
        project: a project folder to use when ``--project`` is not given (and, for ``train``, whose
            ``config.yml`` to use when no config is named). A generated project's ``train.py`` is
            ``sys.exit(main(["train", *sys.argv[1:]], project=HERE))``. For ``evaluate RUN`` and
            ``train --resume RUN`` it is used only while it holds the code the run last ran (as a
            project folder the run recorded); ``--project DIR`` takes a folder's code as it is.
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
