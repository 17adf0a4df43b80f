"""What a run prints: epoch lines that fit 120 columns, plain progress lines in a log, the CPU note
once per run, resume commands that work where they are read, totals over every session, and
``evaluate --json -`` writing JSON alone on stdout."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import copy_project, run_cli, run_dirs

from dlscaffold.parts.device import CPU_FALLBACK
from dlscaffold.records.rundir import read_run_info
from dlscaffold.run.progress import Progress
from dlscaffold.run.summary import ARGV0_ENV, WIDTH, epoch_lines, pack, program, resume_command

# ------------------------------------------------------------------------------- epoch lines

TRAIN = {
    "Classifier/ce": 0.9607,
    "Decoder/reconstruction": 4.014,
    "Classifier/accuracy": 0.4,
    "Classifier/Top2Accuracy": 0.8,
    "total_loss": 2.968,
}
VAL = {k: v / 2 for k, v in TRAIN.items()}


def test_a_short_epoch_is_one_line() -> None:
    assert epoch_lines(3, 10, {"Classifier/ce": 0.5}, {"Classifier/ce": 0.25}, 1.23) == [
        "epoch 3/10  train: Classifier/ce 0.5  | val: Classifier/ce 0.25  (1.2s)"
    ]


def test_a_wide_epoch_wraps_to_one_line_per_model() -> None:
    lines = epoch_lines(3, 10, TRAIN, VAL, 1.23)
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[0] == "epoch 3/10  (1.2s)"
    assert lines[1].split()[:3] == ["Classifier", "train:", "ce"] and "| val: ce 0.4803" in lines[1]
    assert lines[2].split() == "Decoder train: reconstruction 4.014 | val: reconstruction 2.007".split()
    assert lines[3].split() == "total_loss train: 2.968 | val: 1.484".split()


def test_many_metrics_wrap_under_their_model_without_splitting_a_value() -> None:
    many = {f"VeryLongModelName/metric_number_{i}": 0.123456 * i for i in range(12)}
    lines = epoch_lines(10, 100, many, many, 12.3)
    assert all(len(line) <= WIDTH for line in lines)
    text = " ".join(lines)
    for i in range(12):
        assert f"metric_number_{i} {0.123456 * i:.4g}" in text  # every value, each whole on one line
    val_line = next(i for i, line in enumerate(lines) if "val:" in line)
    assert lines[val_line].index("val:") == lines[1].index("train:")  # val under train
    assert pack("Final val: ", ["a 1", "b 2"]) == ["Final val: a 1  b 2"]


# ------------------------------------------------------------------------- plain progress lines


class Clock:
    """A clock that moves 5 seconds each time it is read: once at a pass's start, once per batch."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 5.0
        return self.now


def test_without_a_terminal_a_plain_line_every_n_seconds() -> None:
    lines: list[str] = []
    progress = Progress(False, every=30, echo=lines.append, clock=Clock())
    for i in progress.track(iter(range(20)), "train", total=20, epoch=(2, 5), step=100):
        if i == 3:
            progress.show(loss=0.4321, parts={"ce": 0.3, "reconstruction": 0.2642})
    assert len(lines) == 3  # 30 seconds after the start, then 30 after each line: batches 6, 12, 18
    assert lines[0] == (
        "train  epoch 2/5  batch 6/20 (30%)  step 106  loss 0.4321 (ce 0.3, reconstruction 0.264)  "
        "0.2 steps/s  0:00:30 elapsed, 0:01:10 left"
    )
    assert lines[-1].startswith("train  epoch 2/5  batch 18/20 (90%)  step 118  loss 0.4321")
    assert not any("\r" in line or "\x1b" in line for line in lines)


def test_a_resumed_pass_counts_on_and_zero_means_no_lines() -> None:
    lines: list[str] = []
    progress = Progress(False, every=25, echo=lines.append, clock=Clock())
    assert list(progress.track([1, 2, 3, 4, 5], "train", total=8, step=40, done=3)) == [1, 2, 3, 4, 5]
    assert lines[0].startswith("train  batch 8/8 (100%)  step 45")
    quiet: list[str] = []
    assert list(Progress(False, every=0, echo=quiet.append, clock=Clock()).track(range(50), "val")) == list(range(50))
    assert quiet == []


def _bar_lines(width: int) -> list[str]:
    """The bar's last frame on a terminal ``width`` columns wide, as lines."""
    import io
    import re

    from rich.console import Console

    out = io.StringIO()
    progress = Progress(True, console=Console(file=out, force_terminal=True, width=width))
    for i in progress.track(range(50), "train", total=50, epoch=(3, 10), step=1000):
        if i == 10:
            progress.show(loss=2.4712, parts={"ce": 0.9612, "reconstruction": 3.0123})
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).split("\r")
    return [line for line in frames[-2].splitlines() if line.strip()]


def test_the_bar_shows_the_running_loss_and_never_wraps() -> None:
    wide = _bar_lines(160)
    assert len(wide) == 1 and "loss 2.471 (ce 0.961, reconstruction 3.01)" in wide[0] and "batch 50/50" in wide[0]
    narrow = _bar_lines(80)
    assert len(narrow) == 1 and len(narrow[0]) <= 80  # one line, the bar shrunk
    assert "train  epoch 3/10" in narrow[0] and "step 1050" in narrow[0] and "(ce" not in narrow[0]


# ------------------------------------------------------------------------------ resume commands


def test_resume_command_follows_how_the_run_was_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "20260101_1"
    monkeypatch.delenv(ARGV0_ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # neither python nor dlscaffold on PATH
    python = sys.executable
    main = str(Path(__file__).parents[1] / "dlscaffold" / "__main__.py")
    assert program("train", main) == f"{python} -m dlscaffold train"
    project = tmp_path / "project"
    project.mkdir()
    for script in ("train.py", "evaluate.py"):
        (project / script).write_text("")
    monkeypatch.chdir(tmp_path)
    assert program("train", "project/train.py") == f"{python} project/train.py"
    assert program("evaluate", "project/train.py") == f"{python} project/evaluate.py"
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "dlscaffold").write_text("")
    assert program("train", "venv/bin/dlscaffold") == "venv/bin/dlscaffold train"  # not the one on PATH
    monkeypatch.setenv("PATH", str(venv))
    (venv / "dlscaffold").chmod(0o755)
    assert program("train", str(venv / "dlscaffold")) == "dlscaffold train"  # the one on PATH
    monkeypatch.setattr(sys, "argv", [main, "train"])
    assert resume_command(run) == f"{python} -m dlscaffold train --resume {run}"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resume_command(run, world_size=2).endswith(f"--resume {run} --nproc 2")  # as many processes again
    monkeypatch.setenv(ARGV0_ENV, "project/train.py")  # what `python train.py --nproc 2` gives its processes
    assert resume_command(run, world_size=2) == f"{python} project/train.py --resume {run} --nproc 2"


# ------------------------------------------------------------------ a run, resumed, evaluated


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A toy run of 2 epochs started as a job would be (stdout a file), use_GPU set."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("console") / "toy")
    result = run_cli(
        "train", "config.yml", "training_params.max_training_epochs=2", "training_params.use_GPU=true", cwd=toy
    )
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    return toy, run, result


def test_a_job_log_is_plain_lines_of_at_most_120_columns(trained) -> None:
    toy, run, result = trained
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    epoch_part = result.stdout[result.stdout.index("epoch 1/2") : result.stdout.index("Best val")]
    assert epoch_part.count("epoch 2/2") == 1 and "Decoder" in epoch_part and "total_loss" in epoch_part
    assert all(len(line) <= WIDTH for line in epoch_part.splitlines())  # 3 models, 5 values: wrapped
    assert "Done: 2 epochs in" in result.stdout
    if not torch.cuda.is_available():
        assert result.stderr.count(CPU_FALLBACK) == 1  # a new run on a machine without CUDA says so


def test_a_resumed_run_counts_every_epoch_and_session(trained) -> None:
    toy, run, _ = trained
    copy = run.with_name(run.name + "_copy")
    shutil.copytree(run, copy)
    before = read_run_info(copy)["train_seconds"]
    assert before > 0
    result = run_cli("train", "--resume", str(copy), "training_params.max_training_epochs=3", cwd=toy)
    assert result.returncode == 0, result.stderr
    assert "Done: 3 epochs in" in result.stdout and "(resumed at epoch 3; this session: epoch 3," in result.stdout
    assert read_run_info(copy)["train_seconds"] > before  # the sessions' times summed
    assert CPU_FALLBACK not in result.stderr  # said once per run, when it started
    assert f"-m dlscaffold evaluate {copy}" in result.stdout  # the summary's command, as this run was started


def test_evaluate_json_to_stdout_alone(trained) -> None:
    toy, run, _ = trained
    result = run_cli("evaluate", str(run), "--epoch", "best", "--json", "-", cwd=toy)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # nothing else on stdout
    best = read_run_info(run)["best"]["epoch"]
    assert data["epoch"] == best and data["requested_epoch"] == "best"
    assert data["split"] == "val" and data["num_samples"] == 60 and "Classifier/ce" in data["metrics"]
    assert f"epoch {best} (best), split 'val', 60 samples" in result.stderr and "Classifier/ce" in result.stderr
    to_file = run_cli("evaluate", str(run), "--epoch", "2", "--json", "out.json", cwd=toy)
    assert to_file.returncode == 0, to_file.stderr
    written = json.loads((toy / "out.json").read_text())
    assert (written["epoch"], written["requested_epoch"]) == (2, 2) and "Wrote out.json" in to_file.stdout

    from dlscaffold.api import load_run

    loaded = load_run(run, epoch="last")
    evaluated = loaded.evaluate()
    assert (evaluated["epoch"], evaluated["requested_epoch"]) == (2, "last")
    assert evaluated["metrics"] == pytest.approx(written["metrics"], rel=1e-6, abs=1e-6)
