"""Ordered update phases (``training_params.phases``): a DCGAN and a WGAN trained by the runtime equal
hand-written loops of the reference order, step by step; bad phases are one line each; a config
without phases trains as before."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import write_config

from dlscaffold.cli import main
from dlscaffold.data import EpochSampler


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run torch on one thread here: these models are tiny, and on a busy machine OpenMP's thread
    hand-offs cost far more than the work itself (the runs and the loops they are compared with run
    in this process, on the same threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ the DCGAN

# The DCGAN of dcgan/main.py, scaled down to 32x32 images (three upsampling layers after the first
# 4x4 one), nz=16, ngf=ndf=8, so that 300 steps take seconds on a CPU.
DCGAN_FILES = {
    "models.py": """
        import torch
        from torch import nn

        NZ, NGF, NDF, NC = 16, 8, 8, 3


        def weights_init(m):
            classname = m.__class__.__name__
            if classname.find("Conv") != -1:
                torch.nn.init.normal_(m.weight, 0.0, 0.02)
            elif classname.find("BatchNorm") != -1:
                torch.nn.init.normal_(m.weight, 1.0, 0.02)
                torch.nn.init.zeros_(m.bias)


        class Generator(nn.Module):
            def __init__(self):
                super().__init__()
                self.main = nn.Sequential(
                    nn.ConvTranspose2d(NZ, NGF * 4, 4, 1, 0, bias=False),  # 4x4
                    nn.BatchNorm2d(NGF * 4),
                    nn.ReLU(True),
                    nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),  # 8x8
                    nn.BatchNorm2d(NGF * 2),
                    nn.ReLU(True),
                    nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),  # 16x16
                    nn.BatchNorm2d(NGF),
                    nn.ReLU(True),
                    nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),  # 32x32
                    nn.Tanh(),
                )
                self.apply(weights_init)

            def forward(self, noise):
                return {"fake": self.main(noise)}


        class Discriminator(nn.Module):
            def __init__(self):
                super().__init__()
                self.main = nn.Sequential(
                    nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),  # 16x16
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),  # 8x8
                    nn.BatchNorm2d(NDF * 2),
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),  # 4x4
                    nn.BatchNorm2d(NDF * 4),
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(NDF * 4, 1, 4, 1, 0, bias=False),  # 1x1
                    nn.Sigmoid(),
                )
                self.apply(weights_init)

            def score(self, x):
                return self.main(x).view(-1, 1).squeeze(1)

            def forward(self, image, fake):
                # two forward passes, as dcgan/main.py makes them: BatchNorm normalises each batch on its own
                return {"real_score": self.score(image), "fake_score": self.score(fake)}


        def get_ref_model_dict():
            return {"Generator": Generator, "Discriminator": Discriminator}
    """,
    "dataloader.py": '''
        import numpy as np
        import torch


        class CustomDataSet(torch.utils.data.Dataset):
            """Random 3x32x32 images in [-1, 1], and a fixed noise vector per image for the generator
            (dcgan/main.py draws fresh noise each step; a noise per index makes the run reproducible)."""

            def __init__(self, cfg):
                rng = np.random.default_rng(0)
                self.images = rng.uniform(-1.0, 1.0, size=(976, 3, 32, 32)).astype("float32")
                self.noise = rng.standard_normal(size=(976, 16, 1, 1)).astype("float32")

            def __len__(self):
                return len(self.images)

            def __getitem__(self, i):
                return {"image": self.images[i], "noise": self.noise[i]}
    ''',
    "training_utils.py": """
        import torch
        from torch.nn import functional as F


        def discriminator_loss(real_score, fake_score):
            # errD_real + errD_fake: the real batch against label 1, the fakes against label 0
            real = F.binary_cross_entropy(real_score, torch.full_like(real_score, 1.0))
            return real + F.binary_cross_entropy(fake_score, torch.full_like(fake_score, 0.0))


        def generator_loss(fake_score):
            # errG: the fakes against label 1
            return F.binary_cross_entropy(fake_score, torch.full_like(fake_score, 1.0))


        def get_project_loss_and_eval_dict():
            return {"DiscriminatorLoss": discriminator_loss, "GeneratorLoss": generator_loss}, {}
    """,
}

ADAM = {"name": "Adam", "kwargs": {"lr": 0.0002, "betas": [0.5, 0.999]}}
# 976 images, 16 of them for validation: 960 training images in batches of 16, 60 steps an epoch.
DCGAN_EPOCHS, DCGAN_BATCH = 5, 16
DCGAN_CONFIG = {
    "dataloading_params": {"val_ratio": 16 / 976, "dev_num": 8, "num_workers": 0, "batch_size": DCGAN_BATCH},
    "training_params": {
        "seed": 11,
        "max_training_epochs": DCGAN_EPOCHS,
        "use_GPU": False,
        "log_every": 1,
        "phases": [["Discriminator"], ["Generator"]],
    },
    "logging_params": {"logging_dir": "runs", "trackers": ["tensorboard"]},
    "info_flow": {
        "Generator": {"train": 1, "optimizer": ADAM, "inputs": {"noise": "dataset"}},
        "Discriminator": {
            "train": 1,
            "optimizer": ADAM,
            "inputs": {"image": "dataset", "fake": "Generator"},
            "losses": {
                "DiscriminatorLoss": {
                    "trains": ["Discriminator"],  # no gradient reaches the generator: fake.detach()
                    "inputs": {"real_score": "Discriminator", "fake_score": "Discriminator"},
                },
                "GeneratorLoss": {"trains": ["Generator"], "inputs": {"fake_score": "Discriminator"}},
            },
        },
    },
}

# -------------------------------------------------------------------------------- the WGAN order

WGAN_FILES = {
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
                angle = rng.uniform(0, 2 * np.pi, size=336)
                self.points = np.stack([np.cos(angle), np.sin(angle)], 1).astype("float32")
                self.noise = rng.normal(size=(336, 2)).astype("float32")

            def __len__(self):
                return len(self.points)

            def __getitem__(self, i):
                return {"point": self.points[i], "noise": self.noise[i]}
    ''',
    "training_utils.py": """
        def critic_loss(real_score, fake_score):
            return (fake_score - real_score).mean()


        def generator_loss(fake_score):
            return (-fake_score).mean()


        def get_project_loss_and_eval_dict():
            return {"CriticLoss": critic_loss, "GeneratorLoss": generator_loss}, {}
    """,
}

# 336 points, 16 for validation: 320 training points in batches of 16, 20 steps an epoch.
WGAN_EPOCHS, WGAN_BATCH, WGAN_EVERY, WGAN_LR = 5, 16, 5, 1e-3
WGAN_CONFIG = {
    "dataloading_params": {"val_ratio": 16 / 336, "dev_num": 8, "num_workers": 0, "batch_size": WGAN_BATCH},
    "training_params": {
        "seed": 5,
        "optimizer": {"name": "RMSprop", "kwargs": {"lr": WGAN_LR}},
        "max_training_epochs": WGAN_EPOCHS,
        "use_GPU": False,
        "log_every": 1,
        "phases": [["Critic"], ["Generator"]],
    },
    "logging_params": {"logging_dir": "runs", "trackers": ["tensorboard"]},
    "info_flow": {
        "Generator": {"train": 1, "update_every": WGAN_EVERY, "inputs": {"noise": "dataset"}},
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

# ------------------------------------------------------------------------------------- helpers


def write_project(root: Path, files: dict[str, str], config: dict[str, Any]) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    (root / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def train(config: Path, *args: str) -> Path:
    """Train in this process; the run folder (each config logs to its own folder)."""
    logs = config.parent / "runs" / config.stem
    assert main(["train", str(config), f"logging_params.logging_dir={logs}", *args]) == 0
    (run,) = [p for p in logs.iterdir() if p.is_dir()]
    return run


def project_namespace(files: dict[str, str]) -> dict[str, Any]:
    """The project's models, dataset and losses, for the hand-written loops."""
    namespace: dict[str, Any] = {}
    for name in ("models.py", "dataloader.py", "training_utils.py"):
        exec(textwrap.dedent(files[name]), namespace)
    return namespace


def weights(run: Path, name: str, epoch: int) -> dict[str, Any]:
    """A model's weights (or the trainer's state, name ``trainer``) saved after ``epoch``."""
    return torch.load(run / "checkpoints" / f"{name}_{epoch:06d}.pt", weights_only=True)


def initial_model(namespace: dict[str, Any], run: Path, model: str) -> torch.nn.Module:
    """A fresh copy of ``model`` with the run's initial weights (its epoch-0 checkpoint), in train mode."""
    net = namespace[model]()
    net.load_state_dict(weights(run, model, 0))
    return net.train()


def training_batches(run: Path, seed: int, epochs: int, batch_size: int) -> list[list[int]]:
    """The dataset indices of each training step, in the run's order: its saved split, shuffled per
    epoch from (seed, epoch) as the training sampler does."""
    indices = json.loads((run / "idx_dict.json").read_text())["train"]
    sampler = EpochSampler(indices, shuffle=True, seed=seed, batch_size=batch_size)
    steps = []
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        steps += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return steps


def step_values(run: Path) -> dict[str, list[float]]:
    """Every per-step scalar the run logged to TensorBoard (``train_step/<name>``), by step 1, 2, ..."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})  # 0: keep every value
    events.Reload()
    values = {}
    for tag in events.Tags()["scalars"]:
        if tag.startswith("train_step/"):
            scalars = sorted(events.Scalars(tag), key=lambda e: e.step)
            assert [e.step for e in scalars] == list(range(1, len(scalars) + 1)), tag  # log_every: 1
            values[tag.removeprefix("train_step/")] = [e.value for e in scalars]
    return values


def max_relative(logged: list[float], expected: list[float]) -> float:
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(logged, expected, strict=True))


def max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ reference loops


def dcgan_reference(
    netG: torch.nn.Module, netD: torch.nn.Module, dataset: Any, steps: list[list[int]]
) -> list[tuple[float, float]]:
    """The training loop of dcgan/main.py (pytorch/examples), on the run's batches and noise:
    ``(errD, errG)`` of each step."""
    from torch import nn, optim

    criterion = nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    losses = []
    for indices in steps:
        real_cpu = torch.from_numpy(dataset.images[indices])
        noise = torch.from_numpy(dataset.noise[indices])
        ############################
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        ###########################
        # train with real
        netD.zero_grad()
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype)
        output = netD.score(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        # train with fake
        fake = netG(noise)["fake"]
        label.fill_(fake_label)
        output = netD.score(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        ############################
        # (2) Update G network: maximize log(D(G(z)))
        ###########################
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD.score(fake)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        losses.append((errD.item(), errG.item()))
    return losses


def wgan_reference(
    netG: torch.nn.Module, netC: torch.nn.Module, namespace: dict[str, Any], steps: list[list[int]]
) -> list[tuple[float, float]]:
    """The WGAN order by hand: the critic every step; on every fifth step (0, 5, ...), after that
    step's critic update, the generator through the updated critic. ``(critic loss, generator loss)``
    of each step; on a step without a generator update, the generator's loss is the one the step's
    first forward pass gives (the critic before its update), as the run logs it."""
    dataset = namespace["CustomDataSet"]({})
    critic_loss, generator_loss = namespace["critic_loss"], namespace["generator_loss"]
    optimizerC = torch.optim.RMSprop(netC.parameters(), lr=WGAN_LR)
    optimizerG = torch.optim.RMSprop(netG.parameters(), lr=WGAN_LR)
    losses = []
    for step, indices in enumerate(steps):
        point = torch.from_numpy(dataset.points[indices])
        noise = torch.from_numpy(dataset.noise[indices])
        fake = netG(noise)["fake"]
        netC.zero_grad()
        scores = netC(point, fake.detach())
        errC = critic_loss(scores["real_score"], scores["fake_score"])
        errC.backward()
        optimizerC.step()
        if step % WGAN_EVERY == 0:
            netG.zero_grad()
            errG = generator_loss(netC(point, fake)["fake_score"])
            errG.backward()
            optimizerG.step()
        else:
            errG = generator_loss(scores["fake_score"])
        losses.append((errC.item(), errG.item()))
    return losses


# --------------------------------------------------------------------------------------- tests


def test_dcgan_phases_equal_the_dcgan_reference_loop(tmp_path: Path) -> None:
    """Reproduces the DCGAN reference loop of pytorch/examples' dcgan/main.py: the discriminator on
    the real batch and on the fakes (detached), then the generator through the updated discriminator."""
    project = write_project(tmp_path / "dcgan", DCGAN_FILES, DCGAN_CONFIG)
    started = time.perf_counter()
    run = train(project / "config.yml")
    run_s = time.perf_counter() - started
    logged = step_values(run)
    steps = training_batches(run, seed=11, epochs=DCGAN_EPOCHS, batch_size=DCGAN_BATCH)
    assert len(steps) == 300 and all(len(s) == DCGAN_BATCH for s in steps)

    namespace = project_namespace(DCGAN_FILES)
    netG = initial_model(namespace, run, "Generator")
    netD = initial_model(namespace, run, "Discriminator")
    started = time.perf_counter()
    expected = dcgan_reference(netG, netD, namespace["CustomDataSet"]({}), steps)
    reference_s = time.perf_counter() - started

    errD = logged["Discriminator/DiscriminatorLoss"]
    errG = logged["Discriminator/GeneratorLoss"]
    assert len(errD) == len(errG) == len(steps)
    rel_d = max_relative(errD, [d for d, _ in expected])
    rel_g = max_relative(errG, [g for _, g in expected])
    final_g, final_d = weights(run, "Generator", DCGAN_EPOCHS), weights(run, "Discriminator", DCGAN_EPOCHS)
    # The generator runs once a step in both (the second phase reuses its output and graph): its
    # parameters and BatchNorm running statistics are compared alike.
    diff_g = max_abs(final_g, netG.state_dict())
    # The discriminator's parameters only: the run's second phase runs the whole Discriminator entry
    # again (it was just updated), which also scores the real batch once more. In train mode BatchNorm
    # normalises with the batch's own statistics, so no output and no parameter changes, but the
    # running statistics see the real batch one extra time a step: they differ by design.
    params_d = {k for k, _ in netD.named_parameters()}
    diff_d = max_abs({k: final_d[k] for k in params_d}, {k: v for k, v in netD.state_dict().items() if k in params_d})
    print(
        f"DCGAN, {len(steps)} steps: errD max rel diff {rel_d:.3g}, errG max rel diff {rel_g:.3g}, final "
        f"Generator max abs diff {diff_g:.3g}, Discriminator {diff_d:.3g} (run {run_s:.1f} s, loop {reference_s:.1f} s)"
    )
    assert rel_d <= 1e-5 and rel_g <= 1e-5
    assert diff_g <= 1e-4 and diff_d <= 1e-4
    # two forward passes of the discriminator in each phase (real, fake), against three in dcgan/main.py
    assert int(final_d["main.3.num_batches_tracked"]) == 4 * len(steps)
    assert int(netD.state_dict()["main.3.num_batches_tracked"]) == 3 * len(steps)
    assert not same(final_g, weights(run, "Generator", 0))  # it trained


def test_wgan_phases_update_the_generator_after_the_critic(tmp_path: Path) -> None:
    project = write_project(tmp_path / "wgan", WGAN_FILES, WGAN_CONFIG)
    run = train(project / "config.yml")
    logged = step_values(run)
    steps = training_batches(run, seed=5, epochs=WGAN_EPOCHS, batch_size=WGAN_BATCH)
    assert len(steps) == 100

    namespace = project_namespace(WGAN_FILES)
    netG, netC = initial_model(namespace, run, "Generator"), initial_model(namespace, run, "Critic")
    expected = wgan_reference(netG, netC, namespace, steps)
    assert logged["Critic/CriticLoss"] == pytest.approx([c for c, _ in expected], rel=1e-5, abs=1e-8)
    assert logged["Critic/GeneratorLoss"] == pytest.approx([g for _, g in expected], rel=1e-5, abs=1e-8)
    for model, net in (("Generator", netG), ("Critic", netC)):
        final = weights(run, model, WGAN_EPOCHS)
        assert max_abs(final, net.state_dict()) <= 1e-6, model
        assert not same(final, weights(run, model, 0)), model
    trainer = weights(run, "trainer", WGAN_EPOCHS)
    for model, updates in (("Critic", 100), ("Generator", 20)):  # the generator at steps 0, 5, ..., 95
        assert {int(s["step"]) for s in trainer["optimizers"][model]["state"].values()} == {updates}, model


def test_a_config_without_phases_trains_as_before(tmp_path: Path, toy: Path) -> None:
    """One phase of every trained model is the default: bitwise the same run, for the per-model step
    (update_every, trains) and for the joint step."""
    tp = {k: v for k, v in WGAN_CONFIG["training_params"].items() if k != "phases"}
    project = write_project(tmp_path / "wgan", WGAN_FILES, {**WGAN_CONFIG, "training_params": tp})
    without = write_config(project, "without.yml", training_params__max_training_epochs=2)
    one = write_config(
        project, "one.yml", training_params__phases=[["Critic", "Generator"]], training_params__max_training_epochs=2
    )
    plain, phased = train(without), train(one)
    for model in ("Generator", "Critic"):
        assert same(weights(plain, model, 2), weights(phased, model, 2)), model
        assert not same(weights(plain, model, 2), weights(plain, model, 0)), model

    models = ("Encoder", "Classifier", "Decoder")
    plain = train(write_config(toy, "without.yml", training_params__max_training_epochs=2))
    phased = train(
        write_config(
            toy, "one.yml", training_params__max_training_epochs=2, training_params__phases=[list(reversed(models))]
        )
    )
    for model in models:
        assert same(weights(plain, model, 2), weights(phased, model, 2)), model


BAD_FILES = {
    "models.py": """
        from torch import nn


        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(2, 2)

            def forward(self, point):
                return {"code": self.net(point)}


        class Decoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(2, 2)

            def forward(self, code):
                return {"point_out": self.net(code)}


        class Critic(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(2, 1)

            def forward(self, point):
                return {"score": self.net(point)}


        class Lonely(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(2, 1)

            def forward(self, point):
                return {"guess": self.net(point)}


        class Frozen(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(2, 2)

            def forward(self, point):
                return {"other": self.net(point)}


        def get_ref_model_dict():
            return {"Encoder": Encoder, "Decoder": Decoder, "Critic": Critic, "Lonely": Lonely, "Frozen": Frozen}
    """,
    "dataloader.py": WGAN_FILES["dataloader.py"],
    "training_utils.py": """
        def square(x):
            return (x**2).sum(-1)


        def get_project_loss_and_eval_dict():
            return {"PairLoss": square, "CriticLoss": square, "LonelyLoss": square}, {}
    """,
}


def test_bad_phases_are_one_line_each_before_the_run_folder(tmp_path: Path, capsys) -> None:
    config = {
        "dataloading_params": {"val_ratio": 0.1, "dev_num": 8, "num_workers": 0, "batch_size": 16},
        "training_params": {
            "max_training_epochs": 1,
            "use_GPU": False,
            # Encoder and Decoder in two phases, which PairLoss (trains both) spans; Frozen is not
            # trained; Critic is in two phases; Decodr is no model; Lonely is in no phase.
            "phases": [["Encoder"], ["Decoder", "Frozen"], ["Critic"], ["Critic"], ["Decodr"]],
        },
        "logging_params": {"logging_dir": "runs", "trackers": []},
        "info_flow": {
            "Encoder": {"train": 1, "inputs": {"point": "dataset"}},
            "Decoder": {
                "train": 1,
                "inputs": {"code": "Encoder"},
                "losses": {"PairLoss": {"trains": ["Encoder", "Decoder"], "inputs": {"x": "Decoder.point_out"}}},
            },
            "Frozen": {"train": 0, "inputs": {"point": "dataset"}},
            "Critic": {
                "train": 1,
                "inputs": {"point": "Frozen.other"},
                "losses": {"CriticLoss": {"inputs": {"x": "Critic.score"}}},
            },
            "Lonely": {
                "train": 1,
                "inputs": {"point": "dataset"},
                "losses": {"LonelyLoss": {"inputs": {"x": "Lonely.guess"}}},
            },
        },
    }
    project = write_project(tmp_path / "bad", BAD_FILES, config)
    assert main(["train", str(project / "config.yml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (project / "runs").exists(), err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    expected = [  # words each line must hold, loosely
        ("info_flow.Decoder.losses.PairLoss", "phase"),
        ("training_params.phases", "Lonely", "no phase"),
        ("training_params.phases", "Critic", "two phases"),
        ("training_params.phases", "'Decodr'", "did you mean 'Decoder'"),
        ("training_params.phases", "Frozen", "train: 0"),
    ]
    for words in expected:
        assert sum(all(w in line for w in words) for line in lines) == 1, (words, lines)
    assert len(lines) == len(expected), lines
