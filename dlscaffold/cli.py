"""The ``dlscaffold`` command line.

Commands import torch lazily, inside their bodies, so ``dlscaffold --help`` answers at once.
A :class:`~dlscaffold.errors.UserError` becomes one line per problem on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from dlscaffold.errors import UserError

app = typer.Typer(
    help="dlscaffold: generate a deep-learning research project and train it from its config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _split_args(args: list[str], resume: Optional[Path]) -> tuple[Optional[Path], list[str]]:
    if resume is not None:
        return None, args
    if not args or "=" in args[0]:
        raise UserError("train: expected a config file first, e.g. dlscaffold train config.yml [key.path=value ...]")
    return Path(args[0]), args[1:]


@app.command()
def train(
    args: Annotated[Optional[list[str]], typer.Argument(
        help="CONFIG file, then dotted overrides such as training_params.lrn_rate=3e-4.", show_default=False)] = None,
    project: Annotated[Optional[Path], typer.Option(help="Folder with models.py, dataloader.py, training_utils.py [default: the config's folder].")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its last checkpoint.")] = None,
    dev: Annotated[bool, typer.Option("--dev", help="Train and validate on the dev set only.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Log metrics but keep no checkpoints.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Dev set, anomaly detection, nothing written; full tracebacks.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Force a device: cpu, cuda, cuda:1.")] = None,
) -> None:
    """Train the models a config's info_flow names."""

    def action() -> None:
        from dlscaffold.train import train as run_train

        config, overrides = _split_args(list(args or []), resume)
        run_train(config, overrides, project_dir=project, resume=resume, dev=dev, no_save=no_save, debug=debug,
                  device=device, echo=typer.echo, progress_bar=sys.stdout.isatty())

    _run(action, debug)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder printed by `dlscaffold train`.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Dotted changes to the run's config, e.g. dataloading_params.dataset_path=/new/place.", show_default=False)] = None,
    epoch: Annotated[Optional[int], typer.Option(help="Saved epoch to load [default: the last].")] = None,
    split: Annotated[str, typer.Option(help="train, val, dev, or test where the project provides one.")] = "val",
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results to this JSON file.")] = None,
    project: Annotated[Optional[Path], typer.Option(help="Project folder [default: the one the run recorded].")] = None,
    device: Annotated[Optional[str], typer.Option(help="Force a device: cpu, cuda, cuda:1.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    """Compute every configured loss and eval of a run over one split."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        from dlscaffold.evaluate import evaluate as run_evaluate

        result = run_evaluate(run_dir, epoch, split, json_file, project, device, sys.stdout.isatty(), list(overrides or []))
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


from dlscaffold.arch import arch  # noqa: E402

app.command("arch")(arch)

# Commands defined in other modules are registered here.
from dlscaffold.scaffold import new, update  # noqa: E402

app.command()(new)
app.command()(update)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    A generated project's ``train.py`` is ``sys.exit(main(["train", "config.yml", *sys.argv[1:]]))``.
    """
    try:
        app(args=argv, prog_name="dlscaffold")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
