"""The guard rails a generated project ships: the determinism test (on :func:`dlscaffold.fingerprint`),
the pre-commit hooks (ruff) and the CI workflow.

The determinism test is run as a user runs it, ``python -m pytest`` in the generated project (a
subprocess, about 5 s each): its first run writes the pins, later runs pass, and an edit to the
data, a model's initialisation or the training step fails naming that, until accepted.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HANG_GUARD_S, copy_project

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.errors import UserError
from dlscaffold.tools.fingerprint import difference

pytestmark = [pytest.mark.template, pytest.mark.usefixtures("git_identity")]

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template"


def new_project(dest: Path) -> Path:
    """A project made by ``dlscaffold new --defaults`` (a git repository, its files committed)."""
    assert main(["new", str(dest), "--defaults"]) == 0
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory, git_identity) -> Path:
    """A new project that the tests only read (pre-commit finds nothing to change in it)."""
    return new_project(tmp_path_factory.mktemp("new") / "digits")


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``ARGS`` in ``cwd`` with this environment (``DLSCAFFOLD_REGEN`` only where given)."""
    environ = {k: v for k, v in os.environ.items() if k != "DLSCAFFOLD_REGEN"}
    return subprocess.run(
        args,
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )


def determinism_test(project: Path, *args: str, **env: str) -> tuple[str, str]:
    """Run the project's determinism test; ``(outcome, output)`` with outcome passed/failed/skipped."""
    done = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_determinism.py", *args],
        project,
        **env,
    )
    output = done.stdout + done.stderr
    outcome = re.search(r"\b1 (passed|failed|skipped)\b", output)
    assert outcome, f"no outcome in the project's pytest output:\n{output}"
    return outcome.group(1), output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# ------------------------------------------------------------------------------ the fingerprint

FINGERPRINT = "import dlscaffold, json; print(json.dumps(dlscaffold.fingerprint('config.yml')))"


def test_fingerprint_is_the_same_in_two_processes_and_in_this_one(tmp_path):
    toy = copy_project("toyproject", tmp_path / "toy")
    first, second = (run([sys.executable, "-c", FINGERPRINT], toy) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    pins = json.loads(first.stdout.splitlines()[-1])
    assert pins == json.loads(second.stdout.splitlines()[-1])
    assert pins["steps"] == 3 and list(pins["init"]) == list(pins["trained"]) == ["Encoder", "Classifier", "Decoder"]
    assert pins["init"] != pins["trained"]  # three steps change every trained model
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    here = dlscaffold.fingerprint(toy / "config.yml")
    assert here == pins  # the process's state does not enter it
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)  # left as found
    assert not (toy / "runs").exists()  # nothing written
    if platform.machine().lower() in ("x86_64", "amd64"):  # the child's kernels are AVX2 ones on every x86-64 CPU
        assert pins["environment"]["cpu"] == "AVX2"


def test_fingerprint_is_of_fp32_whatever_the_precision_and_says_config_problems_in_one_line(tmp_path):
    toy = copy_project("toyproject", tmp_path / "toy")
    pins = dlscaffold.fingerprint(toy / "config.yml", steps=1)
    assert dlscaffold.fingerprint(toy / "config.yml", steps=1, overrides=["training_params.precision=bf16"]) == pins
    with pytest.raises(UserError) as caught:
        dlscaffold.fingerprint(toy / "config.yml", steps=1, overrides=["training_params.max_training_epochs=many"])
    assert len(caught.value.problems) == 1 and "max_training_epochs" in caught.value.problems[0]


def test_fingerprint_changes_with_the_seed_and_the_steps(tmp_path):
    toy = copy_project("toyproject", tmp_path / "toy")
    pins = dlscaffold.fingerprint(toy / "config.yml", steps=1)
    reseeded = dlscaffold.fingerprint(toy / "config.yml", steps=1, overrides=["training_params.seed=7"])
    assert "the data (first training batch)" in difference(pins, reseeded)  # another split, another batch
    longer = dlscaffold.fingerprint(toy / "config.yml", steps=2)
    assert longer["data"] == pins["data"] and longer["init"] == pins["init"] and longer["trained"] != pins["trained"]
    slower = dlscaffold.fingerprint(toy / "config.yml", steps=1, overrides=["training_params.lrn_rate=0.001"])
    assert difference(pins, slower) == "the training step (weights of Encoder after 1 step) changed"


def fake(**changes: object) -> dict:
    pins = {
        "steps": 3,
        "data": "d",
        "init": {"Encoder": "e0", "Classifier": "c0"},
        "trained": {"Encoder": "e3", "Classifier": "c3"},
        "environment": {"torch": "2.10.0", "cpu": "AVX2"},
    }
    return {**pins, **changes}


def test_difference_names_the_first_change_in_training_order():
    pinned = fake()
    assert difference(pinned, fake()) is None
    assert difference(pinned, fake(environment={"torch": "2.11.0", "cpu": "AVX512"})) is None  # not compared
    everything = fake(data="x", init={"Encoder": "x", "Classifier": "x"}, trained={"Encoder": "x", "Classifier": "x"})
    message = difference(pinned, everything)
    assert message.startswith("the data (first training batch) changed") and "everything after it" in message
    init = difference(
        pinned, fake(init={"Encoder": "e0", "Classifier": "x"}, trained={"Encoder": "x", "Classifier": "x"})
    )
    assert init == "the initialisation of Classifier changed"
    step = difference(pinned, fake(trained={"Encoder": "e3", "Classifier": "x"}))
    assert step == "the training step (weights of Classifier after 3 steps) changed"
    assert "the models changed" in difference(pinned, fake(init={"Encoder": "e0"}))
    assert "the pins are of 3 steps" in difference(pinned, fake(steps=5))
    moved = difference(pinned, fake(data="x", environment={"torch": "2.11.0", "cpu": "AVX2"}))
    assert "torch 2.10.0 -> 2.11.0" in moved and "cpu" not in moved.partition("note")[2]


# --------------------------------------------------------------------- the generated project


def test_determinism_test_pins_names_what_changed_and_accepts(tmp_path):
    project = new_project(tmp_path / "digits")
    pins = project / "tests" / "determinism.json"
    outcome, output = determinism_test(project)
    assert outcome == "skipped" and "wrote tests/determinism.json" in output and pins.is_file()
    assert determinism_test(project)[0] == "passed"

    # an augmentation: every training batch mirrored
    augmentation = """
    def transform_batch(self, batch, train):
        if train:
            batch["image"] = batch["image"].flip(-1)
        return batch
"""
    (project / "dataloader.py").write_text((project / "dataloader.py").read_text() + augmentation)
    outcome, output = determinism_test(project)
    assert outcome == "failed" and "the data (first training batch)" in output
    assert "--regen-determinism" in output and "DLSCAFFOLD_REGEN=1" in output  # how to accept it
    assert determinism_test(project, "--regen-determinism")[0] == "skipped"  # accepted: the pins rewritten

    edit(
        project / "models.py",
        "        self.encoding_classifier = ",
        "        nn.init.zeros_(self.stem[0].weight)\n        self.encoding_classifier = ",
    )
    outcome, output = determinism_test(project)
    assert outcome == "failed" and "the initialisation of DigitClassifier" in output
    assert "the data" not in output  # the augmentation was accepted
    outcome, output = determinism_test(project, DLSCAFFOLD_REGEN="1")
    assert outcome == "skipped" and "wrote tests/determinism.json" in output  # accepted


def test_generated_files_are_ruff_clean(project):
    """What pre-commit checks, with this environment's ruff and the project's settings (no network)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    for args in (["check", "."], ["format", "--check", "."]):
        done = run([ruff, *args], project)
        assert done.returncode == 0, f"ruff {' '.join(args)} in a new project:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory) -> Path:
    """pre-commit's cache (the ruff it installs from PyPI) for this test session only."""
    return tmp_path_factory.mktemp("pre-commit-home")


def test_pre_commit_runs_clean_on_a_new_project(project, pre_commit_home):
    pytest.importorskip("pre_commit", reason="pre-commit is not installed (pip install -e '.[dev]')")
    done = run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files"], project, PRE_COMMIT_HOME=str(pre_commit_home)
    )
    output = done.stdout + done.stderr
    if done.returncode == 3 and "Installing environment" in output:  # pip could not reach PyPI for ruff
        pytest.skip(f"pre-commit could not install ruff (no network?):\n{output[-2000:]}")
    assert done.returncode == 0, output
    assert re.search(r"ruff check --fix\.+Passed", output) and re.search(r"ruff format\.+Passed", output)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True)
    assert status.stdout == ""  # nothing fixed, nothing reformatted


def test_pre_commit_and_dev_extra_pin_the_same_ruff(project):
    tomllib = pytest.importorskip("tomllib")
    hooks = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())["repos"]
    assert [repo["repo"] for repo in hooks] == ["local"]  # installable from PyPI alone
    pins = {dep for hook in hooks[0]["hooks"] for dep in hook["additional_dependencies"]}
    dev = tomllib.loads((project / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert len(pins) == 1 and pins <= set(dev)
    assert {re.split(r"[<>=]", dep)[0] for dep in dev} >= {"pytest", "ruff", "pre-commit"}


def test_ci_workflow_installs_lints_and_runs_pytest(project):
    text = (project / ".github" / "workflows" / "ci.yml").read_text()
    assert text == (TEMPLATE / ".github" / "workflows" / "ci.yml").read_text()
    workflow = yaml.safe_load(text)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    steps = job["steps"]
    assert any(step.get("with", {}).get("python-version") == "3.11" for step in steps)
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "pip install -e '.[dev]'" in commands and "download.pytorch.org/whl/cpu" in commands
    assert "ruff check" in commands and "ruff format --check" in commands
    assert re.search(r"^python -m pytest$", commands, re.MULTILINE)
