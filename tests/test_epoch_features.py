"""Runtime features of a fast recipe: the dataset's ``set_epoch``, models nothing reads are not run,
parameter groups outside their ``epochs`` do no gradient work, ``keep_cpu_memory``, the set-up's
objects frozen for the garbage collector while a run trains."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HANG_GUARD_S, signalling_config, write_config
from test_trustworthy import run_dirs_in

from dlscaffold.cli import main
from dlscaffold.parts.device import frozen_setup, kept_cpu_memory
from dlscaffold.records.rundir import read_metrics


@pytest.fixture(autouse=True)
def recorder(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module ``recorded`` holding fresh lists, which the project code this file appends imports
    (the project's own modules are unloaded when a run ends)."""
    module = types.ModuleType("recorded")
    module.EPOCHS, module.SEEN, module.CALLS, module.REQUIRES = [], [], [], []
    monkeypatch.setitem(sys.modules, "recorded", module)
    return module


EPOCH_DATASET = '''

class _EpochRecorder(CustomDataSet):
    """Records set_epoch calls and the epoch each training batch was transformed in."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.epoch = None

    def set_epoch(self, epoch):
        EPOCHS.append(epoch)
        self.epoch = epoch

    def transform_batch(self, batch, train):
        if train:
            SEEN.append(self.epoch)
        return batch


from recorded import EPOCHS, SEEN  # lists the test registered: train() unloads dataloader
CustomDataSet = _EpochRecorder
'''


def test_set_epoch_is_called_before_each_training_epoch(toy: Path, recorder: types.ModuleType) -> None:
    with open(toy / "dataloader.py", "a") as fh:
        fh.write(EPOCH_DATASET)
    config = write_config(toy, "epochs.yml", training_params__max_training_epochs=3)
    assert main(["train", str(config)]) == 0
    assert recorder.EPOCHS == [1, 2, 3]
    steps = 6  # 180 training points, batch 32
    assert recorder.SEEN[-3 * steps :] == [1] * steps + [2] * steps + [3] * steps  # after the pre-run check's batch


def test_set_epoch_on_resume_gives_the_resumed_epoch(toy: Path, tmp_path: Path, monkeypatch, recorder) -> None:
    with open(toy / "dataloader.py", "a") as fh:
        fh.write(EPOCH_DATASET)
    config = signalling_config(toy, 15)  # 12 steps an epoch: the signal comes in epoch 2
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'runs'}"]) == 143
    (run,) = run_dirs_in(tmp_path / "runs")
    monkeypatch.setenv("RESUMED", "1")
    recorder.EPOCHS.clear()  # the stopped run's calls: 1, 2
    assert main(["train", "--resume", str(run), "--project", str(toy)]) == 0
    assert recorder.EPOCHS == [2, 3]


SPY_MODELS = '''
import torch

class Spy(nn.Module):
    """A frozen model nothing reads: counts its calls."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Linear(8, 8)

    def forward(self, features):
        CALLS.append(torch.is_grad_enabled())
        return {"features": self.scale(features)}


from recorded import CALLS  # a list the test registered: train() unloads models
_plain = get_ref_model_dict


def get_ref_model_dict():
    return {**_plain(), "Spy": Spy}
'''


def test_a_model_nothing_reads_is_not_run_in_training_or_validation(toy: Path, recorder: types.ModuleType) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(SPY_MODELS)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Spy"] = {"train": 0, "inputs": {"features": "dataset"}}
    config = write_config(toy, "spy.yml", info_flow=flow, training_params__max_training_epochs=2)
    assert main(["train", str(config)]) == 0
    calls = recorder.CALLS
    assert len(calls) <= 4, calls  # only the pre-run checks ran it (12 training and 4 val batches did not)


def test_a_model_read_by_a_later_model_still_runs(toy: Path, recorder: types.ModuleType) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(SPY_MODELS)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow = {"Spy": {"train": 0, "inputs": {"features": "dataset"}}, **flow}
    flow["Encoder"]["inputs"] = {"features": "Spy"}
    config = write_config(toy, "spy.yml", info_flow=flow, training_params__max_training_epochs=1)
    assert main(["train", str(config)]) == 0
    assert len(recorder.CALLS) >= 6 + 2  # every training and validation batch


GRAD_WATCH = '''

class Watched(Encoder):
    """An Encoder that records whether its weight requires grad in each training forward."""

    def forward(self, features):
        if self.training:
            REQUIRES.append(self.net[0].weight.requires_grad)
        return super().forward(features)


from recorded import REQUIRES  # a list the test registered: train() unloads models
_plain_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_plain_models(), "Encoder": Watched}
'''


def test_a_group_outside_its_epochs_needs_no_gradient_and_stays_unchanged(
    toy: Path, recorder: types.ModuleType
) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(GRAD_WATCH)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["param_groups"] = [{"params": "net.0.*", "epochs": [1, 1]}]
    config = write_config(toy, "window.yml", info_flow=flow, training_params__max_training_epochs=3)
    assert main(["train", str(config)]) == 0
    requires = recorder.REQUIRES
    assert requires[:6] == [True] * 6 and requires[6:] == [False] * 12  # 6 steps an epoch
    (run,) = run_dirs_in(toy / "runs")
    one, three = (torch.load(run / "checkpoints" / f"Encoder_00000{e}.pt", weights_only=True) for e in (1, 3))
    assert torch.equal(one["net.0.weight"], three["net.0.weight"])
    assert not torch.equal(one["net.3.weight"], three["net.3.weight"])


def test_keep_cpu_memory_trains_the_same_weights(toy: Path) -> None:
    with kept_cpu_memory(True) as applied:
        assert applied == sys.platform.startswith("linux")  # glibc here
    runs = {}
    for keep in ("false", "true"):
        logs = toy / f"runs_{keep}"
        assert (
            main(
                [
                    "train",
                    str(toy / "config.yml"),
                    f"training_params.keep_cpu_memory={keep}",
                    f"logging_params.logging_dir={logs}",
                ]
            )
            == 0
        )
        (runs[keep],) = run_dirs_in(logs)
    assert read_metrics(runs["true"]) == read_metrics(runs["false"])
    a = torch.load(runs["true"] / "checkpoints" / "Encoder_000004.pt", weights_only=True)
    b = torch.load(runs["false"] / "checkpoints" / "Encoder_000004.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert yaml.safe_load((runs["true"] / "config.yml").read_text())["training_params"]["keep_cpu_memory"] is True


def test_a_run_trains_with_the_set_up_frozen_for_the_garbage_collector(toy: Path, monkeypatch) -> None:
    import dlscaffold.train as train_module

    seen, fit = [], train_module._fit
    monkeypatch.setattr(train_module, "_fit", lambda *a: (seen.append(gc.get_freeze_count()), fit(*a))[1])
    assert gc.get_freeze_count() == 0
    assert main(["train", str(toy / "config.yml"), "training_params.max_training_epochs=1"]) == 0
    assert seen and seen[0] > 10_000  # torch's modules and the run's objects, at least
    assert gc.get_freeze_count() == 0  # taken back when the run ends
    gc.freeze()  # a process that froze its own objects keeps them frozen
    try:
        with frozen_setup():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("value", ["yes please", "2"])
def test_keep_cpu_memory_must_be_a_boolean(toy: Path, value: str, capsys) -> None:
    assert main(["train", str(toy / "config.yml"), f"training_params.keep_cpu_memory={value}"]) == 2
    assert "training_params.keep_cpu_memory" in capsys.readouterr().err


def test_ctrl_c_during_set_up_aborts_at_once_and_a_scheduler_signal_waits_for_a_step(toy: Path) -> None:
    with open(toy / "dataloader.py", "a") as fh:  # the set-up sends the signal while it builds the dataset
        fh.write(
            "\n\n_Plain = CustomDataSet\n\n\nclass CustomDataSet(_Plain):\n    def __init__(self, cfg):\n"
            "        import os, signal\n        super().__init__(cfg)\n"
            "        os.kill(os.getpid(), getattr(signal, os.environ['SEND']))\n"
        )
    codes = {}
    for name in ("SIGINT", "SIGUSR2"):
        done = subprocess.run(
            [sys.executable, "-m", "dlscaffold", "train", "config.yml", f"logging_params.logging_dir=runs_{name}"],
            cwd=toy,
            env={**os.environ, "SEND": name},
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
        )
        codes[name] = done.returncode
    assert codes == {"SIGINT": 130, "SIGUSR2": 128 + signal.SIGUSR2}
    assert not (toy / "runs_SIGINT").exists()  # aborted before the run folder was made
    (run,) = run_dirs_in(toy / "runs_SIGUSR2")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
