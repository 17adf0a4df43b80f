"""Several models, each with its own optimizer and schedule: update_every, trains, param_groups and
the gradient paths checked before training (a 2-D toy GAN written here, and the toy project)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, run_dirs, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

GAN_FILES = {
    "models.py": """
        from torch import nn


        class Generator(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))

            def forward(self, noise):
                return {"fake": self.net(noise)}


        class Critic(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))

            def forward(self, point, fake):
                return {"real_score": self.net(point).squeeze(-1), "fake_score": self.net(fake).squeeze(-1)}


        def get_ref_model_dict():
            return {"Generator": Generator, "Critic": Critic}
    """,
    "dataloader.py": '''
        import numpy as np
        import torch


        class CustomDataSet(torch.utils.data.Dataset):
            """Points on a ring, and the noise the generator turns into points."""

            def __init__(self, cfg):
                rng = np.random.default_rng(0)
                angle = rng.uniform(0, 2 * np.pi, size=100)
                self.points = np.stack([np.cos(angle), np.sin(angle)], 1).astype("float32")
                self.noise = rng.normal(size=(100, 2)).astype("float32")

            def __len__(self):
                return len(self.points)

            def __getitem__(self, i):
                return {"point": self.points[i], "noise": self.noise[i]}
    ''',
    "training_utils.py": """
        def critic_loss(real_score, fake_score):
            return fake_score - real_score


        def generator_loss(fake_score):
            return -fake_score


        def get_project_loss_and_eval_dict():
            return {"CriticLoss": critic_loss, "GeneratorLoss": generator_loss}, {}
    """,
}

# 80 training points in batches of 8: 10 steps an epoch.
GAN_CONFIG = {
    "dataloading_params": {"val_ratio": 0.2, "dev_num": 8, "num_workers": 0, "batch_size": 8},
    "training_params": {"seed": 7, "lrn_rate": 0.01, "max_training_epochs": 2, "use_GPU": False},
    "logging_params": {"logging_dir": "runs", "trackers": []},
    "info_flow": {
        "Generator": {"train": 1, "update_every": 5, "inputs": {"noise": "dataset"}},
        "Critic": {
            "train": 1,
            "inputs": {"point": "dataset", "fake": "Generator"},
            "losses": {
                "CriticLoss": {"trains": ["Critic"], "inputs": {"real_score": "Critic", "fake_score": "Critic"}},
                "GeneratorLoss": {"trains": ["Generator"], "inputs": {"fake_score": "Critic"}},
            },
        },
    },
}


def gan_project(root: Path, **changes: object) -> Path:
    root.mkdir()
    for name, text in GAN_FILES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    (root / "config.yml").write_text(yaml.safe_dump(GAN_CONFIG, sort_keys=False))
    write_config(root, **changes)
    return root


def train(project: Path, *args: str) -> Path:
    result = run_cli("train", "config.yml", *args, cwd=project)
    assert result.returncode == 0, result.stderr
    return run_dirs(project)[-1]


def load(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)


def adam_steps(trainer: dict, model: str) -> set[int]:
    return {int(s["step"]) for s in trainer["optimizers"][model]["state"].values()}


def test_each_model_steps_on_its_own_schedule(tmp_path: Path) -> None:
    run = train(gan_project(tmp_path / "gan"))
    trainer = load(run, "trainer_000002.pt")
    steps = trainer["step"]
    assert steps == 20
    assert adam_steps(trainer, "Critic") == {steps}  # every step
    assert adam_steps(trainer, "Generator") == {math.ceil(steps / 5)}  # steps 0, 5, 10, 15


def test_a_loss_updates_only_the_models_it_trains(tmp_path: Path) -> None:
    # The generator's own loss has weight 0, so only a leak of the critic's loss could move it.
    changes = {"info_flow__Generator__update_every": 1}
    weights = "info_flow__Critic__losses__GeneratorLoss__weight"
    run = train(gan_project(tmp_path / "gan", **changes, **{weights: 0.0}))
    for key, before in load(run, "Generator_000000.pt").items():
        assert torch.equal(before, load(run, "Generator_000002.pt")[key])
    assert not torch.equal(load(run, "Critic_000000.pt")["net.0.weight"], load(run, "Critic_000002.pt")["net.0.weight"])
    # Without trains, the critic's loss also trains the generator it reaches.
    trains = "info_flow__Critic__losses__CriticLoss__trains"
    run = train(gan_project(tmp_path / "leak", **changes, **{weights: 0.0, trains: None}))
    assert not torch.equal(
        load(run, "Generator_000000.pt")["net.0.weight"], load(run, "Generator_000002.pt")["net.0.weight"]
    )


SIGNAL_AT = """

class SignalAt(nn.Module):
    \"\"\"Passes the noise through; sends this process SIGTERM during global step ``at``.\"\"\"

    def __init__(self, at):
        super().__init__()
        self.at = at

    def forward(self, noise, step):
        import os
        import signal

        if int(step) == self.at and not os.environ.get("RESUMED") and not _FIRED:
            _FIRED.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return {"noise": noise}


_FIRED = []
_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_models(), "SignalAt": SignalAt}
"""


def test_a_run_stopped_mid_epoch_resumes_the_schedules_exactly(tmp_path: Path, monkeypatch) -> None:
    project = gan_project(tmp_path / "gan", training_params__max_training_epochs=2)
    with open(project / "models.py", "a") as fh:
        fh.write(SIGNAL_AT)
    flow = {"SignalAt": {"train": 0, "init_args": {"at": 7}, "inputs": {"noise": "dataset", "step": "trainer"}}}
    flow.update(GAN_CONFIG["info_flow"])
    flow["Generator"] = {**flow["Generator"], "inputs": {"noise": "SignalAt"}}
    scheduler = {"name": "StepLR", "interval": "step", "kwargs": {"step_size": 1, "gamma": 0.9}}
    flow["Generator"]["lr_scheduler"] = scheduler  # steps with the generator's updates only
    config = write_config(project, "signal.yml", info_flow=flow)
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.delenv("RESUMED")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 143
    (run,) = [p for p in (tmp_path / "stopped").iterdir() if p.is_dir()]
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", "--resume", str(run), "--project", str(project)]) == 0
    (reference,) = [p for p in (tmp_path / "straight").iterdir() if p.is_dir()]
    assert read_metrics(run) == read_metrics(reference)
    for model in ("Generator", "Critic"):
        a, b = load(reference, f"{model}_000002.pt"), load(run, f"{model}_000002.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
    trainer = load(run, "trainer_000002.pt")
    assert trainer["schedulers"]["Generator"]["last_epoch"] == 4  # the generator's 4 updates
    assert trainer["optimizers"]["Generator"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.9**4)


def test_param_groups_scale_the_rate_and_train_only_in_their_epochs(toy: Path) -> None:
    groups = [{"params": "*.bias", "lr_scale": 4, "weight_decay": 0}, {"params": "net.0.*", "epochs": [1, 2]}]
    write_config(toy, training_params__regularization_weight=0.01, info_flow__Encoder__param_groups=groups)
    run = train(toy)
    bias, first, rest = load(run, "trainer_000004.pt")["optimizers"]["Encoder"]["param_groups"]
    assert bias["lr"] == 0.04 and bias["weight_decay"] == 0 and bias["lr_scale"] == 4
    assert first["lr"] == 0.01 and first["weight_decay"] == 0.01 and first["epochs"] == [1, 2]
    assert rest["lr"] == 0.01 and len(bias["params"]) == 2 and len(first["params"]) == 1
    epoch1, epoch2, epoch4 = (load(run, f"Encoder_00000{e}.pt") for e in (1, 2, 4))
    assert not torch.equal(epoch1["net.0.weight"], epoch2["net.0.weight"])  # trained in epochs 1..2
    assert torch.equal(epoch2["net.0.weight"], epoch4["net.0.weight"])  # frozen after
    assert not torch.equal(epoch2["net.3.weight"], epoch4["net.3.weight"])


def test_bad_param_groups_are_one_line_each_before_the_run_folder(toy: Path) -> None:
    groups = [{"params": "net.*"}, {"params": "*.bias"}, {"params": "head.*"}]
    write_config(toy, info_flow__Encoder__param_groups=groups)
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 2 and not run_dirs(toy)
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: info_flow.Encoder.param_groups[1].params: '*.bias' matches only parameters an earlier group "
        "took (the first matching group wins); remove it or narrow the earlier glob",
        "error: info_flow.Encoder.param_groups[2].params: 'head.*' matches no parameter of Encoder; its "
        "parameters: net.0.weight, net.0.bias, net.3.weight, net.3.bias",
        "2 problems found; nothing was run.",
    ]
    write_config(toy, info_flow__Encoder__param_groups=[{"params": "*.bias", "momentum": 0.9}])
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 2 and not run_dirs(toy)
    assert "error: info_flow.Encoder.param_groups[0]: Adam has no group option 'momentum'" in result.stderr


def test_gradient_paths_are_checked_before_the_run_folder(toy: Path) -> None:
    write_config(
        toy,
        info_flow__Encoder__train=0,
        info_flow__Decoder__losses={},
        info_flow__Classifier__losses__MultinomialNLL__trains=["Classifier", "Encoder"],
    )
    result = run_cli("train", "config.yml", cwd=toy)
    assert result.returncode == 2 and not run_dirs(toy)
    assert result.stderr.strip().splitlines() == [
        "error: info_flow.Classifier.losses.MultinomialNLL.trains: names Encoder, which is not trained "
        "(train: 0); remove it or set info_flow.Encoder.train: 1",
        "error: info_flow.Decoder: trained (train: 1) but no loss reaches its parameters; add a loss that "
        "trains it or set train: 0",
        "2 problems found; nothing was run.",
    ]


def test_unreached_models_bad_trains_and_ema_mistakes_come_all_at_once(toy: Path) -> None:
    """What the info_flow graph shows (no loss reads from the Decoder; a trains naming a frozen model)
    is reported with the static EMA problems, in one go, before anything is built."""
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Decoder"]["losses"] = {}
    flow["Encoder"]["train"] = 0
    flow["Classifier"]["losses"]["MultinomialNLL"]["trains"] = ["Classifier", "Encoder"]
    flow["Teacher"] = {"ema_of": "Classifier", "losses": flow["Classifier"]["losses"]}
    write_config(toy, "bad.yml", info_flow=flow)
    result = run_cli("train", "bad.yml", cwd=toy)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert any("info_flow.Decoder: trained (train: 1) but no loss reaches its parameters" in e for e in errors)
    assert any("MultinomialNLL.trains: names Encoder, which is not trained" in e for e in errors)
    assert any(e.startswith("error: info_flow.Teacher") for e in errors), errors
    assert not run_dirs(toy)
