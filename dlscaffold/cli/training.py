"""The commands that train and evaluate runs: ``train`` (one run, a seed group, data-parallel),
``submit`` (cluster jobs) and ``evaluate``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer import Argument, Option

from dlscaffold.cli.base import (
    ConfigAndOverrides,
    DebugOption,
    DeviceOption,
    ProjectOption,
    app,
    project_default,
    run_action,
    split_args,
)


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
        project_dir = project_default(ctx, project, resume)
        config, overrides = split_args(list(args or []), resume, project_dir)
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

    code = run_action(action, debug)
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
        options = {**ctx.params, "project": project_default(ctx, project), "slurm": list(slurm or [])}
        del options["args"], options["debug"]
        return run_submit(Request.from_args(list(args or []), **options), typer.echo)

    raise typer.Exit(run_action(action, debug))  # 0, or with --wait the jobs' status


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

        project_dir = project_default(ctx, project, run_dir)
        evaluate_and_print(
            run_dir, overrides or [], epoch, split, json_file, project_dir, device, not no_tta, echo=typer.echo
        )

    run_action(action, debug)
