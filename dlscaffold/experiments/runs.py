"""``dlscaffold runs``: one line per run folder of a logging folder.

Each run is summarised from its files alone (``run.json``, ``metrics.jsonl``, ``config.yml``), so
this works while runs are going, after crashes, and without torch. A file that cannot be read gives
one warning and the run is listed with what is known.

Sort keys (``--sort``): ``run`` (by date, then run number), ``status`` and ``run_notes`` ascend;
``epochs``, ``seconds``, ``best`` (the best value run.json records) and ``val:<Model>/<name>``
(that metric in the last val row) descend, largest first. A leading ``-`` reverses the order
(``--sort=-val:Classifier/loss`` puts the smallest loss first). Runs without the value come last.

A run whose ``run.json`` says ``running`` while no process holds its lock (killed, or its machine
went down) is listed as ``stale`` (:data:`STALE`): it can be continued with ``--resume``.

Whatever a run folder holds is shown through :func:`~dlscaffold.records.summaries.printable`: a
control character in a folder name, a run note, a status or a metric name is shown escaped
(``\\x1b``), never sent to the terminal as it is.

The table (:func:`format_table`) fits a terminal: :func:`choose_columns` drops the model prefix
from metric names, then the ``notes``, ``seconds`` and ``epochs`` columns, while it is wider than
the terminal; ``--columns`` (:func:`parse_columns`) picks the columns instead. The runs of a sweep
folder (its trial runs) also get ``trial`` and ``params`` columns.

Statistics over seed groups (``--group``) and the csv, markdown and latex formats are
:mod:`dlscaffold.experiments.results`, and so is the whole command (:func:`~dlscaffold.experiments.results.show_runs`);
:func:`print_run_table` prints the table here, :func:`print_table` any ``rich`` table at its
natural width at least.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlscaffold.errors import UserError, available, did_you_mean
from dlscaffold.records.summaries import STALE, is_number, natural, printable

if TYPE_CHECKING:
    from rich.table import Table

# where a command's lines go: echo(line) to standard output, echo(line, err=True) to standard error
Say = Callable[..., None]

KEYS = ("run", "status", "epochs", "best", "last_val", "seconds", "run_notes")
SORT_KEYS = ("run", "status", "epochs", "best", "seconds", "run_notes")
# --columns names -> row keys; "last_val" and "run_notes" (the JSON keys) are accepted too
COLUMNS = {
    "run": "run",
    "trial": "trial",  # these two only where a run is a sweep's trial (see default_columns)
    "params": "params",
    "status": "status",
    "epochs": "epochs",
    "best": "best",
    "last": "last_val",
    "seconds": "seconds",
    "notes": "run_notes",
}
_ALIASES = {"last_val": "last", "run_notes": "notes", "time": "seconds"}
_TITLES = {"last": "last val", "seconds": "time"}
_HIDDEN_FIRST = ("notes", "seconds", "epochs")  # dropped in this order while the table is too wide
_SWEEP_COLUMNS = ("trial", "params")
_ASCENDING = ("run", "status", "run_notes")
_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "pruned": "blue",  # a sweep's pruner ended it
    STALE: "magenta",
}


def _sort_value(row: dict[str, Any], key: str) -> Any:
    """The value ``key`` sorts ``row`` by, or None when the row lacks it."""
    if key.startswith("val:"):
        value = row["last_val"].get(key[4:])
    elif key == "best":
        value = (row["best"] or {}).get("value")
    elif key == "run":
        return natural(row["run"])
    else:
        value = row[key]
    if key in _ASCENDING:
        return value if isinstance(value, str) else None
    return value if is_number(value) else None


def sort_runs(rows: list[dict[str, Any]], key: str = "run") -> list[dict[str, Any]]:
    """Rows sorted by ``key``: one of :data:`SORT_KEYS` or ``val:<Model>/<name>``, ``-`` in front reverses.

    ``run``, ``status`` and ``run_notes`` ascend; numbers (``epochs``, ``seconds``, ``best``'s value,
    ``val:`` metrics) descend. Rows without a value (or with NaN) come last, in run order.

    Raises:
        UserError: for an unknown key or a ``val:`` metric no run has.
    """
    reverse, name = (True, key[1:]) if key.startswith("-") else (False, key)
    if name.startswith("val:"):
        metrics = {m for row in rows for m in row["last_val"]}
        if rows and name[4:] not in metrics:
            raise UserError(
                printable(
                    f"--sort: no run has the val metric '{name[4:]}'; {did_you_mean(name[4:], metrics)}"
                    f"{available(metrics)}"
                )
            )
    elif name not in SORT_KEYS:
        raise UserError(
            f"--sort: unknown key '{key}'; {did_you_mean(name, SORT_KEYS)}expected one of "
            f"{', '.join(SORT_KEYS)} or val:<Model>/<name>, with '-' in front to reverse"
        )
    by_run = sorted(rows, key=lambda r: natural(r["run"]))
    known = [r for r in by_run if _sort_value(r, name) is not None]
    missing = [r for r in by_run if _sort_value(r, name) is None]
    descending = name not in _ASCENDING
    known.sort(key=lambda r: _sort_value(r, name), reverse=descending != reverse)
    return known + missing


def parse_columns(text: str) -> list[str]:
    """``--columns``: comma-separated names of :data:`COLUMNS` (``last_val``, ``run_notes`` and
    ``time`` are accepted for ``last``, ``notes`` and ``seconds``), in the order given.

    Raises:
        UserError: for an unknown name, or none.
    """
    names = []
    for part in text.split(","):
        name = _ALIASES.get(part.strip(), part.strip())
        if name not in COLUMNS:
            raise UserError(
                f"--columns: unknown column '{part.strip()}'; {did_you_mean(part.strip(), COLUMNS)}"
                f"expected a comma-separated list of {', '.join(COLUMNS)}"
            )
        if name not in names:
            names.append(name)
    return names


def stale_note(logging_dir: Path, row: dict[str, Any], resume: str) -> str:
    """The note under the table for a :data:`STALE` run; ``resume`` is how to call ``train`` here."""
    import shlex

    path = shlex.quote(str(logging_dir / row["run"]))
    return printable(
        f"{row['run']}: run.json says running, but no process holds its lock (killed, or its machine "
        f"went down?); it is stale: continue it with {resume} --resume {path}"
    )


def _number(value: Any) -> str:
    """A number to 4 significant digits; anything else as text, its control characters escaped."""
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else printable(value)


def _short(names: list[str]) -> dict[str, str]:
    """Metric names without their ``<Model>/`` prefix where that leaves them distinct."""
    ends = [name.partition("/")[2] or name for name in names]
    return {name: end if ends.count(end) == 1 else name for name, end in zip(names, ends, strict=True)}


def _best_cell(best: dict[str, Any] | None, short: bool = False) -> str:
    if not best:
        return "-"
    metric = printable(best.get("metric") or "?")
    epoch = "?" if best.get("epoch") is None else best["epoch"]
    return f"{epoch}: {_short([metric])[metric] if short else metric}={_number(best.get('value'))}"


def _duration(seconds: Any) -> str:
    if not is_number(seconds):
        return "-"
    from dlscaffold.run.summary import duration

    return duration(seconds)


def default_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column of :data:`COLUMNS`, ``trial`` and ``params`` only where a row is a sweep's trial run."""
    sweep = any("trial" in row for row in rows)
    return [column for column in COLUMNS if sweep or column not in _SWEEP_COLUMNS]


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None, short: bool = False) -> Table:
    """A ``rich`` table of the rows, one column per name of ``columns`` (:data:`COLUMNS`; default
    :func:`default_columns`).

    Numbers show 4 significant digits, last val one ``metric=value`` per line (without the
    ``<Model>/`` prefix where that stays unambiguous, with ``short``), the time as ``12m05s``; run
    names and statuses are never cut; cells are plain text (a ``[`` in a run's notes is not markup).
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    columns = default_columns(rows) if columns is None else columns
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for column in columns:
        table.add_column(
            _TITLES.get(column, column),
            justify="right" if column in ("epochs", "seconds") else "left",
            no_wrap=column in ("run", "status", "epochs", "seconds"),
            overflow="fold",
        )
    for row in rows:
        shown = {name: printable(name) for name in row["last_val"]}
        names = _short(list(shown.values())) if short else {name: name for name in shown.values()}
        last_val = "\n".join(f"{names[shown[name]]}={_number(value)}" for name, value in row["last_val"].items())
        params = row.get("params", {}).items()
        cells = {
            "run": Text(printable(row["run"])),
            "status": Text(printable(row["status"]), style=_STATUS_STYLE.get(row["status"], "")),
            "epochs": Text(str(row["epochs"])),
            "best": Text(_best_cell(row["best"], short)),
            "last": Text(last_val or "-"),
            "seconds": Text(_duration(row["seconds"])),
            "notes": Text(printable(row["run_notes"])),
            "trial": Text("-" if row.get("trial") is None else str(row["trial"])),
            "params": Text("\n".join(f"{printable(k)}={_number(v)}" for k, v in params) or "-"),
        }
        table.add_row(*(cells[column] for column in columns))
    return table


def table_width(table: Table) -> int:
    """The columns ``table`` takes at its natural width (no cell wrapped)."""
    import io

    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=io.StringIO(), width=10_000)
    return Measurement.get(console, console.options, table).maximum


def choose_columns(rows: list[dict[str, Any]], width: int) -> tuple[list[str], bool]:
    """The columns (and whether to shorten metric names) that fit the table in ``width``: every
    column, then short metric names, then without ``notes`` (the run's folder name holds them),
    ``seconds``, ``epochs``, until it fits; what is left wraps its best and last val cells."""
    columns, short = default_columns(rows), False
    while table_width(format_table(rows, columns, short)) > width:
        if not short:
            short = True
        elif hidden := next((c for c in _HIDDEN_FIRST if c in columns), None):
            columns.remove(hidden)
        else:
            break
    return columns, short


def print_table(table: Any) -> None:
    """Print a rich table at its natural width at least: a narrow terminal then wraps lines instead
    of rich cutting digits off numbers."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    widest = Measurement.get(console, console.options.update_width(10_000), table).maximum
    console.width = max(console.width, widest)
    console.print(table)


def print_run_table(rows: list[dict[str, Any]], chosen: list[str] | None, echo: Say) -> None:
    """The runs table: on a terminal it fits the width (columns left out, with a note); a file or a
    pipe gets whole lines."""
    import shutil
    import sys

    if not sys.stdout.isatty():
        print_table(format_table(rows, chosen))
        return
    short, width = False, shutil.get_terminal_size().columns
    if chosen is None:
        chosen, short = choose_columns(rows, width)
        if len(chosen) < len(default_columns(rows)):
            left_out = ", ".join(c for c in default_columns(rows) if c not in chosen)
            echo(f"note: {left_out} left out to fit the terminal; --columns chooses", err=True)
    from rich.console import Console

    Console(width=width).print(format_table(rows, chosen, short))


def show_lineage(run_dir: Path, other_options: bool, echo: Say) -> None:
    """``runs --lineage RUN``: the tree of runs whose weights RUN loaded.

    Raises:
        UserError: with ``other_options`` (any of --json, --format, --group, --columns, --sort).
    """
    from dlscaffold.records.lineage import lineage_lines

    if other_options:
        raise UserError(
            "runs: --lineage prints one run's tree; leave out --json, --format, --group, --columns and --sort"
        )
    for line in lineage_lines(run_dir, lambda line: echo(printable(f"warning: {line}"), err=True)):
        echo(printable(line))
