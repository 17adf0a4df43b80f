"""``dlscaffold export``: a trained Encoder -> Decoder run exported as an ExportedProgram and as
ONNX, checked against the run's own outputs; and the one-line errors."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.data import collate

FILES = {
    "models.py": """
        import torch
        from torch import nn


        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))

            def forward(self, features):
                return {"z": self.net(features), "norm": features.norm(dim=1)}


        class Decoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(3, 8)

            def forward(self, z):
                return {"recon": self.net(z)}


        class Gate(nn.Module):
            # frozen, read by nothing: a branch on a tensor's values, which torch.export cannot trace

            def __init__(self):
                super().__init__()
                self.scale = nn.Parameter(torch.ones(1))

            def forward(self, z):
                return {"gated": z * self.scale if z.sum() > 0 else -z}


        class Tagger(nn.Module):
            # frozen, read by nothing: it takes the dataset's strings, which an export cannot

            def __init__(self):
                super().__init__()
                self.scale = nn.Parameter(torch.ones(1))

            def forward(self, z, label):
                return {"tagged": z * self.scale}


        def get_ref_model_dict():
            return {"Encoder": Encoder, "Decoder": Decoder, "Gate": Gate, "Tagger": Tagger}
    """,
    "dataloader.py": """
        import numpy as np
        import torch


        class CustomDataSet(torch.utils.data.Dataset):
            def __init__(self, cfg):
                self.x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return {"features": self.x[i], "label": "a point"}

            def transform_batch(self, batch, train):
                return {**batch, "features": batch["features"] * 2.0}
    """,
}

CONFIG = {
    "dataloading_params": {"val_ratio": 0.4, "dev_num": 4, "num_workers": 0, "batch_size": 8},
    "training_params": {"seed": 3, "lrn_rate": 0.01, "max_training_epochs": 2, "use_GPU": False},
    "logging_params": {"logging_dir": "runs", "trackers": []},
    "info_flow": {
        "Encoder": {"train": 1, "inputs": {"features": "dataset"}},
        "Decoder": {
            "train": 1,
            "inputs": {"z": "Encoder"},
            "losses": {"MSE": {"inputs": {"recon": "Decoder", "features": "dataset"}}},
        },
        "Gate": {"train": 0, "inputs": {"z": "Encoder"}},
        "Tagger": {"train": 0, "inputs": {"z": "Encoder", "label": "dataset"}},
    },
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The autoencoder project, trained for 2 epochs (once for the module)."""
    project = tmp_path_factory.mktemp("export") / "auto"
    project.mkdir()
    for name, text in FILES.items():
        (project / name).write_text(textwrap.dedent(text).lstrip())
    (project / "config.yml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    assert main(["train", str(project / "config.yml")]) == 0
    (run,) = sorted((project / "runs").iterdir())
    return run


def export(run: Path, *args: str) -> int:
    return main(["export", str(run), *args])


def val_batches(run: Path) -> tuple[dlscaffold.api.LoadedRun, list[dict]]:
    """The run loaded, and its first 1 and 7 validation samples collated (raw, before transform_batch)."""
    loaded = dlscaffold.load_run(run)
    val = loaded.split["val"]
    return loaded, [collate([loaded.dataset()[i] for i in val[:size]]) for size in (1, 7)]


def within(got: torch.Tensor, want: torch.Tensor, record: dict) -> bool:
    tol = record["check"]["tolerance"]
    return got.shape == want.shape and torch.allclose(got, want, atol=tol["atol"], rtol=tol["rtol"])


def test_a_model_as_an_exported_program_reproduces_the_run(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert export(run_dir, "--model", "Encoder") == 0
    out = capsys.readouterr().out
    assert "tolerance atol 1e-05, rtol 0.0001" in out and "batch sizes 1, 7, 16" in out
    path = run_dir / "exports" / "Encoder-best.pt2"
    record = json.loads((run_dir / "exports" / "Encoder-best.export.json").read_text())
    assert record["format"] == "exported-program" and record["file"] == path.name
    assert record["inputs"] == [{"name": "features", "shape": ["batch", 8], "dtype": "float32", "source": "dataset"}]
    assert [o["name"] for o in record["outputs"]] == ["Encoder.z", "Encoder.norm"]
    assert record["check"]["batch_sizes"] == [1, 7, 16] and record["check"]["max_abs_diff"] <= 1e-5
    assert record["epoch"] == json.loads((run_dir / "run.json").read_text())["best"]["epoch"]
    program = torch.export.load(str(path)).module()
    loaded, batches = val_batches(run_dir)
    for batch in batches:
        want = loaded.forward(batch)["Encoder"]
        z, norm = program(batch["features"] * 2.0)  # the dataset's transform_batch for evaluation
        assert within(z, want["z"], record) and within(norm, want["norm"], record)


def test_onnx_through_onnxruntime_reproduces_the_run(run_dir: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    target = tmp_path / "encoder.onnx"
    assert export(run_dir, "--model", "Encoder", "--format", "onnx", "--output", str(target), "--epoch", "last") == 0
    record = json.loads((tmp_path / "encoder.export.json").read_text())
    assert record["format"] == "onnx" and record["check"]["tolerance"] == {"atol": 1e-4, "rtol": 1e-3}
    assert record["requested_epoch"] == "last" and record["epoch"] == 2 and "onnxruntime" in record["versions"]
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["Encoder.z", "Encoder.norm"]
    loaded = dlscaffold.load_run(run_dir, epoch="last")
    for batch in [collate([loaded.dataset()[i] for i in loaded.split["val"][:size]]) for size in (1, 7)]:
        z, _ = session.run(None, {"features": (batch["features"] * 2.0).numpy()})
        assert within(torch.from_numpy(z), loaded.forward(batch)["Encoder"]["z"], record)


def test_outputs_export_the_models_they_need_as_one_program(run_dir: Path) -> None:
    assert export(run_dir, "--outputs", "Decoder.recon", "--outputs", "Encoder.z") == 0
    record = json.loads((run_dir / "exports" / "Decoder.recon+Encoder.z-best.export.json").read_text())
    assert record["models"] == ["Encoder", "Decoder"] and [i["name"] for i in record["inputs"]] == ["features"]
    program = torch.export.load(str(run_dir / "exports" / "Decoder.recon+Encoder.z-best.pt2")).module()
    loaded, batches = val_batches(run_dir)
    for batch in batches:
        want = loaded.forward(batch)
        recon, z = program(batch["features"] * 2.0)
        assert within(recon, want["Decoder"]["recon"], record) and within(z, want["Encoder"]["z"], record)


def test_a_model_reading_another_takes_that_tensor_as_its_input(run_dir: Path) -> None:
    assert export(run_dir, "--model", "Decoder") == 0
    record = json.loads((run_dir / "exports" / "Decoder-best.export.json").read_text())
    assert record["models"] == ["Decoder"]
    assert record["inputs"] == [{"name": "Encoder.z", "shape": ["batch", 3], "dtype": "float32", "source": "Encoder"}]
    program = torch.export.load(str(run_dir / "exports" / "Decoder-best.pt2")).module()
    loaded, batches = val_batches(run_dir)
    for batch in batches:
        want = loaded.forward(batch)
        assert within(program(want["Encoder"]["z"]), want["Decoder"]["recon"], record)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "either --model NAME"),
        (("--model", "Encoder", "--outputs", "Decoder.recon"), "not both"),
        (("--model", "Encodr"), "no model 'Encodr' in the run; did you mean 'Encoder'?"),
        (
            ("--outputs", "Decoder.recn"),
            "Decoder returns no tensor 'recn'; expected MODEL.TENSOR; did you mean 'recon'",
        ),
        (("--outputs", "Decodr.recon"), "no model 'Decodr' in the run; expected MODEL.TENSOR; did you mean 'Decoder'"),
        (("--outputs", "Decoder"), "Decoder is a model; expected MODEL.TENSOR; available: Decoder.recon"),
        (("--model", "Encoder", "--format", "onx"), "--format: found 'onx'; did you mean 'onnx'?"),
        (("--model", "Encoder", "--epoch", "9"), "--epoch: found 9; "),
        (("--model", "Encoder", "--epoch", "first"), "--epoch: found 'first'; expected"),
        (("--model", "Gate"), "Gate does not export: control flow in info_flow.Gate: Gate.forward depends on"),
        (("--model", "Encoder", "--output", "encoder.onnx"), "an exported-program file ends in .pt2"),
        (("--model", "Tagger"), "input 'label' is a list, not a tensor"),
    ],
)
def test_bad_requests_are_one_line(run_dir: Path, capsys: pytest.CaptureFixture, args: tuple, expected: str) -> None:
    written = sorted((run_dir / "exports").glob("*")) if (run_dir / "exports").is_dir() else []
    assert export(run_dir, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert (sorted((run_dir / "exports").glob("*")) if (run_dir / "exports").is_dir() else []) == written


def test_an_export_over_the_tolerance_is_refused_and_not_written(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from dlscaffold.tools import export_check

    runner = export_check.runner

    def off_by_a_little(*args: object) -> object:
        run = runner(*args)
        return lambda inputs: [out + 1e-3 for out in run(inputs)]

    monkeypatch.setattr(export_check, "runner", off_by_a_little)
    assert export(run_dir, "--model", "Encoder", "--output", str(tmp_path / "encoder.pt2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from the run's models: Encoder.z at batch size 1: max abs diff 0.001" in err[0]
    assert "over the tolerance atol 1e-05 + rtol 0.0001 * |value|; nothing was written" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_its_packages_names_the_extra(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxscript" else find_spec(name))
    assert export(run_dir, "--model", "Encoder", "--format", "onnx") == 2
    assert capsys.readouterr().err.strip() == (
        "error: --format onnx needs onnxscript (not installed): pip install 'dlscaffold[onnx]'"
    )


def test_inputs_the_dataset_does_not_give_and_folders_that_are_not_runs(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert export(tmp_path, "--model", "Encoder") == 2
    assert "not a run folder" in capsys.readouterr().err
    project = shutil.copytree(run_dir.parent.parent, tmp_path / "changed", ignore=shutil.ignore_patterns("runs"))
    loader = project / "dataloader.py"
    loader.write_text(loader.read_text().replace('"features"', '"feats"'))  # items and transform_batch
    assert export(run_dir, "--model", "Encoder", "--project", str(project)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs tensor 'features' from dataset" in err[0] and "feats" in err[0], err


def test_without_epoch_a_run_with_no_monitor_exports_its_last_epoch(run_dir: Path) -> None:
    """``--epoch`` left out: best, or last for a run trained with ``monitor: none`` (no best epoch)."""
    unmonitored = run_dir.with_name(run_dir.name + "_unmonitored")
    shutil.copytree(run_dir, unmonitored, ignore=shutil.ignore_patterns("exports"))
    config = yaml.safe_load((unmonitored / "config.yml").read_text())
    config["training_params"]["monitor"] = "none"
    (unmonitored / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert export(unmonitored, "--model", "Encoder") == 0
    record = json.loads((unmonitored / "exports" / "Encoder-last.export.json").read_text())
    assert record["requested_epoch"] == "last" and record["epoch"] == 2
