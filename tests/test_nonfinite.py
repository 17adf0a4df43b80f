"""Non-finite values never reach a file: a skipped step leaves the models as they were (buffers
included), no checkpoint holds NaN weights, metrics.jsonl and run.json stay strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_dirs, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

# Appended to the toy project's models.py: an encoder with BatchNorm (whose running statistics a
# forward pass in training mode updates), and a classifier head that poisons its own weight at a step.
MODELS = '''

import torch as _torch


class BNEncoder(nn.Module):
    def __init__(self, in_dim: int, enc_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, enc_dim))

    def forward(self, features):
        return {"encoding": self.net(features)}


class Poisoned(nn.Module):
    """A classifier head that writes NaN into its weight during training step ``at`` (or fails there)."""

    def __init__(self, enc_dim: int, at: int, fail: bool = False):
        super().__init__()
        self.head = nn.Linear(enc_dim, 3)
        self.at, self.fail = at, fail

    def forward(self, encoding, step):
        if self.training and int(step) == self.at:
            if self.fail:
                raise RuntimeError("poisoned")
            with _torch.no_grad():
                self.head.weight[0, 0] = float("nan")
        return {"class_logits": self.head(encoding)}


class GradPoisoned(Poisoned):
    """A classifier head whose loss stays finite at step ``at`` while its gradient is NaN there:
    ``0 * sqrt(z - z)`` adds nothing forward, and its derivative at 0 is ``0 * inf``."""

    def __init__(self, enc_dim: int, at: int, fail: bool = False):
        super().__init__(enc_dim, at, fail)
        self.z = nn.Parameter(_torch.ones(()))

    def forward(self, encoding, step):
        logits = self.head(encoding)
        if self.training and int(step) == self.at:
            logits = logits + 0.0 * _torch.sqrt(self.z - self.z)
        return {"class_logits": logits}


_toy_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_toy_models(), "BNEncoder": BNEncoder, "Poisoned": Poisoned, "GradPoisoned": GradPoisoned}
'''

# Appended to the toy project's dataloader.py: dataset item 3 (a training point, see SPLIT) is NaN.
NAN_ITEM = """

_get = CustomDataSet.__getitem__


def _with_a_nan(self, index):
    item = _get(self, index)
    return {**item, "features": item["features"] * float("nan")} if index == 3 else item


CustomDataSet.__getitem__ = _with_a_nan
"""

SPLIT = {"train": list(range(180)), "val": list(range(180, 240))}  # 6 steps an epoch at batch 32


def nonfinite_project(toy: Path, nan_item: bool = True) -> Path:
    with open(toy / "models.py", "a") as fh:
        fh.write(MODELS)
    if nan_item:
        with open(toy / "dataloader.py", "a") as fh:
            fh.write(NAN_ITEM)
    (toy / "split.json").write_text(json.dumps(SPLIT))
    return toy


def train(config: Path, *args: str) -> int:
    """``dlscaffold train CONFIG ARGS`` in this process, logging into the project's ``runs``."""
    return main(["train", str(config), f"logging_params.logging_dir={config.parent / 'runs'}", *args])


def poisoned_config(project: Path, head_class: str = "Poisoned", **init_args: object) -> Path:
    """The toy flow with ``Poisoned`` (or ``head_class``) as the classifier head, reading the global step."""
    flow = yaml.safe_load((project / "config.yml").read_text())["info_flow"]
    head = {**flow["Classifier"], "init_args": {"enc_dim": 4, **init_args}}
    head["inputs"] = {"encoding": "Encoder", "step": "trainer"}
    for kind in ("losses", "evals"):
        for term in head[kind].values():
            term["inputs"]["class_logits"] = head_class
    return write_config(
        project,
        f"{head_class.lower()}.yml",
        info_flow={"Encoder": flow["Encoder"], head_class: head, "Decoder": flow["Decoder"]},
        training_params__on_nonfinite="skip",
        training_params__max_training_epochs=2,
        dataloading_params__idx_dict_path="split.json",
    )


def tensors(obj: object) -> list[torch.Tensor]:
    """Every tensor in a loaded checkpoint, however nested."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def strict_rows(run: Path) -> list[dict]:
    """metrics.jsonl, refusing a bare NaN or Infinity anywhere."""
    return [
        json.loads(line, parse_constant=lambda name: pytest.fail(f"metrics.jsonl holds {name}"))
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def test_a_skipped_nan_sample_leaves_batchnorm_and_every_checkpoint_finite(toy: Path, capsys) -> None:
    project = nonfinite_project(toy)
    flow = yaml.safe_load((project / "config.yml").read_text())["info_flow"]
    flow = {"BNEncoder": flow.pop("Encoder"), **flow}
    for name in ("Classifier", "Decoder"):
        flow[name]["inputs"] = {"encoding": "BNEncoder"}
    config = write_config(
        project,
        "bn.yml",
        info_flow=flow,
        training_params__on_nonfinite="skip",
        training_params__max_training_epochs=2,
        dataloading_params__idx_dict_path="split.json",
    )
    assert train(config) == 0
    assert "Skipped 2 non-finite step(s)" in capsys.readouterr().out
    (run,) = run_dirs(project)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["best"]["epoch"] in (1, 2)
    rows = strict_rows(run)
    assert [r["skipped_nonfinite_steps"] for r in rows if r["split"] == "train"] == [1, 1]  # the NaN batch, each epoch
    assert all(isinstance(r["Classifier/ce"], float) for r in rows)  # validation reads finite running statistics
    saved = sorted((run / "checkpoints").glob("*.pt"))
    assert {p.name for p in saved} >= {"BNEncoder_000002.pt", "BNEncoder_best.pt", "trainer_000002.pt"}
    for path in saved:
        found = tensors(torch.load(path, weights_only=True))
        assert found and all(torch.isfinite(t).all() for t in found if t.is_floating_point()), path
    bn = torch.load(run / "checkpoints" / "BNEncoder_000002.pt", weights_only=True)
    assert int(bn["net.1.num_batches_tracked"]) == 2 * 6 - 2  # the skipped steps are not counted as BatchNorm's


def test_weights_that_turn_nan_are_never_checkpointed(toy: Path, caplog) -> None:
    config = poisoned_config(nonfinite_project(toy, nan_item=False), at=8)  # step 8 is in epoch 2
    assert train(config) == 0  # from step 8 on, the head's weight holds a NaN: every step is skipped
    (warning,) = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert "info_flow.Poisoned holds non-finite values (NaN or inf) in head.weight" in warning
    assert "the checkpoint of epoch 2 was not written (the files saved before are kept)" in warning
    (run,) = run_dirs(toy)
    names = {p.name for p in (run / "checkpoints").glob("*.pt")}
    assert "trainer_000001.pt" in names and "Poisoned_000001.pt" in names
    assert not {"trainer_000002.pt", "Poisoned_000002.pt", "Encoder_000002.pt"} & names
    for path in (run / "checkpoints").glob("*.pt"):
        assert all(
            torch.isfinite(t).all() for t in tensors(torch.load(path, weights_only=True)) if t.is_floating_point()
        )
    val = [r for r in strict_rows(run) if r["split"] == "val"]
    assert val[1]["Poisoned/ce"] is None and val[1]["total_loss"] is None  # NaN is written as null
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["best"] == {
        "epoch": 1,
        "metric": "Poisoned/ce",
        "value": val[0]["Poisoned/ce"],
    }
    assert sum(r["skipped_nonfinite_steps"] for r in read_metrics(run) if r["split"] == "train") == 12 - 8


def test_a_failure_says_the_checkpoint_is_intact_only_when_one_was_saved(toy: Path, capsys) -> None:
    project = nonfinite_project(toy)
    nan = write_config(
        project, "nan.yml", training_params__max_training_epochs=1, dataloading_params__idx_dict_path="split.json"
    )
    failing = poisoned_config(project, at=2, fail=True)
    for config, says in ((nan, "is not finite (NaN or inf)"), (failing, "RuntimeError: poisoned")):
        for flags, kept in (((), True), (("--no-save",), False)):
            assert train(config, *flags) == 2
            (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
            assert says in line, line
            assert ("the last checkpoint is intact" in line) == kept, (flags, line)


def test_a_nan_gradient_under_a_finite_loss_is_never_applied(toy: Path, capsys) -> None:
    """The step's finiteness check reads the gradients too: a finite loss with a NaN gradient (one
    fused kernel over every gradient finds it) stops the run naming the model, or is skipped."""
    project = nonfinite_project(toy, nan_item=False)
    config = poisoned_config(project, "GradPoisoned", at=3)
    assert train(config, "training_params.on_nonfinite=stop") == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert "step 3: the gradients of info_flow.GradPoisoned is not finite" in line, line
    assert train(config) == 0  # on_nonfinite: skip (poisoned_config's)
    run = max(run_dirs(project))
    train_rows = [r for r in strict_rows(run) if r["split"] == "train"]
    assert [r["skipped_nonfinite_steps"] for r in train_rows] == [1, 0]
    for path in (run / "checkpoints").glob("*.pt"):
        assert all(
            torch.isfinite(t).all() for t in tensors(torch.load(path, weights_only=True)) if t.is_floating_point()
        )
