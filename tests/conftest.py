"""Shared fixtures: copies of the tiny test projects, and ways to run the real CLI."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
# How long a subprocess may take before a test calls it hung. A guard, not a time limit: no test
# depends on how fast or busy the machine is, so it is far above any run's duration.
HANG_GUARD_S = 3600


def run_benchmark(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> --quick ARGS`` in ``cwd``, a benchmark's smoke run; asserts it exits 0."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / script), "--quick", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def copy_project(name: str, dest: Path) -> Path:
    shutil.copytree(HERE / name, dest, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    return dest


@pytest.fixture(scope="module")
def git_identity(tmp_path_factory):
    """A git identity and config of the tests' own, isolated from the machine's (CI has neither):
    for the tests whose ``dlscaffold new`` / ``update`` commit a project."""
    gitconfig = tmp_path_factory.mktemp("gitconfig") / "config"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    with pytest.MonkeyPatch.context() as mp:
        for who in ("AUTHOR", "COMMITTER"):
            mp.setenv(f"GIT_{who}_NAME", "Test User")
            mp.setenv(f"GIT_{who}_EMAIL", "test@example.com")
        mp.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        yield


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A fresh copy of tests/toyproject (encoder -> classifier + decoder on generated blobs)."""
    return copy_project("toyproject", tmp_path / "toy")


def write_config(project: Path, name: str = "config.yml", **changes: object) -> Path:
    """Copy the project's config.yml to ``name`` with dotted-key changes applied."""
    raw = yaml.safe_load((project / "config.yml").read_text())
    for key, value in changes.items():
        node = raw
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = project / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_cli(
    *args: str, cwd: Path, timeout: float = HANG_GUARD_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m dlscaffold ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "dlscaffold", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
    )


def run_dirs_in(logs: Path) -> list[Path]:
    """The run folders in ``logs`` (a run's ``logging_dir``), sorted by name; none when it does not exist."""
    return sorted(p for p in logs.iterdir() if p.is_dir()) if logs.is_dir() else []


def run_dirs(project: Path) -> list[Path]:
    return run_dirs_in(project / "runs")


def only_run(logs: Path) -> Path:
    """The one run folder in ``logs``."""
    (run,) = run_dirs_in(logs)
    return run


SIGNALLING_MODELS = '''

class SignalAt(nn.Module):
    """Passes its input through; sends this process ``signum`` (SIGTERM) during global step ``at``."""

    def __init__(self, at: int, signum: int = 15):
        super().__init__()
        self.at, self.signum = at, signum

    def forward(self, features, step):
        import os

        if int(step) == self.at and not os.environ.get("RESUMED") and not _FIRED:
            _FIRED.append(step)  # once: validation after the step sees the same clock
            os.kill(os.getpid(), self.signum)
        return {"features": features}


_FIRED = []


_plain_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_plain_models(), "SignalAt": SignalAt}


def _threads_at_exit():
    import glob
    import os

    names = []
    for path in glob.glob("/proc/self/task/*/comm"):
        try:
            with open(path) as fh:
                names.append(fh.read().strip())
        except OSError:  # a thread that ended meanwhile
            pass
    with open(os.path.join(os.environ["THREADS_AT_EXIT"], "rank" + os.environ["RANK"]), "w") as fh:
        fh.write(" ".join(sorted(names)))


import atexit as _atexit  # noqa: E402
import os as _os  # noqa: E402

if _os.environ.get("THREADS_AT_EXIT") and "RANK" in _os.environ:  # a process torchrun started
    _atexit.register(_threads_at_exit)
'''


def threads_left_at_exit(folder: Path) -> dict[str, list[str]]:
    """What the processes torchrun started wrote to ``folder`` ($THREADS_AT_EXIT) as Python exited:
    the names of their threads, by rank (Linux; elsewhere nothing). SIGNALLING_MODELS writes them.
    A process group's threads (gloo's) that outlive the run can abort the process as it exits
    ("terminate called without an active exception"), about once in twenty runs."""
    return {file.name: file.read_text().split() for file in sorted(folder.glob("rank*"))}


def signalling_config(project: Path, at: int, signum: int = signal.SIGTERM, **changes: object) -> Path:
    """``signal.yml``: the toy project's config with a ``SignalAt`` model first (``signum`` during
    global step ``at``, unless ``RESUMED`` is set), feeding the Encoder; batch 16, 3 epochs."""
    with open(project / "models.py", "a") as fh:
        fh.write(SIGNALLING_MODELS)
    flow = yaml.safe_load((project / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "SignalAt"}
    flow = {
        "SignalAt": {
            "train": 0,
            "init_args": {"at": at, "signum": int(signum)},
            "inputs": {"features": "dataset", "step": "trainer"},
        },
        **flow,
    }
    changes = {"dataloading_params__batch_size": 16, "training_params__max_training_epochs": 3, **changes}
    return write_config(project, "signal.yml", info_flow=flow, **changes)
