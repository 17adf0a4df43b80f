"""``dlscaffold runs``: run folders summarised from their files, sorted, as a table or strict JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli
from rich.console import Console

from dlscaffold.errors import UserError
from dlscaffold.experiments.results import show_runs
from dlscaffold.experiments.runs import (
    STALE,
    choose_columns,
    default_columns,
    format_table,
    parse_columns,
    sort_runs,
)
from dlscaffold.records.rundir import RunLock
from dlscaffold.records.summaries import list_runs, run_seconds, to_json


def make_run(
    logs: Path, name: str, info: dict[str, Any] | str | None, rows: list[dict[str, Any]], notes: str | None = None
) -> Path:
    """A hand-made run folder; ``info`` is run.json (a str is written as is, None leaves it out)."""
    run = logs / name
    (run / "checkpoints").mkdir(parents=True)
    config = {"logging_params": {"logging_dir": str(logs)}}
    if notes is not None:
        config["logging_params"]["run_notes"] = notes
    (run / "config.yml").write_text(yaml.safe_dump(config))
    (run / "idx_dict.json").write_text(json.dumps({"train": [0, 1], "val": [2], "dev": [0]}))
    if info is not None:
        (run / "run.json").write_text(info if isinstance(info, str) else json.dumps(info))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def rows_for(epochs: int, acc: list[float]) -> list[dict[str, Any]]:
    out = []
    for epoch in range(1, epochs + 1):
        out.append({"epoch": epoch, "split": "train", "step": 10 * epoch, "Classifier/loss": 1.0 / epoch})
        if epoch <= len(acc):
            out.append(
                {
                    "epoch": epoch,
                    "split": "val",
                    "step": 10 * epoch,
                    "Classifier/acc": acc[epoch - 1],
                    "Classifier/loss": 2.0 / epoch,
                }
            )
    return out


def info(status: str, best: dict[str, Any] | None, started: str, ended: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "project_dir": "..",
        "dlscaffold_version": "0.1.0",
        "status": status,
        "best": best,
        "started": started,
        "ended": ended,
        "provenance": {},
        **extra,
    }


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    logs = tmp_path / "runs"
    make_run(
        logs,
        "20261127_1_baseline",
        info(
            "completed",
            {"epoch": 3, "metric": "Classifier/acc", "value": 0.9},
            "2026-11-27T09:00:00+00:00",
            "2026-11-27T09:10:00+00:00",
        ),
        rows_for(3, [0.5, 0.9, 0.8]),
        notes="baseline",
    )
    make_run(
        logs,
        "20261127_2",
        info(
            "failed",
            None,
            "2026-11-27T10:00:00+00:00",
            "2026-11-27T10:00:30+00:00",
            error="RuntimeError: CUDA out of memory",
        ),
        rows_for(1, []),
    )
    make_run(
        logs,
        "20261127_10_wide",
        info(
            "interrupted",
            {"epoch": 1, "metric": "Classifier/acc", "value": 0.95},
            "2026-11-27T11:00:00+00:00",
            "2026-11-27T11:02:00+00:00",
        ),
        rows_for(2, [0.95]) + [{"epoch": 3, "split": "val", "step": 30, "Classifier/acc": float("nan")}],
        notes="wide [net]",
    )
    make_run(logs, "20261128_1", '{"status": "completed", ', rows_for(2, [0.7, 0.75]))  # broken run.json
    (logs / "not_a_run").mkdir()
    (logs / "not_a_run" / "config.yml").write_text("a: 1\n")
    (logs / "stray.txt").write_text("x")
    return logs


def listed(logs: Path) -> tuple[list[dict[str, Any]], list[str]]:
    warnings: list[str] = []
    return list_runs(logs, warnings.append), warnings


def test_list_runs(logs: Path) -> None:
    rows, warnings = listed(logs)
    assert [r["run"] for r in rows] == ["20261127_1_baseline", "20261127_2", "20261127_10_wide", "20261128_1"]
    assert all(list(r) == ["run", "status", "epochs", "best", "last_val", "seconds", "run_notes"] for r in rows)
    done, failed, stopped, broken = rows
    assert done == {
        "run": "20261127_1_baseline",
        "status": "completed",
        "epochs": 3,
        "best": {"epoch": 3, "metric": "Classifier/acc", "value": 0.9},
        "last_val": {"Classifier/acc": 0.8, "Classifier/loss": 2.0 / 3},
        "seconds": 600.0,
        "run_notes": "baseline",
    }
    assert (failed["status"], failed["epochs"], failed["last_val"], failed["seconds"]) == ("failed", 1, {}, 30.0)
    assert failed["best"] is None and failed["run_notes"] == ""
    assert stopped["status"] == "interrupted" and stopped["epochs"] == 2 and stopped["seconds"] == 120.0
    assert broken["status"] == "unknown" and broken["best"] is None and broken["seconds"] is None
    assert broken["epochs"] == 2 and broken["last_val"]["Classifier/acc"] == 0.75
    assert len(warnings) == 1 and "20261128_1" in warnings[0] and "run.json" in warnings[0]


def test_old_and_running_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "20250101_1", {"project_dir": "..", "dlscaffold_version": "0.0.1"}, [])
    running = info("running", None, "2025-01-01T09:00:00+00:00", None)
    going = make_run(tmp_path, "20250101_2", running, rows_for(1, [0.1]))
    make_run(tmp_path, "20250101_3", None, [])
    lock = RunLock(going).acquire()  # as the training process holds it
    try:
        rows, warnings = listed(tmp_path)
    finally:
        lock.release()
    assert [(r["status"], r["seconds"], r["epochs"]) for r in rows] == [
        ("unknown", None, 0),
        ("running", None, 1),
        ("unknown", None, 0),
    ]
    assert warnings == []


def test_a_running_run_whose_lock_is_free_is_stale(tmp_path: Path) -> None:
    """Killed (kill -9, a crashed machine): run.json still says running, but no process holds the lock."""
    killed = make_run(tmp_path, "20250101_1", info("running", None, "2025-01-01T09:00:00+00:00", None), [])
    never_locked = make_run(tmp_path, "20250101_2", info("running", None, "2025-01-01T09:00:00+00:00", None), [])
    RunLock(killed).acquire().release()  # the lock file of a process that is gone
    rows, _ = listed(tmp_path)
    assert [r["status"] for r in rows] == [STALE, STALE]
    assert (killed / ".lock").is_file() and not (never_locked / ".lock").exists()  # looking created nothing
    lock = RunLock(killed).acquire()  # a resume can take it over; while it holds it, it is running again
    try:
        assert [r["status"] for r in listed(tmp_path)[0]] == ["running", STALE]
    finally:
        lock.release()


def test_runs_cli_says_how_to_resume_a_stale_run(tmp_path: Path) -> None:
    killed = make_run(tmp_path, "20250101_1", info("running", None, "2025-01-01T09:00:00+00:00", None), [])
    result = run_cli("runs", str(tmp_path), "--columns", "status,run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["status", "run"] and STALE in result.stdout
    assert "no process holds its lock" in result.stderr and f"train --resume {killed}" in result.stderr
    assert json.loads(run_cli("runs", str(tmp_path), "--json", cwd=tmp_path).stdout)[0]["status"] == STALE


def test_seconds_are_the_training_time_of_every_session() -> None:
    resumed = info("completed", None, "2026-01-01T09:00:00+00:00", "2026-01-03T09:00:00+00:00", train_seconds=95.5)
    assert run_seconds(resumed) == 95.5  # not the two days between the first start and the last end
    assert run_seconds(info("completed", None, "2026-01-01T09:00:00+00:00", "2026-01-01T09:01:00+00:00")) == 60.0
    assert run_seconds(info("running", None, "2026-01-01T09:00:00+00:00", None, train_seconds=12.0)) == 12.0
    assert run_seconds(info("running", None, "2026-01-01T09:00:00+00:00", None)) is None


def test_broken_metrics_gives_one_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path, "20250101_1", info("running", None, "2025-01-01T09:00:00+00:00", None), rows_for(2, [0.3]))
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "split": "tr\n[1, 2]\n')
    rows, warnings = listed(tmp_path)
    assert rows[0]["epochs"] == 2 and rows[0]["last_val"]["Classifier/acc"] == 0.3
    assert len(warnings) == 1 and "metrics.jsonl" in warnings[0]


def test_missing_logging_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        list_runs(tmp_path / "nope", print)
    assert len(err.value.problems) == 1 and "nope" in err.value.problems[0]


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["run"] for r in rows]


def test_sort(logs: Path) -> None:
    rows, _ = listed(logs)
    assert names(sort_runs(rows)) == names(rows)
    assert names(sort_runs(rows, "-run"))[0] == "20261128_1"
    assert names(sort_runs(rows, "epochs")) == ["20261127_1_baseline", "20261127_10_wide", "20261128_1", "20261127_2"]
    assert names(sort_runs(rows, "seconds")) == ["20261127_1_baseline", "20261127_10_wide", "20261127_2", "20261128_1"]
    assert names(sort_runs(rows, "best")) == ["20261127_10_wide", "20261127_1_baseline", "20261127_2", "20261128_1"]
    # NaN and missing values last, whichever the direction
    assert names(sort_runs(rows, "val:Classifier/acc")) == [
        "20261127_1_baseline",
        "20261128_1",
        "20261127_2",
        "20261127_10_wide",
    ]
    assert names(sort_runs(rows, "-val:Classifier/acc")) == [
        "20261128_1",
        "20261127_1_baseline",
        "20261127_2",
        "20261127_10_wide",
    ]
    assert names(sort_runs(rows, "status"))[:2] == ["20261127_1_baseline", "20261127_2"]


def test_sort_unknown_key(logs: Path) -> None:
    rows, _ = listed(logs)
    with pytest.raises(UserError) as err:
        sort_runs(rows, "epoch")
    assert len(err.value.problems) == 1
    assert "did you mean 'epochs'" in err.value.problems[0] and "seconds" in err.value.problems[0]
    with pytest.raises(UserError, match="Classifier/acc"):
        sort_runs(rows, "val:Classifier/ac")


def test_json_is_strict(logs: Path) -> None:
    rows, _ = listed(logs)
    text = to_json(rows)
    assert "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data[2]["last_val"] == {"Classifier/acc": None}
    assert data[0]["best"]["value"] == 0.9


def test_table(logs: Path) -> None:
    rows, _ = listed(logs)
    console = Console(width=250, record=True, color_system=None)
    console.print(format_table(rows))
    text = console.export_text()
    for cell in (
        "run",
        "last val",
        "notes",
        "20261127_10_wide",
        "completed",
        "interrupted",
        "unknown",
        "3: Classifier/acc=0.9",
        "Classifier/loss=0.6667",
        "wide [net]",
        "10m00s",
    ):
        assert cell in text, cell


def _render(rows: list[dict[str, Any]], width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    columns, short = choose_columns(rows, width)
    console.print(format_table(rows, columns, short))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_table_fits_the_terminal(logs: Path, width: int) -> None:
    rows, _ = listed(logs)
    rows[0]["last_val"] = {f"LongModelName/metric_{i}": 0.5 + i for i in range(6)}  # a wide run
    lines = _render(rows, width)
    assert all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    for name in ("20261127_1_baseline", "20261127_2", "20261127_10_wide", "20261128_1"):
        assert name in text, name  # run names are never cut
    assert "interrupted" in text and "failed" in text and "metric_5=5.5" in text


def test_a_narrow_terminal_leaves_out_columns_in_order(logs: Path) -> None:
    rows, _ = listed(logs)
    every = default_columns(rows)
    assert every == ["run", "status", "epochs", "best", "last", "seconds", "notes"]
    wide, wide_short = choose_columns(rows, 250)
    assert wide == every and not wide_short
    narrow, narrow_short = choose_columns(rows, 80)
    assert narrow_short and narrow[:2] == ["run", "status"] and "best" in narrow and "last" in narrow
    dropped = {c for c in every if c not in narrow}  # notes first, then seconds, then epochs
    assert "notes" in dropped and dropped <= {"notes", "seconds", "epochs"}
    assert ("seconds" not in dropped or "notes" in dropped) and ("epochs" not in dropped or "seconds" in dropped)
    assert "Classifier/" not in "\n".join(_render(rows, 80))  # metric names without their model prefix


def test_columns_option() -> None:
    assert parse_columns("run,status,best,last") == ["run", "status", "best", "last"]
    assert parse_columns("last_val, run_notes,time,run,run") == ["last", "notes", "seconds", "run"]
    with pytest.raises(UserError) as err:
        parse_columns("run,stauts")
    assert len(err.value.problems) == 1 and "did you mean 'status'" in err.value.problems[0]


class Echo:
    """Collects what a command prints: ``out`` and ``err`` lines (``echo(line, err=True)``)."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    def __call__(self, line: str, err: bool = False) -> None:
        (self.err if err else self.out).append(line)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"as_json": True, "fmt": "csv"}, "--json and --format csv ask for two formats"),
        ({"columns": "run", "group": True}, "--columns chooses the run table's columns"),
        ({"columns": "run", "fmt": "json"}, "--columns chooses the run table's columns"),
        ({"lineage": Path("some_run"), "sort": "-best"}, "--lineage prints one run's tree"),
    ],
)
def test_runs_options_that_ask_for_two_things_are_refused(logs: Path, options: dict, message: str) -> None:
    chosen = {"as_json": False, "sort": "run", "columns": None, "group": False, "fmt": None, "lineage": None}
    echo = Echo()
    with pytest.raises(UserError, match=message):
        show_runs(logs, **{**chosen, **options}, echo=echo)
    assert not echo.out and not echo.err  # refused before anything is read or printed


def test_runs_json_goes_to_stdout_and_warnings_to_stderr(logs: Path) -> None:
    echo = Echo()
    show_runs(logs, True, "run", None, False, None, None, echo)
    (text,) = echo.out
    assert [row["run"] for row in json.loads(text)][0] == "20261127_1_baseline"
    assert echo.err and all(line.startswith("warning: ") for line in echo.err)  # the broken run.json


def two_projects(logs: Path, second_metric: str) -> None:
    """A folder holding the runs of two projects: digits (monitors accuracy) and another one."""
    for number, (metric, value) in enumerate((("Classifier/accuracy", 0.93), (second_metric, 0.012)), 1):
        best = {"epoch": 2, "metric": metric, "value": value}
        started, ended = "2026-11-27T09:00:00+00:00", "2026-11-27T09:10:00+00:00"
        make_run(logs, f"20261127_{number}", info("completed", best, started, ended), rows_for(2, [0.5, 0.9]))


def grouped(logs: Path, fmt: str | None, capsys: pytest.CaptureFixture) -> str:
    echo = Echo()
    capsys.readouterr()
    show_runs(logs, False, "run", None, True, fmt, None, echo)
    return "\n".join(echo.out) + capsys.readouterr().out  # text through echo, the rich table to stdout


def test_runs_group_names_the_metric_of_each_best_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    two_projects(tmp_path / "mixed", "Decoder/mse")
    markdown = grouped(tmp_path / "mixed", "markdown", capsys).splitlines()
    assert markdown[0].startswith("| group | notes | n | best |")  # no one metric named above both values
    assert "| 0.93 (Classifier/accuracy) |" in markdown[2] and "| 0.012 (Decoder/mse) |" in markdown[3]
    latex = grouped(tmp_path / "mixed", "latex", capsys)
    assert r"$0.93$ (Classifier/accuracy)" in latex and r"$0.012$ (Decoder/mse)" in latex
    table = grouped(tmp_path / "mixed", None, capsys)
    assert "0.93 (Classifier/accuracy)" in table and "0.012 (Decoder/mse)" in table
    rows = list(csv.DictReader(io.StringIO(grouped(tmp_path / "mixed", "csv", capsys))))
    assert [(row["best.metric"], row["best.mean"]) for row in rows] == [
        ("Classifier/accuracy", "0.93"),
        ("Decoder/mse", "0.012"),
    ]
    two_projects(tmp_path / "same", "Classifier/accuracy")  # one metric: named once, in the title
    markdown = grouped(tmp_path / "same", "markdown", capsys).splitlines()
    assert "| best Classifier/accuracy |" in markdown[0] and "(Classifier/accuracy)" not in "\n".join(markdown[1:])


def test_an_error_quoting_a_runs_metric_name_is_escaped(tmp_path: Path) -> None:
    rows = rows_for(1, [0.5]) + [{"epoch": 2, "split": "val", "step": 2, "Classifier/\x1b]0;x\x07acc": 1.0}]
    make_run(tmp_path, "20261127_1", info("completed", None, "2026-11-27T09:00:00+00:00", None), rows)
    result = run_cli("runs", str(tmp_path), "--sort", "val:Classifier/acd", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --sort: no run has the val metric")
    assert "\x1b" not in result.stderr and "\\x1b]0;x\\x07" in result.stderr
