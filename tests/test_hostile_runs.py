"""Run folders someone handed you are data, and may be hostile: ``runs`` (table, ``--group``,
``--json``, csv / markdown / latex, ``--lineage``), ``compare`` and ``load_runs`` read them without a
traceback, without a hang, without reading a byte outside the run folder, and without sending a
control character to the terminal.

Each case spoils two run folders the same way; every command then ends with exit 0 (warnings allowed)
or one ``error:`` line with exit 2, and its output holds neither the secret of a file outside the run
folders nor a raw control character.
"""

from __future__ import annotations

import json
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.errors import UserError
from dlscaffold.records.rundir import Refused, read_run_file
from dlscaffold.records.summaries import list_runs, printable

SECRET = "S3CRET-of-another-folder"
# Control characters of every kind: an OSC title sequence, a screen clear, CR, BS, NUL, DEL, a C1
# CSI, a right-to-left override and a line separator.
EVIL = "x\x1b]0;PWNED\x07\x1b[2J\r\x08\x00\x7f\x9b1m\u202e\u2028y"
EVIL_NAME = "20260101_9_x\x1b]0;PWNED\x07\x1b[2J\r\x08\x7f\nz"  # a folder name holds all but NUL and /
HANG_GUARD_S = 60  # a command that waits on a FIFO would wait forever: fail instead

Mutate = Callable[[Path, Path], Path | None]


def base_info(**changes: Any) -> dict[str, Any]:
    info = {
        "status": "completed",
        "best": {"epoch": 2, "metric": "Classifier/acc", "value": 0.9},
        "started": "2026-01-01T09:00:00+00:00",
        "ended": "2026-01-01T09:10:00+00:00",
        "train_seconds": 600.0,
        "models": {"Classifier": {"role": "trained", "class": "Net", "source": None}},
    }
    return {**info, **changes}


def make_run(logs: Path, name: str) -> Path:
    run = logs / name
    run.mkdir(parents=True)
    (run / "config.yml").write_text(yaml.safe_dump({"logging_params": {"run_notes": "plain", "logging_dir": "x"}}))
    (run / "idx_dict.json").write_text(json.dumps({"train": [0], "val": [1], "dev": [0]}))
    (run / "run.json").write_text(json.dumps(base_info()))
    rows = [
        {"epoch": 1, "split": "train", "step": 1, "Classifier/loss": 1.0},
        {"epoch": 1, "split": "val", "step": 1, "Classifier/acc": 0.8},
        {"epoch": 2, "split": "train", "step": 2, "Classifier/loss": 0.5},
        {"epoch": 2, "split": "val", "step": 2, "Classifier/acc": 0.9},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the runs whose files hold the secret (as JSON, JSON lines, YAML, text) and a FIFO."""
    folder = tmp_path / "outside"
    folder.mkdir()
    info = base_info(status=SECRET, best={"epoch": 1, "metric": SECRET, "value": 1.0}, group={"id": SECRET})
    (folder / "secret.json").write_text(json.dumps(info))
    (folder / "secret.jsonl").write_text(json.dumps({"epoch": 1, "split": "val", SECRET: 1.0}) + "\n")
    (folder / "secret.yml").write_text(f"logging_params:\n  run_notes: {SECRET}\n")
    (folder / "secret.txt").write_text(f"{SECRET} first line\n")
    os.mkfifo(folder / "fifo")
    return folder


# ------------------------------------------------------------------------------------ the cases


def link(name: str, target: Callable[[Path, Path], str]) -> Mutate:
    """The run's file ``name`` replaced by a symbolic link to ``target(run, outside)``."""

    def mutate(run: Path, outside: Path) -> None:
        (run / name).unlink(missing_ok=True)
        os.symlink(target(run, outside), run / name)

    return mutate


def fifo(name: str, **info: Any) -> Mutate:
    def mutate(run: Path, outside: Path) -> None:
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
        if info:
            (run / "run.json").write_text(json.dumps(base_info(**info)))

    return mutate


def sparse(name: str, size: int) -> Mutate:
    """A file of ``size`` bytes (sparse: made at once), over the size a run folder's file may have."""

    def mutate(run: Path, outside: Path) -> None:
        with open(run / name, "wb") as fh:
            fh.truncate(size)

    return mutate


def content(name: str, data: str | bytes) -> Mutate:
    def mutate(run: Path, outside: Path) -> None:
        (run / name).write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)

    return mutate


def info_json(text: str) -> Mutate:
    return content("run.json", text)


def info_with(**fields: Any) -> Mutate:
    return content("run.json", json.dumps(base_info(**fields)))


def metric_lines(*lines: str) -> Mutate:
    return content("metrics.jsonl", "".join(line + "\n" for line in lines))


def folder_instead(name: str) -> Mutate:
    def mutate(run: Path, outside: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return mutate


def unreadable(name: str) -> Mutate:
    def mutate(run: Path, outside: Path) -> None:
        (run / name).chmod(0)

    return mutate


def renamed(name: str | bytes) -> Mutate:
    """The run folder renamed (each of the two runs gets its own suffix, so both are listed)."""

    def mutate(run: Path, outside: Path) -> Path:
        suffix = run.name.rsplit("_", 1)[1]
        if isinstance(name, bytes):
            new = os.fsdecode(os.fsencode(run.parent) + b"/" + name + suffix.encode())
        else:
            new = str(run.parent / (name + suffix))
        os.rename(run, new)
        return Path(new)

    return mutate


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def evil_notes(run: Path, outside: Path) -> None:
    """``run_notes`` holding escape sequences, written as YAML escapes (the YAML reader refuses raw ones)."""
    (run / "config.yml").write_text('logging_params:\n  run_notes: "a\\e]0;PWNED\\a\\e[2J\\r\\b\\x7f\\x9b\\u202e"\n')


def chained_link(run: Path, outside: Path) -> None:
    """run.json -> a link inside the run -> the secret outside."""
    os.symlink(outside / "secret.json", run / "inner")
    (run / "run.json").unlink()
    os.symlink("inner", run / "run.json")


LINEAGE_EVIL = {"Classifier": {"role": "trained", "class": EVIL, "source": {"run": f"/nowhere/{EVIL}", "file": EVIL}}}
CASES: dict[str, Mutate] = {
    # symbolic links out of the run folder, to a file holding the secret
    "run.json links outside": link("run.json", lambda run, out: str(out / "secret.json")),
    "run.json links outside, relative": link("run.json", lambda run, out: "../../outside/secret.json"),
    "run.json links outside through a link inside": chained_link,
    "metrics.jsonl links outside": link("metrics.jsonl", lambda run, out: str(out / "secret.jsonl")),
    "config.yml links to outside YAML": link("config.yml", lambda run, out: str(out / "secret.yml")),
    "config.yml links to outside text": link("config.yml", lambda run, out: str(out / "secret.txt")),
    "idx_dict.json links outside": link("idx_dict.json", lambda run, out: str(out / "secret.txt")),
    "a running run's .lock links outside": lambda run, out: (
        info_with(status="running")(run, out),
        link(".lock", lambda r, o: str(o / "secret.txt"))(run, out),
    )[-1],
    "run.json links to a FIFO outside": link("run.json", lambda run, out: str(out / "fifo")),
    "run.json links to itself": link("run.json", lambda run, out: "run.json"),
    "run.json links to the run folder": link("run.json", lambda run, out: "."),
    "run.json is a dangling link": link("run.json", lambda run, out: "gone.json"),
    # devices that never end
    "run.json links to /dev/zero": link("run.json", lambda run, out: "/dev/zero"),
    "metrics.jsonl links to /dev/zero": link("metrics.jsonl", lambda run, out: "/dev/zero"),
    "config.yml links to /dev/zero": link("config.yml", lambda run, out: "/dev/zero"),
    "idx_dict.json links to /dev/zero": link("idx_dict.json", lambda run, out: "/dev/zero"),
    # FIFOs: opening one for reading waits for a writer
    "run.json is a FIFO": fifo("run.json"),
    "metrics.jsonl is a FIFO": fifo("metrics.jsonl"),
    "config.yml is a FIFO": fifo("config.yml"),
    "idx_dict.json is a FIFO": fifo("idx_dict.json"),
    "a running run's .lock is a FIFO": fifo(".lock", status="running"),
    # huge files
    "run.json of 17 MiB": sparse("run.json", 17 * 2**20),
    "metrics.jsonl of 300 MiB": sparse("metrics.jsonl", 300 * 2**20),
    "config.yml of 11 MiB": sparse("config.yml", 11 * 2**20),
    # run.json of every wrong type, at the top and in each field
    "run.json is a list": info_json("[1, 2]"),
    "run.json is a string": info_json('"completed"'),
    "run.json is a number": info_json("3"),
    "run.json is null": info_json("null"),
    "run.json is true": info_json("true"),
    "status is a number": info_with(status=5),
    "status is a list": info_with(status=["completed"]),
    "status is an object": info_with(status={"a": 1}),
    "best is a list": info_with(best=[1, 2]),
    "best is a string": info_with(best="0.9"),
    "best is a number": info_with(best=0.9),
    "best.metric is a list": info_with(best={"epoch": 1, "metric": ["a"], "value": 1.0}),
    "best.metric is a number": info_with(best={"epoch": 1, "metric": 5, "value": 1.0}),
    "best.value and epoch are strings": info_with(best={"epoch": "two", "metric": "m", "value": "high"}),
    "best.value is an object": info_with(best={"epoch": 1, "metric": "m", "value": {"x": 1}}),
    "best.value is NaN": info_json(json.dumps(base_info(best={"epoch": 1, "metric": "m", "value": float("nan")}))),
    "best.value is Infinity": info_json(json.dumps(base_info(best={"epoch": 1, "metric": "m", "value": float("inf")}))),
    "best.epoch is beyond int64": info_with(best={"epoch": 10**30, "metric": "m", "value": 1e308}),
    "group is a string": info_with(group="g"),
    "group is a list": info_with(group=[1]),
    "group.id is a number": info_with(group={"id": 7, "seed": 1, "size": 2}),
    "group.id is an object": info_with(group={"id": {"a": 1}}),
    "group.seed and size are wrong": info_with(group={"id": "g", "seed": "one", "size": [2]}),
    "group.seed is beyond int64": info_with(group={"id": "g", "seed": 10**30, "size": 2}),
    "sweep is a list": info_with(sweep=[]),
    "sweep is a string": info_with(sweep="s"),
    "sweep.params is a list": info_with(sweep={"trial": "x", "params": [1, 2]}),
    "sweep.params holds objects": info_with(sweep={"trial": 1, "params": {"lr": [1], "depth": {"a": 1}, "ok": 0.1}}),
    "started and ended are not strings": info_with(started=5, ended=["x"]),
    "started and ended are not dates": info_with(started="garbage", ended="9999-99-99"),
    "started and ended far apart": info_with(started="0001-01-01T00:00:00", ended="9999-12-31T23:59:59"),
    "ended before started": info_with(started="2026-01-02T00:00:00", ended="2026-01-01T00:00:00", train_seconds=None),
    "train_seconds is a string": info_with(train_seconds="12"),
    "train_seconds is Infinity": info_json(json.dumps(base_info(train_seconds=float("inf")))),
    "train_seconds is -Infinity": info_json(json.dumps(base_info(train_seconds=float("-inf")))),
    "train_seconds is NaN": info_json(json.dumps(base_info(train_seconds=float("nan")))),
    "train_seconds is negative": info_with(train_seconds=-5),
    "train_seconds is 1e308": info_with(train_seconds=1e308),
    "train_seconds is true": info_with(train_seconds=True),
    # JSON nested beyond what a parser can take, or deep inside a field
    "run.json nested 100000 deep": info_json(deep(100_000)),
    "best.value nested 500 deep": info_json(json.dumps(base_info()).replace('"value": 0.9', f'"value": {deep(500)}')),
    "a metrics row nested 100000 deep": metric_lines(deep(100_000), '{"epoch": 1, "split": "val", "m": 1.0}'),
    # text that is not UTF-8
    "run.json is not UTF-8": content("run.json", b'\xff\xfe{"status": "completed"}'),
    "metrics.jsonl is not UTF-8": content("metrics.jsonl", b'{"epoch": 1, "split": "val", "m\xff": 1.0}\n'),
    "config.yml is not UTF-8": content("config.yml", b"logging_params:\n  run_notes: \xff\xfe\n"),
    "run.json holds a lone surrogate": info_with(status="\ud800", best={"epoch": 1, "metric": "\udcff", "value": 1.0}),
    # metrics rows of the wrong types
    "metrics rows that are no objects": metric_lines("[1, 2]", '"s"', "3", "null", "true"),
    "metrics epochs of the wrong types": metric_lines(
        '{"epoch": "x", "split": "train"}',
        '{"epoch": Infinity, "split": "train"}',
        '{"epoch": 1e400, "split": "train"}',
        f'{{"epoch": {10**30}, "split": "train"}}',
        '{"epoch": 1, "split": 5}',
    ),
    "metrics values of the wrong types": metric_lines(
        '{"epoch": 1, "split": "val", "a": {"x": 1}, "b": [1], "c": "s", "d": true, "e": NaN, "f": 1e999, '
        f'"g": {10**30}}}'
    ),
    # control characters (and NUL) in every string field, and in folder names
    "status with escapes": info_with(status=EVIL),
    "best.metric with escapes": info_with(best={"epoch": 1, "metric": EVIL, "value": 0.5}),
    "group.id with escapes": info_with(group={"id": EVIL, "seed": 1, "size": 2}),
    "sweep params with escapes": info_with(sweep={"trial": 1, "params": {EVIL: EVIL, "lr": 0.1}}),
    "run_notes with escapes": evil_notes,
    "metric names with escapes": metric_lines(json.dumps({"epoch": 1, "split": "val", EVIL: 0.5})),
    "lineage with escapes": info_with(models=LINEAGE_EVIL),
    "rich markup in names": info_with(group={"id": "[/bold]x[bold]", "seed": 1}, best={"metric": "[/]", "value": 1.0}),
    "folder name with escapes": renamed(EVIL_NAME),
    "folder name not UTF-8": renamed(b"20260101_9_\xff\xfe\x9b_"),
    # lineage of the wrong types
    "models is a list": info_with(models=[1]),
    "a model's source names no run": info_with(models={"C": {"source": {"run": 5, "file": {"a": 1}}}}),
    "a model's source is itself": lambda run, out: info_with(models={"C": {"source": {"run": str(run), "epoch": [1]}}})(
        run, out
    ),
    "a model's source has a NUL": info_with(models={"C": {"source": {"run": "/a\x00b", "sha256": 5}}}),
    # empty files, folders in place of files
    "run.json is empty": content("run.json", b""),
    "metrics.jsonl is empty": content("metrics.jsonl", b""),
    "config.yml is empty": content("config.yml", b""),
    "run.json is a folder": folder_instead("run.json"),
    "metrics.jsonl is a folder": folder_instead("metrics.jsonl"),
    "config.yml is a folder": folder_instead("config.yml"),
    "idx_dict.json is a folder": folder_instead("idx_dict.json"),
    # files this user may not read (root reads them anyway: skipped there)
    "run.json unreadable": unreadable("run.json"),
    "metrics.jsonl unreadable": unreadable("metrics.jsonl"),
    "config.yml unreadable": unreadable("config.yml"),
}
UNREADABLE = {name for name in CASES if name.endswith("unreadable")}


# ------------------------------------------------------------------------------------- the checks


@pytest.fixture
def hang_guard() -> Iterator[None]:
    def hung(signum: int, frame: Any) -> None:
        raise TimeoutError(f"hung for {HANG_GUARD_S}s (waiting on a FIFO?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_output(what: str, text: str) -> None:
    """No secret, no traceback, no raw control character (bytes below 0x20 but newline and tab, DEL,
    C1 controls, lone surrogates)."""
    assert SECRET not in text, f"{what}: the secret of a file outside the run folder was printed:\n{text}"
    assert "Traceback" not in text, f"{what}:\n{text}"
    raw = [ch for ch in text if (ord(ch) < 0x20 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F]
    surrogates = [ch for ch in text if 0xD800 <= ord(ch) <= 0xDFFF]
    assert not raw and not surrogates, f"{what}: raw control characters {raw + surrogates!r} in:\n{text!r}"


def check_exit(what: str, code: int, stderr: str) -> None:
    """Exit 0, or exit 2 with exactly one ``error:`` line (warnings and notes besides it)."""
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert code in (0, 2), f"{what}: exit {code}\n{stderr}"
    assert len(errors) == (1 if code == 2 else 0), f"{what}: exit {code}\n{stderr}"
    assert all(line.startswith(("error: ", "warning: ", "note: ")) for line in lines), f"{what}:\n{stderr}"


def commands(logs: Path, first: Path, second: Path) -> list[list[str]]:
    return [
        ["runs", str(logs)],
        ["runs", str(logs), "--group"],
        ["runs", str(logs), "--json"],
        ["runs", str(logs), "--format", "markdown"],
        ["runs", str(logs), "--format", "csv"],
        ["runs", str(logs), "--format", "latex"],
        ["runs", str(logs), "--group", "--format", "latex"],
        ["runs", "--lineage", str(first)],
        ["compare", str(first), str(second)],
    ]


def spoiled(tmp_path: Path, outside: Path, mutate: Mutate) -> tuple[Path, Path, Path]:
    logs = tmp_path / "logs"
    runs = [make_run(logs, f"20260101_{i}_run_{i}") for i in (1, 2)]
    first, second = (mutate(run, outside) or run for run in runs)
    return logs, first, second


def check_load_runs(logs: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame = dlscaffold.load_runs(logs)
        except UserError as exc:
            assert len(exc.problems) == 1
            check_output("load_runs", exc.problems[0])
        else:  # data, as JSON is: its text as the run holds it, but nothing read outside the run folder
            assert SECRET not in frame.to_string() and not any(SECRET in str(c) for c in frame.columns)
    check_output("load_runs: its warnings", "\n".join(str(w.message) for w in caught))


def test_the_cases_are_many() -> None:
    assert len(CASES) >= 46


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_run_folders(
    case: str, tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture, hang_guard: None
) -> None:
    if case in UNREADABLE and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000 anyway: this case cannot fail here")
    logs, first, second = spoiled(tmp_path, outside, CASES[case])
    for args in commands(logs, first, second):
        capsys.readouterr()
        code = main(args)
        out = capsys.readouterr()
        what = f"{case}: dlscaffold {' '.join(args[:1] + args[2:])}"
        check_output(what, out.out + out.err)
        check_exit(what, code, out.err)
    check_load_runs(logs)


def test_every_hostile_run_in_one_folder_through_the_real_cli(tmp_path: Path, outside: Path) -> None:
    """All the cases side by side in one logging folder, through ``python -m dlscaffold`` (no
    FIFO cases: each is checked above; a real process could only be killed)."""
    logs = tmp_path / "logs"
    for number, (case, mutate) in enumerate(CASES.items(), 1):
        if "FIFO" not in case and case not in UNREADABLE:
            mutate(make_run(logs, f"20260102_{number}_case"), outside) or None
    for args in (["runs", "logs"], ["runs", "logs", "--group"], ["runs", "logs", "--format", "markdown"]):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        check_output(" ".join(args), result.stdout + result.stderr)
        check_exit(" ".join(args), result.returncode, result.stderr)
    result = run_cli("compare", "logs", cwd=tmp_path)
    check_output("compare", result.stdout + result.stderr)
    check_exit("compare", result.returncode, result.stderr)


# ------------------------------------------------------------------------------ the reading rules


def test_a_run_file_is_read_only_inside_the_run_folder_and_within_its_size(tmp_path: Path, outside: Path) -> None:
    run = make_run(tmp_path / "logs", "20260101_1")
    (run / "notes.json").write_text('{"status": "completed"}')
    os.symlink("notes.json", run / "inside.json")  # a link that stays inside is followed
    assert read_run_file(run, "inside.json", 100) == b'{"status": "completed"}'
    os.symlink(tmp_path / "logs" / "20260101_1", tmp_path / "linked")  # so is a run folder that is itself a link
    assert read_run_file(tmp_path / "linked", "notes.json", 100) == b'{"status": "completed"}'
    assert read_run_file(run, "missing.json", 100) is None
    os.symlink(outside / "secret.json", run / "out.json")
    os.symlink("../20260101_1/../../outside/secret.json", run / "round.json")
    for name in ("out.json", "round.json"):
        with pytest.raises(Refused, match="outside the run folder"):
            read_run_file(run, name, 10**6)
    os.mkfifo(run / "pipe")
    with pytest.raises(Refused, match="FIFO"):
        read_run_file(run, "pipe", 100)
    with pytest.raises(Refused, match="more than"):
        read_run_file(run, "notes.json", 10)  # 23 bytes over a limit of 10


def test_printable_escapes_control_characters_only() -> None:
    assert printable("plain [text] ±✓ 🧪") == "plain [text] ±✓ 🧪"
    assert printable("a\x1b[31mb\x07\x00\x7f\x9b") == "a\\x1b[31mb\\x07\\x00\\x7f\\x9b"
    assert printable("one\ntwo\tthree\r") == "one\\ntwo\\tthree\\r"
    assert printable("one\ntwo", keep="\n") == "one\ntwo"
    assert printable("\u202eevil\u2028") == "\\u202eevil\\u2028"
    assert printable(os.fsdecode(b"run_\xff")) == "run_\\xff"  # a folder name byte that is not UTF-8


def test_a_wrong_type_is_named_in_one_warning_and_shown_as_unknown(tmp_path: Path) -> None:
    run = make_run(tmp_path / "logs", "20260101_1")
    info = base_info(best={"epoch": "2", "metric": ["a"], "value": 0.5}, group={"id": 7}, train_seconds="9")
    (run / "run.json").write_text(json.dumps(info))
    warned: list[str] = []
    (row,) = list_runs(tmp_path / "logs", warned.append)
    assert row["best"] == {"epoch": None, "metric": None, "value": 0.5} and "group" not in row
    assert row["seconds"] == 600.0  # train_seconds unknown: ended - started
    (line,) = warned
    for part in ("best.epoch is a string", "best.metric is a list", "group.id is an integer", "train_seconds"):
        assert part in line, line


def test_a_file_this_user_may_not_open_is_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a file of mode 000 does for a user other than root, on any machine (root would read it)."""
    make_run(tmp_path / "logs", "20260101_1")
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any) -> int:
        if Path(path).name in ("run.json", "metrics.jsonl", "config.yml"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    warned: list[str] = []
    (row,) = list_runs(tmp_path / "logs", warned.append)
    assert (row["status"], row["epochs"], row["run_notes"]) == ("unknown", 0, "")
    assert len(warned) == 3 and all("cannot read it (Permission denied)" in line for line in warned)
