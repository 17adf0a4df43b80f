"""The command line's frame: the typer app, how a command's body runs (a user error becomes
``error: ...`` lines and exit code 2), the options several commands share, and :func:`main`. The
commands themselves are declared by the modules beside this one, one per kind of work."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from typer import Argument, Option

from dlscaffold.errors import QuietExit, UserError
from dlscaffold.run.stops import RunInterrupted

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


def run_action(action: Callable[[], T], debug: bool = False) -> T:
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


def split_args(args: list[str], resume: Path | None, project_dir: Path | None) -> tuple[Path | None, list[str]]:
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


def project_default(ctx: typer.Context, project: Path | None, run_dir: Path | None = None) -> Path | None:
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
