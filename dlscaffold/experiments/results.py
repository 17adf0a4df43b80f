"""Statistics over seed groups, comparisons between groups, and runs as a pandas DataFrame.

Everything here is read from run folders' files (``run.json``, ``metrics.jsonl``, ``config.yml``),
like ``dlscaffold runs``, without torch. scipy (Student t, Welch's t-test), pandas
(:func:`load_runs`) and matplotlib (``compare --plot``) are imported by the functions that use them.

- :func:`group_stats`: ``dlscaffold runs DIR --group``. Runs that share run.json's ``group.id``
  (a seed group, or a sweep trial's seeds) form a group; a run without one is a group of its own.
  For the monitor's best value and each final validation metric (the last val row): mean, std
  (ddof 1) and a 95% confidence interval ``mean ± t(0.975, n-1) * std / sqrt(n)``.
- :func:`format_runs` / :func:`format_groups`: the run list or the groups as csv, markdown, latex.
- :func:`show_runs`: ``dlscaffold runs``, its options checked against each other, then the
  table (:func:`dlscaffold.experiments.runs.print_run_table`) or what ``--group`` / ``--format`` ask for.
- :func:`compare` / :func:`compare_output` / :func:`plot`: ``dlscaffold compare RUN...``
  (:func:`show_comparison` prints it).
- :func:`load_runs`: one DataFrame row per run under a folder (its sweeps' trial runs included).

A run folder may come from anyone: its files are read only inside it (see
:mod:`dlscaffold.records.summaries`), a value of the wrong type is left out with a warning, and
everything printed (tables, csv, markdown, latex, warnings, errors) has its control characters
escaped by :func:`~dlscaffold.records.summaries.printable`; only JSON prints text as it is, since
JSON escapes them itself.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlscaffold.config import INT64_MAX, flatten
from dlscaffold.errors import UserError, available, did_you_mean
from dlscaffold.experiments.runs import (
    default_columns,
    parse_columns,
    print_run_table,
    print_table,
    show_lineage,
    sort_runs,
    stale_note,
)
from dlscaffold.records.rundir import is_run_dir, read_metrics
from dlscaffold.records.summaries import (
    STALE,
    is_folder,
    list_runs,
    natural,
    printable,
    read_run_config,
    run_folders,
    summarize_run,
    to_json,
    valid_text,
)

if TYPE_CHECKING:
    import pandas
    from rich.table import Table

Warn = Callable[[str], None]
FORMATS = ("table", "json", "csv", "markdown", "latex")
# config keys that differ between the runs of one group by construction, left out of comparisons
NOISE_KEYS = ("training_params.seed", "dataloading_params.idx_dict_path", "logging_params.logging_dir")
SWEEP_DEPTH = 3  # load_runs looks this deep: DIR/<run>, DIR/sweeps/<sweep>/<run>
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def check_format(fmt: str) -> str:
    """``--format``: one of :data:`FORMATS`.

    Raises:
        UserError: for any other name.
    """
    if fmt not in FORMATS:
        raise UserError(
            f"--format: unknown format '{fmt}'; {did_you_mean(fmt, FORMATS)}expected one of {', '.join(FORMATS)}"
        )
    return fmt


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def summary(values: Iterable[Any]) -> dict[str, Any]:
    """``{"n", "mean", "std", "ci95"}`` of the finite numbers among ``values`` (None and NaN are
    left out; ``n`` counts those used). ``std`` has ddof 1; ``ci95`` is ``[lo, hi]``, the Student t
    interval of the mean. With n = 1 ``std`` and ``ci95`` are None; with n = 0 the mean is too."""
    import numpy as np

    xs = [x for x in map(_finite, values) if x is not None]
    with _quiet_numbers():  # values near the float limit overflow to inf, said by the table itself
        out: dict[str, Any] = {"n": len(xs), "mean": float(np.mean(xs)) if xs else None, "std": None, "ci95": None}
        if len(xs) >= 2:
            from scipy import stats

            std = float(np.std(xs, ddof=1))
            half = float(stats.t.ppf(0.975, len(xs) - 1)) * std / math.sqrt(len(xs))
            out.update(std=std, ci95=[out["mean"] - half, out["mean"] + half])
    return out


@contextlib.contextmanager
def _quiet_numbers() -> Iterator[None]:
    """No numpy RuntimeWarning (overflow, invalid value) printed for the values of a hostile run."""
    import warnings

    import numpy as np

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def group_id(row: dict[str, Any]) -> str:
    """The group a run row belongs to: its run.json ``group.id``, or its own folder name."""
    return row["group"]["id"] if "group" in row else row["run"]


def _grouped(items: list[Any], key: Callable[[Any], str]) -> dict[str, list[Any]]:
    """The items by group, groups in the order their first item comes."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _union(lists: Iterable[Iterable[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names))


def group_stats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per group of the run rows (:func:`dlscaffold.records.summaries.summarize_run`), in the order of
    each group's first run. Keys: ``group`` (its id, or the run's folder name for a run without
    one), ``n`` (runs), ``runs`` (their folder names), ``seeds``, ``run_notes`` (the first run's),
    ``statuses`` (runs per status), ``best`` (:func:`summary` of the runs' best monitor values, with
    ``metric``: the first run's monitor; a run that monitored another metric is left out) and one
    ``val/<Model>/<name>`` :func:`summary` per final validation metric. The tables name the metric
    of each best value: in the title where every group monitors the same one, else in each cell."""
    out = []
    for label, members in _grouped(rows, group_id).items():
        bests = [row["best"] for row in members if row["best"] and row["best"]["metric"]]
        metric = bests[0].get("metric") if bests else None
        entry = {
            "group": label,
            "n": len(members),
            "runs": [row["run"] for row in members],
            "seeds": [row["group"].get("seed") if "group" in row else None for row in members],
            "run_notes": members[0]["run_notes"],
            "statuses": dict(Counter(row["status"] for row in members)),
            "best": {"metric": metric, **summary(b.get("value") for b in bests if b.get("metric") == metric)},
        }
        for name in _union(row["last_val"] for row in members):
            entry[f"val/{name}"] = summary(row["last_val"].get(name) for row in members)
        out.append(entry)
    return out


# ------------------------------------------------------------------------------ csv, markdown, latex


def _cell(value: Any) -> str:
    """A value as a table cell shows it: ``-`` for None, floats to 4 significant digits, a mapping as
    ``k=v, ...``; control characters escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{printable(k)}={_cell(v)}" for k, v in value.items())
    return printable(value)


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def render(header: list[str], rows: list[list[Any]], fmt: str, raw: set[str] = frozenset()) -> str:
    """The table as ``csv`` (values as they are, None empty), ``markdown`` (GitHub pipes) or
    ``latex`` (a booktabs ``tabular``). Cells of the ``raw`` columns are LaTeX already."""
    header = [printable(h) for h in header]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else _csv_value(v) for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    cells = [[printable(v) if isinstance(v, str) else _cell(v) for v in row] for row in rows]
    if fmt == "markdown":
        lines = [header, ["---"] * len(header), *cells]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines)
    body = [" & ".join(c if header[i] in raw else _latex(c) for i, c in enumerate(line)) + r" \\" for line in cells]
    return "\n".join(
        [
            r"\begin{tabular}{" + "l" * len(header) + "}",
            r"\toprule",
            " & ".join(_latex(h) for h in header) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
        ]
    )


def _csv_value(value: Any) -> Any:
    """A csv field: numbers as they are, text with its control characters escaped."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return _cell(value) if isinstance(value, dict) else printable(value)


def format_runs(rows: list[dict[str, Any]], fmt: str) -> str:
    """The run list (:func:`dlscaffold.records.summaries.summarize_run` rows) as csv, markdown or latex: run,
    (trial, params for a sweep's runs), status, epochs, best.metric, best.epoch, best.value, each
    ``val/<Model>/<name>`` of the last val row, seconds, run_notes."""
    metrics = _union(row["last_val"] for row in rows)
    sweep = "trial" in default_columns(rows)
    header = ["run", *(["trial", "params"] if sweep else []), "status", "epochs", "best.metric", "best.epoch"]
    header += ["best.value", *(f"val/{m}" for m in metrics), "seconds", "run_notes"]
    table = []
    for row in rows:
        best = row["best"] or {}
        line = [row["run"], *([row.get("trial"), row.get("params")] if sweep else []), row["status"], row["epochs"]]
        line += [best.get("metric"), best.get("epoch"), best.get("value")]
        table.append([*line, *(row["last_val"].get(m) for m in metrics), row["seconds"], row["run_notes"]])
    return render(header, table, fmt)


def mean_std(stat: dict[str, Any], latex: bool = False) -> str:
    """``mean ± std`` as a table shows it: the mean to 4 significant digits, the std to 2; the
    mean alone for a group of one, ``-`` without a value."""
    if stat.get("mean") is None:
        return "-"
    if stat.get("std") is None:
        return f"${stat['mean']:.4g}$" if latex else f"{stat['mean']:.4g}"
    return f"${stat['mean']:.4g} \\pm {stat['std']:.2g}$" if latex else f"{stat['mean']:.4g} ± {stat['std']:.2g}"


def _best_metrics(stats: list[dict[str, Any]]) -> list[str]:
    """The metrics the groups' best values are of, each once."""
    return _union([entry["best"]["metric"]] for entry in stats if entry["best"]["metric"])


def _best_title(stats: list[dict[str, Any]]) -> str:
    """``best <metric>`` where every group's best value is of one metric; else ``best`` (each cell
    then names its metric, :func:`_best_cell`)."""
    metrics = _best_metrics(stats)
    return f"best {metrics[0]}" if len(metrics) == 1 else "best"


def _best_cell(entry: dict[str, Any], stats: list[dict[str, Any]], latex: bool = False) -> str:
    """A group's best value as ``mean ± std``, followed by ``(metric)`` where the groups' best
    values are of different metrics (so that no column mixes metrics without saying so)."""
    best, cell = entry["best"], mean_std(entry["best"], latex)
    if len(_best_metrics(stats)) > 1 and best["metric"] and best.get("mean") is not None:
        metric = printable(best["metric"])
        cell += f" ({_latex(metric) if latex else metric})"
    return cell


def _stat_keys(stats: list[dict[str, Any]]) -> list[str]:
    return _union([k for k in entry if k.startswith("val/")] for entry in stats)


def format_groups(stats: list[dict[str, Any]], fmt: str) -> str:
    """:func:`group_stats` as ``csv`` (every number: ``<stat>.mean``, ``.std``, ``.ci95_lo``,
    ``.ci95_hi``, ``.n``) or as a paper table, ``markdown`` or ``latex`` (group, run notes, n,
    and ``mean ± std`` of the best value and of each final validation metric)."""
    keys = _stat_keys(stats)
    if fmt == "csv":
        header = ["group", "n", "runs", "run_notes", "best.metric"]
        for key in ["best", *keys]:
            header += [f"{key}.mean", f"{key}.std", f"{key}.ci95_lo", f"{key}.ci95_hi", f"{key}.n"]
        rows = []
        for entry in stats:
            row = [entry["group"], entry["n"], ";".join(entry["runs"]), entry["run_notes"], entry["best"]["metric"]]
            for key in ["best", *keys]:
                stat = entry.get(key) or {}
                lo, hi = stat.get("ci95") or (None, None)
                row += [stat.get("mean"), stat.get("std"), lo, hi, stat.get("n", 0)]
            rows.append(row)
        return render(header, rows, fmt)
    latex = fmt == "latex"
    titles = [_best_title(stats), *keys]
    header = ["group", "notes", "n", *titles]
    rows = [
        [
            entry["group"],
            entry["run_notes"],
            str(entry["n"]),
            _best_cell(entry, stats, latex),
            *(mean_std(entry.get(k) or {}, latex) for k in keys),
        ]
        for entry in stats
    ]
    return render(header, rows, fmt, raw={printable(title) for title in titles})


def groups_table(stats: list[dict[str, Any]]) -> Table:
    """:func:`group_stats` as a ``rich`` table: group, notes, n, the best value's ``mean ± std``
    with its 95% interval, and each final validation metric's ``mean ± std``."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    keys = _stat_keys(stats)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for title in ["group", "notes", "n", _best_title(stats), *keys]:  # Text: a "[" in a name is no markup
        table.add_column(Text(printable(title)), justify="right" if title == "n" else "left", overflow="fold")
    for entry in stats:
        ci = entry["best"]["ci95"]
        best_cell = _best_cell(entry, stats) + (f"\n95% CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")
        cells = [printable(entry["group"]), printable(entry["run_notes"]), str(entry["n"]), best_cell]
        table.add_row(*map(Text, cells + [mean_std(entry.get(k) or {}) for k in keys]))
    return table


def runs_output(rows: list[dict[str, Any]], fmt: str, group: bool, where: Path) -> str | Table:
    """What ``dlscaffold runs`` prints for ``--group`` or the csv, markdown and latex formats: text,
    or a ``rich`` table for ``--group`` in the table format.

    Raises:
        UserError: when there are no runs.
    """
    if not rows:
        raise UserError(
            f"runs: no run folders in '{where}'; give a logging_dir that holds runs, or a sweep folder, "
            "e.g. dlscaffold runs path/to/runs --group"
        )
    if not group:
        return format_runs(rows, fmt)
    stats = group_stats(rows)
    if fmt == "json":
        return to_json(stats)
    return groups_table(stats) if fmt == "table" else format_groups(stats, fmt)


def escaping(echo: Callable[..., None]) -> Callable[..., None]:
    """``echo`` that escapes the control characters of what it prints (:func:`printable`; the lines
    of a table stay lines), so that no text of a run folder reaches the terminal as it is."""

    def say(text: Any = "", err: bool = False) -> None:
        echo(printable(text, keep="\n"), err=err)

    return say


@contextlib.contextmanager
def escaped_errors() -> Iterator[None]:
    """A :class:`UserError` raised inside (which may quote a metric name of a run) with its control
    characters escaped."""
    try:
        yield
    except UserError as exc:
        raise UserError(*(printable(problem) for problem in exc.problems)) from None


@escaped_errors()
def show_runs(
    logging_dir: Path,
    as_json: bool,
    sort: str,
    columns: str | None,
    group: bool,
    fmt: str | None,
    lineage: Path | None,
    echo: Callable[..., None],
) -> None:
    """``dlscaffold runs``: the runs of ``logging_dir`` as ``--format`` / ``--json`` / ``--group`` /
    ``--columns`` ask (``--lineage``: one run's tree instead), then a note per stale run; ``echo``
    is called as ``echo(line)`` or ``echo(line, err=True)``, its text escaped (:func:`escaping`).

    Raises:
        UserError: options that ask for two things at once, or an unknown format, column or sort key.
    """
    from dlscaffold.run.summary import program

    echo = escaping(echo)
    if lineage is not None:
        show_lineage(lineage, bool(as_json or group or fmt is not None or columns is not None or sort != "run"), echo)
        return
    chosen = parse_columns(columns) if columns is not None else None
    form = check_format(fmt or ("json" if as_json else "table"))
    if as_json and form != "json":
        raise UserError(f"runs: --json and --format {form} ask for two formats; give one of them")
    if chosen is not None and (group or form != "table"):
        raise UserError("runs: --columns chooses the run table's columns; leave it out with --group or --format")
    rows = sort_runs(list_runs(logging_dir, lambda line: echo(printable(f"warning: {line}"), err=True)), sort)
    if group or form in ("csv", "markdown", "latex"):
        output = runs_output(rows, form, group, logging_dir)
        echo(output) if isinstance(output, str) else print_table(output)
    elif form == "json":
        echo(to_json(rows))
    elif not rows:
        echo(f"No runs in {logging_dir}.")
    else:
        print_run_table(rows, chosen, echo)
    for row in rows:
        if row["status"] == STALE:
            echo(f"note: {stale_note(logging_dir, row, program('train'))}", err=True)


# ------------------------------------------------------------------------------------------ compare


@dataclass
class Run:
    """A run folder as :func:`compare` reads it."""

    path: Path
    row: dict[str, Any]  # its summarize_run row
    config: dict[str, Any]  # config.yml, flattened to dotted keys
    metrics: list[dict[str, Any]]  # the rows of metrics.jsonl

    @property
    def group(self) -> str:
        return group_id(self.row)


def read_run(run_dir: Path, warn: Warn) -> Run:
    """A run folder as :func:`compare` and :func:`load_runs` read it (its config read once)."""
    config = read_run_config(run_dir, warn, then="its run notes and config are left out")
    return Run(run_dir, summarize_run(run_dir, warn, config), flatten(config), read_metrics(run_dir, warn))


def expand(paths: list[Path]) -> list[Path]:
    """Run folders as given, a folder that is not one replaced by the run folders directly in it
    (a logging folder, a sweep folder), each run once.

    Raises:
        UserError: for a path that is no folder, or a folder with no runs.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if not is_folder(path):
            raise UserError(f"compare: '{path}' is not a folder; give run folders, or logging folders that hold them")
        inside = [path] if is_run_dir(path) else run_folders(path, "compare")
        if not inside:
            raise UserError(f"compare: no run folders in '{path}'; give run folders, or logging folders that hold them")
        found.update(dict.fromkeys(p.resolve() for p in inside))
    return list(found)


_ABSENT = object()  # a config key a group's config lacks


def _show(value: Any) -> str:
    """A config value as ``compare`` shows it (None as YAML's ``null``)."""
    if value is _ABSENT:
        return "(absent)"
    return "null" if value is None else _cell(value) if isinstance(value, (float, dict)) else str(value)


def differing_keys(groups: dict[str, list[Run]]) -> list[tuple[str, list[Any]]]:
    """The config keys (dotted) whose values differ between the groups' first runs, each with one
    value per group (``_ABSENT`` where a group's config lacks it), in config order; the keys of
    :data:`NOISE_KEYS` are left out."""
    firsts = [members[0].config for members in groups.values()]
    out = []
    for key in _union(firsts):
        if key in NOISE_KEYS:
            continue
        values = [config.get(key, _ABSENT) for config in firsts]
        if any(v != values[0] for v in values[1:]):
            out.append((key, values))
    return out


def _val_metrics(runs: list[Run]) -> list[str]:
    return _union(row["last_val"] for row in (run.row for run in runs))


def choose_metrics(runs: list[Run], asked: list[str]) -> list[tuple[str, str]]:
    """``(metric, kind)`` pairs to compare: ``kind`` is ``best`` (the monitor's best value that
    run.json records; the default, when every run monitors the same metric) or ``final`` (the
    metric's value in the last val row, for each ``--metric``).

    Raises:
        UserError: for a ``--metric`` no run has (with did-you-mean), or when the runs monitor
            different metrics and none is asked for.
    """
    if asked:
        names = _val_metrics(runs)
        for name in asked:
            if name not in names:
                raise UserError(
                    f"--metric: no run has the validation metric '{name}'; {did_you_mean(name, names)}"
                    f"{available(names)}"
                )
        return [(name, "final") for name in dict.fromkeys(asked)]
    monitors = _union(
        [[run.row["best"]["metric"]] for run in runs if run.row["best"] and run.row["best"].get("metric")]
    )
    if len(monitors) != 1:
        what = "none records a best value" if not monitors else f"they monitor {', '.join(monitors)}"
        raise UserError(
            f"compare: {what}; name the validation metric to compare with --metric <Model>/<name> "
            f"({available(_val_metrics(runs))})"
        )
    return [(monitors[0], "best")]


def _value(run: Run, metric: str, kind: str) -> Any:
    if kind == "best":
        best = run.row["best"] or {}
        return best.get("value") if best.get("metric") == metric else None
    return run.row["last_val"].get(metric)


def welch(values: list[Any], reference: list[Any], names: tuple[str, str]) -> tuple[float | None, str | None]:
    """Welch's t-test p-value (``scipy.stats.ttest_ind(..., equal_var=False)``) of two groups'
    finite values, or None and why not (``names``: the two groups', for that line)."""
    a, b = ([x for x in map(_finite, vs) if x is not None] for vs in (values, reference))
    if len(a) < 2 or len(b) < 2:
        few = [name for name, xs in zip(names, (a, b), strict=True) if len(xs) < 2]
        verb = "have" if len(few) > 1 else "has"
        return None, f"no p-value: {' and '.join(few)} {verb} fewer than two values (a group of one has no std)"
    from scipy import stats

    with _quiet_numbers():
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return (p, None) if math.isfinite(p) else (None, "no p-value: neither group's values vary")


@dataclass
class Comparison:
    """What :func:`compare` found: the groups, the config keys that differ, the metrics' statistics."""

    groups: dict[str, list[Run]]  # by group id, in the order given
    differences: list[tuple[str, list[Any]]]  # see differing_keys
    # per metric: {"metric", "kind", "groups": [{"group", **summary, "diff", "p_welch", "note"}, ...]}
    metrics: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """What ``compare --json`` prints: ``groups`` (``group``, ``n``, ``runs``: their paths,
        ``run_notes``), ``differences`` (``key``, ``values``: one per group, None where a group's
        config lacks the key) and ``metrics``."""
        groups = [
            {"group": g, "n": len(m), "runs": [str(r.path) for r in m], "run_notes": m[0].row["run_notes"]}
            for g, m in self.groups.items()
        ]
        differences = [{"key": k, "values": [None if v is _ABSENT else v for v in vs]} for k, vs in self.differences]
        return {"groups": groups, "differences": differences, "metrics": self.metrics}


def compare(paths: list[Path], metrics: list[str] | None, warn: Warn) -> Comparison:
    """Compare the groups of the runs at ``paths`` (see :func:`expand`). Per metric
    (:func:`choose_metrics`) and group: :func:`summary` of its runs' values, ``diff`` (its mean minus
    the first group's), ``p_welch`` (:func:`welch` against the first group; None for the first)
    and ``note`` (why there is no p-value)."""
    runs = [read_run(path, warn) for path in expand(paths)]
    groups = _grouped(runs, lambda run: run.group)
    chosen = choose_metrics(runs, list(metrics or []))
    result = Comparison(groups, differing_keys(groups), [])
    first_label, first = next(iter(groups.items()))
    for metric, kind in chosen:
        reference = [_value(run, metric, kind) for run in first]
        base = summary(reference)["mean"]
        entries = []
        for index, (label, members) in enumerate(groups.items()):
            values = [_value(run, metric, kind) for run in members]
            stat = summary(values)
            p, note = (None, None) if index == 0 else welch(values, reference, (label, first_label))
            diff = None if index == 0 or stat["mean"] is None or base is None else stat["mean"] - base
            entries.append({"group": label, **stat, "diff": diff, "p_welch": p, "note": note})
        result.metrics.append({"metric": metric, "kind": kind, "groups": entries})
    return result


def compare_json(result: Comparison) -> str:
    return to_json(result.as_dict())


def compare_output(result: Comparison) -> list[str | Table]:
    """What ``compare`` prints: lines and ``rich`` tables (the groups, the differing config keys,
    each metric's ``mean ± std``, difference and p-value per group)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def table(*titles: str) -> Table:
        out = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
        for title in titles:  # Text: a "[" in a group's name is no markup
            right = title in ("n", "diff", "p (Welch)")
            out.add_column(Text(printable(title)), justify="right" if right else "left", overflow="fold")
        return out

    def cells(*values: str) -> list[Text]:
        return [Text(printable(value)) for value in values]

    groups = result.as_dict()["groups"]
    out: list[str | Table] = [f"{len(groups)} group(s), {sum(g['n'] for g in groups)} runs:"]
    listing = table("group", "n", "notes", "runs")
    for g in groups:
        names = "\n".join(printable(Path(r).name) for r in g["runs"])
        listing.add_row(*cells(g["group"], str(g["n"]), g["run_notes"]), Text(names))
    out.append(listing)
    if len(groups) > 1:
        if result.differences:
            out.append(
                f"Config keys that differ between the groups (of each group's first run; not {', '.join(NOISE_KEYS)}):"
            )
            keys = table("key", *(g["group"] for g in groups))
            for key, values in result.differences:
                keys.add_row(*cells(key, *map(_show, values)))
            out.append(keys)
        else:
            out.append(f"No config key differs between the groups (not counting {', '.join(NOISE_KEYS)}).")
    for item in result.metrics:
        what = (
            "the monitor's best value of each run"
            if item["kind"] == "best"
            else "the last validation value of each run"
        )
        against = f", against {groups[0]['group']}" if len(groups) > 1 else ""
        out.append(f"{item['kind']} {item['metric']} ({what}){against}:")
        rows = table("group", "n", "mean ± std", "diff", "p (Welch)")
        for entry in item["groups"]:
            diff = "-" if entry["diff"] is None else f"{entry['diff']:+.4g}"
            p = "-" if entry["p_welch"] is None else f"{entry['p_welch']:.3g}"
            rows.add_row(*cells(entry["group"], str(entry["n"]), mean_std(entry), diff, p))
        out.append(rows)
        notes = sorted({f"{e['group']}: {e['note']}" for e in item["groups"] if e["note"]})
        out += [f"note: {note}" for note in notes]
    return out


def check_plot_path(path: Path) -> None:
    """Refuse a ``--plot`` file that is not ``.png`` or whose folder does not exist (before any work)."""
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot: '{path}' is not a .png file name; give one such as curves.png")
    if not path.parent.is_dir():
        raise UserError(f"--plot: the folder '{path.parent}' does not exist; create it or choose another path")


def show_comparison(
    paths: list[Path], metrics: list[str] | None, plot_path: Path | None, as_json: bool, echo: Callable[..., None]
) -> None:
    """``dlscaffold compare``: the comparison as tables (or JSON) through ``echo`` (called as
    ``echo(line)`` or ``echo(line, err=True)``), warnings on standard error; with ``plot_path``,
    the curves drawn there too."""
    echo = escaping(echo)
    with escaped_errors():
        if plot_path is not None:
            check_plot_path(plot_path)
        result = compare(list(paths), metrics, lambda line: echo(printable(f"warning: {line}"), err=True))
    if as_json:
        echo(compare_json(result))
    else:
        for part in compare_output(result):
            echo(part) if isinstance(part, str) else print_table(part)
    if plot_path is not None:
        plot(result, plot_path)
        echo(f"Wrote {plot_path}", err=as_json)


def _curve(runs: list[Run], metric: str) -> tuple[list[float], list[float], list[float | None]]:
    """Epochs, mean and std (None where fewer than two runs have the epoch) of a metric's val values."""
    import numpy as np

    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        for row in run.metrics:
            value = _finite(row.get(metric))
            if row.get("split") == "val" and value is not None and _finite(row.get("epoch")) is not None:
                by_epoch.setdefault(float(row["epoch"]), []).append(value)
    epochs = sorted(by_epoch)
    means = [float(np.mean(by_epoch[e])) for e in epochs]
    stds = [float(np.std(by_epoch[e], ddof=1)) if len(by_epoch[e]) > 1 else None for e in epochs]
    return epochs, means, stds


def _label(group: str, index: int, n: int, differences: list[tuple[str, list[Any]]]) -> str:
    """A legend entry: the group, up to three of its differing config values, its number of runs."""
    shown = [f"{key.rpartition('.')[2]}={_show(values[index])}" for key, values in differences[:3]]
    return _plot_text(f"{group} ({', '.join([*shown, f'n={n}'])})")


def _plot_text(text: str) -> str:
    """Text for matplotlib: control characters escaped, ``$`` shown as itself (not math)."""
    return printable(text).replace("$", r"\$")


def plot(result: Comparison, path: Path) -> None:
    """Draw each compared metric's validation curve per epoch into the PNG ``path``: one line per
    group (the mean over its runs) with a ± std band where at least two runs have the epoch, one
    panel per metric; matplotlib's Agg backend, no display needed."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metrics = [item["metric"] for item in result.metrics]
    figure = Figure(figsize=(7, 4 * len(metrics)), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, metric in zip(np.atleast_1d(figure.subplots(len(metrics), 1)), metrics, strict=True):
        for index, (label, members) in enumerate(result.groups.items()):
            epochs, means, stds = _curve(members, metric)
            line = axes.plot(
                epochs,
                means,
                marker="o",
                markersize=3,
                label=_label(label, index, len(members), result.differences),
            )
            band = [(e, m - s, m + s) for e, m, s in zip(epochs, means, stds, strict=True) if s is not None]
            if band:
                xs, lo, hi = zip(*band, strict=True)
                axes.fill_between(xs, lo, hi, color=line[0].get_color(), alpha=0.2, linewidth=0)
        name = _plot_text(metric)
        axes.set(xlabel="epoch", ylabel=f"val {name}", title=f"{name}: mean ± std over each group's runs")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize="small")
    try:
        figure.savefig(path, format="png", dpi=120)
    except OSError as exc:
        raise UserError(f"--plot: cannot write '{path}' ({exc.strerror or exc}); choose a writable path") from None


# ----------------------------------------------------------------------------------------- load_runs


def find_run_dirs(folder: Path, depth: int = SWEEP_DEPTH) -> list[Path]:
    """The run folders in ``folder`` (itself, when it is one), looking ``depth`` folders deep and
    never inside a run folder: a logging folder's runs, then its sweeps' trial runs
    (``sweeps/<sweep>/<run>``)."""
    if is_run_dir(folder):
        return [folder]
    try:
        if depth == 0 or not folder.is_dir():
            return []
        children = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: natural(p.name))
    except OSError:  # a folder this user may not read holds no run it can load
        return []
    return [run for child in children for run in find_run_dirs(child, depth - 1)]


def run_record(run: Run) -> dict[str, Any]:
    """One :func:`load_runs` row."""
    row, info = run.row, run.row.get("group") or {}
    best = row["best"] or {}
    seed = info.get("seed", run.config.get("training_params.seed"))
    record = {
        "run": valid_text(str(run.path)),
        "status": row["status"],
        "group": info.get("id"),
        "seed": seed,
        "trial": row.get("trial"),
        "best_metric": best.get("metric"),
        "best_epoch": best.get("epoch"),
        "best_value": best.get("value"),
        "epochs": row["epochs"],
        "seconds": row["seconds"],
    }
    record.update({f"val/{name}": value for name, value in row["last_val"].items()})
    record.update({f"config.{key}": value for key, value in run.config.items()})
    return record


def load_runs(folder: str | Path) -> pandas.DataFrame:
    """One row per run under ``folder`` (see :func:`find_run_dirs`). Columns: ``run`` (the folder's
    path), ``status``, ``group`` (run.json's group id, else None), ``seed`` (the group's, else the
    config's ``training_params.seed``), ``trial`` (a sweep's trial number, else None),
    ``best_metric``, ``best_epoch``, ``best_value`` (the monitor's best, from run.json), ``epochs``,
    ``seconds``, the last validation value of each metric (``val/<Model>/<name>``, NaN where a run
    has none) and every config key (``config.<dotted.key>``). A file that cannot be read gives a
    warning and the run is kept with what is known.

    Raises:
        UserError: when ``folder`` holds no run folder.
    """
    import warnings

    import pandas

    folder = Path(folder)
    dirs = find_run_dirs(folder)
    if not dirs:
        raise UserError(
            f"load_runs: no run folders in '{folder}'; give a logging_dir that holds runs (or a sweep folder)"
        )

    def warn(line: str) -> None:
        warnings.warn(printable(line), stacklevel=3)

    records = [run_record(read_run(path, warn)) for path in dirs]
    frame = pandas.DataFrame(records)
    for column in ("seed", "trial", "best_epoch", "epochs"):  # whole numbers, a missing one <NA> (not floats)
        values = [record[column] for record in records]
        if all(v is None or (isinstance(v, int) and not isinstance(v, bool) and abs(v) <= INT64_MAX) for v in values):
            frame[column] = pandas.array(values, dtype="Int64")
    return frame
