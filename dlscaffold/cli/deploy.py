"""The commands that take a project beyond training: ``export`` (a run's models for deployment)
and ``profile`` (where a training step's time goes)."""

from __future__ import annotations

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

        project_dir = project_default(ctx, project, run_dir)
        export_run(run_dir, model, outputs or [], fmt, epoch, output, project_dir, device, echo=typer.echo)

    run_action(action, debug)


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

        config, overrides = split_args(args or [], None, (ctx.obj or {}).get("project"))
        profile_config(config, overrides, steps, warmup, trace, project_default(ctx, project), device, echo=typer.echo)

    run_action(action, debug)
