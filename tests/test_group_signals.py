"""Stops sent to a whole process group (Ctrl-C at a terminal, a scheduler cancelling a job): a
data-parallel ``train --nproc 2`` saves its position once and exits with the stop's code, without a
traceback, and resumes exactly; DataLoader workers stay quiet; a stop delivered twice is one stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD_S, copy_project, only_run, run_cli, signalling_config, threads_left_at_exit

from dlscaffold.data import WORKER_STOP_SIGNALS, make_loader, quiet_worker
from dlscaffold.records.rundir import read_metrics
from dlscaffold.run.stops import STOP_SIGNALS

# Appended to the toy project's models.py after conftest's SignalAt: on rank 0 at global step ``at``,
# it signals nothing itself but writes the file $SIGNAL_ME, waits for the test to signal the process
# group and write $SIGNAL_ME.sent, then gives the signal a second to arrive, so the stop comes mid-epoch
# at a known step (12 steps an epoch).
MARK_AT = """

class MarkAt(SignalAt):
    def forward(self, features, step):
        import os
        import time
        from pathlib import Path

        fire = int(step) == self.at and os.environ.get("RANK", "0") == "0"
        if fire and not os.environ.get("RESUMED") and not _FIRED:
            _FIRED.append(step)
            marker = Path(os.environ["SIGNAL_ME"])
            marker.touch()
            while not marker.with_suffix(".sent").exists():
                time.sleep(0.02)
            time.sleep(1.0)
        return {"features": features}


_with_signal_at = get_ref_model_dict


def get_ref_model_dict():
    return {**_with_signal_at(), "SignalAt": MarkAt}
"""
AT = 5  # the global step during which the group is signalled: the stop saves after 6 batches
EPOCHS = 3


def marked_project(folder: Path, **changes: object) -> Path:
    """The toy project with MarkAt at step ``AT`` (batch 8 per process), and its config ``signal.yml``."""
    project = copy_project("toyproject", folder / "toy")
    signalling_config(project, AT, dataloading_params__batch_size=8, **changes)
    with open(project / "models.py", "a") as fh:
        fh.write(MARK_AT)
    return project


def signal_the_group_at_the_mark(project: Path, marker: Path, signum: int, *args: str) -> tuple[int, str, str]:
    """Run ``dlscaffold train signal.yml ARGS`` in a new session; once the run reaches the mark, send
    ``signum`` to its whole process group (``os.killpg``, as a terminal's Ctrl-C or a scheduler does)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dlscaffold", "train", "signal.yml", *args],
        cwd=project,
        env={**os.environ, "SIGNAL_ME": str(marker)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + HANG_GUARD_S
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), process.communicate(timeout=HANG_GUARD_S)
    os.killpg(process.pid, signum)
    marker.with_suffix(".sent").touch()
    out, err = process.communicate(timeout=HANG_GUARD_S)
    return process.returncode, out, err


def tensors(value: object) -> list[torch.Tensor]:
    """Every tensor in a checkpoint's nested dicts and lists, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [t for item in items for t in tensors(item)]


# ------------------------------------------------------------------ data-parallel: train --nproc 2


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    return marked_project(tmp_path_factory.mktemp("group"))


@pytest.fixture(scope="module")
def straight(ddp: Path, tmp_path_factory) -> Path:
    """An uninterrupted ``--nproc 2`` run (the mark does nothing with RESUMED set)."""
    logs = tmp_path_factory.mktemp("straight")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlscaffold",
            "train",
            "signal.yml",
            "--nproc",
            "2",
            f"logging_params.logging_dir={logs}",
        ],
        cwd=ddp,
        env={**os.environ, "RESUMED": "1"},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    return only_run(logs)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_to_the_process_group_of_nproc_2_saves_once_and_resumes_exactly(
    ddp: Path, straight: Path, tmp_path: Path, signum: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    code, out, err = signal_the_group_at_the_mark(
        ddp, tmp_path / "signal_me", signum, "--nproc", "2", f"logging_params.logging_dir={logs}"
    )
    assert code == 128 + signum, err
    assert "Traceback" not in err and "SignalException" not in err, err
    assert err.count(f"{signum.name}: finishing the current step") == 1, err  # rank 0 alone says it, once
    assert "second signal" not in err and "death signal" not in err and "closing signal" not in err, err
    assert out.count("Stopped (interrupted by") == 1 and "--resume" in out, out
    run = only_run(logs)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    (saved,) = (run / "checkpoints").glob("trainer_*.pt")  # the position, saved once, mid-epoch 1
    assert saved.name == "trainer_000000_000006.pt"

    monkeypatch.setenv("RESUMED", "1")
    threads = tmp_path / "threads"
    threads.mkdir()
    monkeypatch.setenv("THREADS_AT_EXIT", str(threads))
    resumed = run_cli("train", "--resume", str(run), "--nproc", "2", "--project", str(ddp), cwd=ddp)
    assert resumed.returncode == 0, resumed.stderr
    if sys.platform.startswith("linux"):  # no process keeps the process group's threads past its run
        left = threads_left_at_exit(threads)
        assert list(left) == ["rank0", "rank1"] and not any("gloo" in n for names in left.values() for n in names)
    assert read_metrics(run) == read_metrics(straight)
    files = sorted(p.name for p in (straight / "checkpoints").glob("*.pt"))
    assert files == sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert f"trainer_{EPOCHS:06d}.pt" in files
    compared = 0
    for name in files:  # every tensor of every checkpoint: weights, optimizers, RNG states
        ours = tensors(torch.load(run / "checkpoints" / name, weights_only=True))
        theirs = tensors(torch.load(straight / "checkpoints" / name, weights_only=True))
        assert len(ours) == len(theirs), name
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), name
        compared += len(ours)
    assert compared > 50


# ------------------------------------------------------------------ DataLoader workers


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; a scheduler cancelling the job
def test_one_stop_to_the_group_with_two_loader_workers_prints_one_message_and_stops_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    project = marked_project(tmp_path, dataloading_params__num_workers=2)
    logs = tmp_path / "logs"
    code, out, err = signal_the_group_at_the_mark(
        project, tmp_path / "signal_me", signum, f"logging_params.logging_dir={logs}"
    )
    assert code == 128 + signum, err
    assert err.count(f"{signum.name}: finishing the current step") == 1, err  # the main process alone
    assert "Traceback" not in err and "second signal" not in err and "error:" not in err, err
    run = only_run(logs)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert [p.name for p in (run / "checkpoints").glob("trainer_*.pt")] == ["trainer_000000_000006.pt"]


# A loader's parent process: starts a worker, prints its pid, waits for the test to signal it, then
# reads a batch and ends the worker the way a loader does (Process.terminate: SIGTERM from its parent).
LOADER_PARENT = """
import sys, time
import torch
from dlscaffold.data import make_loader

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, index):
        time.sleep(0.01)
        return {"x": float(index)}

batches = iter(make_loader(Slow(), range(1000), 2, False, 0, num_workers=1, pin_memory=False))
next(batches)
(worker,) = batches._workers
print(worker.pid, flush=True)
sys.stdin.readline()
next(batches)
print(worker.is_alive(), flush=True)
worker.terminate()
worker.join(60)
print(worker.exitcode, flush=True)
"""


def test_loader_workers_leave_stops_to_the_main_process_but_end_on_their_parents_sigterm() -> None:
    assert set(WORKER_STOP_SIGNALS) == set(STOP_SIGNALS)
    loader = make_loader(list(range(4)), range(4), 2, True, 0, num_workers=2, pin_memory=False)
    assert loader.worker_init_fn is quiet_worker
    parent = subprocess.Popen(
        [sys.executable, "-c", LOADER_PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        worker = int(parent.stdout.readline())
        for signum in WORKER_STOP_SIGNALS:  # from another process than its parent: a whole group's stop
            os.kill(worker, signum)
        time.sleep(0.5)
        out, _ = parent.communicate("go\n", timeout=HANG_GUARD_S)
        assert out.split() == ["True", "0"], out  # served a batch after them; its parent's SIGTERM ended it
    finally:
        parent.kill()
        parent.wait()


# ------------------------------------------------------------------ the stop flag


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a stop flag may end it), with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        timeout=HANG_GUARD_S,
    )


FLAG = """
    import os, signal, time
    from dlscaffold.run import stops

    def send(signum):
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs
"""


def test_the_same_signal_twice_at_once_is_one_stop() -> None:
    """A scheduler signals every process of a job and torchrun passes its own on: two in a moment."""
    result = run_python(
        FLAG
        + """
    with stops.StopFlag() as flag:
        send(signal.SIGTERM)
        send(signal.SIGTERM)
        print(flag.signum == signal.SIGTERM)
    """
    )
    assert result.returncode == 0 and result.stdout.split() == ["True"], result.stderr
    assert result.stderr.count("SIGTERM: finishing the current step") == 1 and "second" not in result.stderr


def test_the_same_signal_again_later_still_exits_at_once() -> None:
    result = run_python(
        FLAG
        + """
    stops.REPEAT_WINDOW_S = 0.2
    with stops.StopFlag() as flag:
        send(signal.SIGINT)
        time.sleep(0.3)
        send(signal.SIGINT)
        print("still running")
    """
    )
    assert result.returncode == 130 and "still running" not in result.stdout, result.stdout
    assert "second signal: exiting now, without saving" in result.stderr


def test_other_ranks_and_forked_processes_stop_without_a_word_and_a_saved_run_ignores_signals() -> None:
    result = run_python(
        FLAG
        + """
    with stops.StopFlag() as flag:
        pid = os.fork()
        if pid == 0:  # a forked DataLoader worker, before it ignores signals: neither says nor stops
            send(signal.SIGTERM)
            os._exit(0 if flag.signum is None else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert flag.signum is None
        send(signal.SIGUSR1)  # rank 1: stops, without a word
        flag.ending = True  # the position is saved: the run is ending
        time.sleep(stops.REPEAT_WINDOW_S + 0.1)
        send(signal.SIGUSR1)
        send(signal.SIGUSR2)
        print(flag.signum == signal.SIGUSR1)
    """,
        RANK="1",
    )
    assert result.returncode == 0 and result.stdout.split() == ["True"], result.stderr
    assert result.stderr == ""


# ------------------------------------------------------------------ the launcher


def test_a_launcher_whose_wait_was_cut_short_passes_the_signal_on_and_waits() -> None:
    """Where torchrun's own handler ends its wait (a second signal), the launcher sends the signal on
    to the processes left and waits for them; it returns the stop's code, no traceback."""
    result = run_python(
        """
    import os, signal, subprocess, sys, time
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from dlscaffold.run import launch as launcher

    child = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(7)); time.sleep(60)"
    started = []

    def run(options):  # torchrun: starts a process, then its handler raises on a signal
        started.append(subprocess.Popen([sys.executable, "-c", child]))
        time.sleep(1.0)
        raise SignalException("cut short", sigval=signal.SIGINT)

    torch.distributed.run.run = run
    before = [signal.getsignal(s) for s in (*launcher.STOP_SIGNALS, signal.SIGQUIT)]
    code = launcher.launch(2, ["train"])
    print(code, started[0].poll() is not None)
    print(before == [signal.getsignal(s) for s in (*launcher.STOP_SIGNALS, signal.SIGQUIT)])  # put back
    """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["130", "True", "True"], result.stdout + result.stderr


def test_a_stop_signal_to_the_launcher_stops_torchruns_agent_with_its_exit_code() -> None:
    result = run_python(
        """
    import os, signal, time
    import torch.distributed.run
    from dlscaffold.run import launch as launcher

    def run(options):  # torchrun's agent, monitoring its processes
        assert "SIGQUIT" in options.signals_to_handle and "SIGTERM" not in options.signals_to_handle
        assert options.shutdown_timeout == launcher.STOP_WAIT_S  # torchrun waits for the processes to save
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("not stopped")

    torch.distributed.run.run = run
    before = [signal.getsignal(s) for s in (*launcher.STOP_SIGNALS, signal.SIGQUIT)]
    print(launcher.launch(2, ["train"]))
    print(before == [signal.getsignal(s) for s in (*launcher.STOP_SIGNALS, signal.SIGQUIT)])  # put back
    """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["143", "True"], result.stdout + result.stderr
