"""The ``dlscaffold`` command line: the commands and their options. Each command's body calls a plain
function of the module that owns the work, which also checks the options against each other and
prints the results (``echo(line)``, ``echo(line, err=True)``: :func:`typer.echo`).

Commands import torch lazily, inside their bodies, so ``dlscaffold --help`` answers at once.
A :class:`~dlscaffold.errors.UserError` becomes one line per problem on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

# The command modules declare their commands on the app as they are imported, in the order
# `dlscaffold --help` lists them.
# isort: off
from dlscaffold.cli import training, project, experiments, deploy  # noqa: F401

# isort: on
from dlscaffold.cli.base import app, main
from dlscaffold.cli.training import evaluate, submit, train

__all__ = ["app", "evaluate", "main", "submit", "train"]
