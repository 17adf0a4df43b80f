"""Run config-fuzz cases in this one process, under a memory limit (used by test_config_fuzz.py).

    python fuzz_worker.py CASES.json RESULTS.jsonl FIRST

runs the cases of CASES.json from index FIRST on, each in a fresh copy of tests/toyproject, through
``dlscaffold.cli.main`` in-process with its output captured, and appends one JSON line per case to
RESULTS.jsonl as soon as it is done (so a case that kills the process is known: the one after the
last line). The address-space limit is set before torch is imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

MEMORY_LIMIT = 6 * 2**30  # bytes of address space; torch imports in about 3.5 GiB of it
CASE_SECONDS = 120  # a case running longer than this is a failure (a hang)
RUN_DIR = re.compile(r"^\d{8}_\d+")  # <YYYYMMDD>_<N>[_<run_notes>]
TOY = Path(__file__).resolve().parent / "toyproject"
CASE_TOKEN = "@CASE@"  # stands for the case's folder in config text, files and overrides


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time (the case's capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _CaseTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _CaseTimeout(f"case ran longer than {CASE_SECONDS}s")


def _write_case(case: dict[str, Any], folder: Path) -> None:
    """The case's config (text or raw bytes), extra files and folders, inside its project copy."""
    shutil.copytree(TOY, folder, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    config = folder / "case.yml"
    if case.get("config_is_folder"):
        config.mkdir()
    elif case.get("config_hex") is not None:
        config.write_bytes(bytes.fromhex(case["config_hex"]))
    else:
        config.write_text(case["config"].replace(CASE_TOKEN, str(folder)), encoding="utf-8")
    for name, text in (case.get("files") or {}).items():
        (folder / name).write_text(text.replace(CASE_TOKEN, str(folder)), encoding="utf-8")
    for name in case.get("dirs") or []:
        (folder / name).mkdir(parents=True, exist_ok=True)


def _folders(root: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, names, _ in os.walk(root) for name in names}


def run_case(main: Any, case: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one case through the CLI; its exit code, output and the run folders it created."""
    _write_case(case, folder)
    before = _folders(folder)
    overrides = [o.replace(CASE_TOKEN, str(folder)) for o in case.get("overrides", [])]
    argv = [
        "train",
        "case.yml",
        *(["--dev"] if case.get("dev", True) else []),
        "training_params.max_training_epochs=1",
        *overrides,
    ]
    out, err = io.StringIO(), io.StringIO()
    code, crash = None, None
    started = time.perf_counter()
    os.chdir(folder)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException:  # anything but a clean exit code is a failure, recorded with its traceback
        crash = traceback.format_exc()
    finally:
        signal.alarm(0)
        os.chdir(folder.parent)
    created = sorted(str(p.relative_to(folder)) for p in _folders(folder) - before if RUN_DIR.match(p.name))
    return {
        "name": case["name"],
        "code": code,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "crash": crash,
        "run_dirs": created,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main() -> None:
    cases_path, results_path, first = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=_CurrentStderr())
    signal.signal(signal.SIGALRM, _on_alarm)
    from dlscaffold.cli import main as cli_main  # after the limit: torch is imported under it

    cases = json.loads(cases_path.read_text())
    work = Path(tempfile.mkdtemp(prefix="dlscaffold_fuzz_"))
    path_before = list(sys.path)
    try:
        with open(results_path, "a", encoding="utf-8") as results:
            for index in range(first, len(cases)):
                folder = work / f"case{index:04d}"
                result = run_case(cli_main, cases[index], folder)
                result["index"] = index
                result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
                results.write(json.dumps(result) + "\n")
                results.flush()
                sys.path[:] = path_before  # load_project put the case's folder first
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
