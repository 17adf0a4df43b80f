"""The commands around a project's code and config: ``new`` and ``update`` (the template),
``arch`` (a module's layer plan) and ``schema`` (the config's JSON Schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer import Argument, Option

from dlscaffold.cli.base import DataOption, DebugOption, VcsRefOption, app, run_action
from dlscaffold.tools.arch import ArchKind


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

    run_action(action, debug)


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

    raise typer.Exit(run_action(action, debug))  # 0, or 3: conflicts to resolve


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

    run_action(action)


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

    run_action(action)
