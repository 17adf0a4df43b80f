"""The Python API: ``dlscaffold.load_run`` on a run trained through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import copy_project, run_cli, run_dirs

import dlscaffold
from dlscaffold.config import Config
from dlscaffold.data import collate
from dlscaffold.errors import UserError
from dlscaffold.losses import EVALS, LOSSES, per_sample
from dlscaffold.records.rundir import read_metrics, read_run_info

MODELS = ("Encoder", "Classifier", "Decoder")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The toy project trained for 2 epochs, and ``dlscaffold evaluate RUN --epoch 2 --json``'s result."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("api") / "toy")
    result = run_cli("train", "config.yml", "training_params.max_training_epochs=2", cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    result = run_cli("evaluate", str(run), "--epoch", "2", "--json", str(toy / "eval.json"), cwd=toy)
    assert result.returncode == 0, result.stderr
    return toy, run, json.loads((toy / "eval.json").read_text())


def _checkpoint(run: Path, name: str, epoch: int | str) -> dict[str, torch.Tensor]:
    suffix = epoch if isinstance(epoch, str) else f"{epoch:06d}"
    return torch.load(run / "checkpoints" / f"{name}_{suffix}.pt", weights_only=True)


def _same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = model.state_dict()
    return mine.keys() == state.keys() and all(torch.equal(mine[k], state[k]) for k in state)


def test_forward_over_the_val_split_reproduces_evaluate(trained: tuple[Path, Path, dict]) -> None:
    _, run, evaluated = trained
    loaded = dlscaffold.load_run(run, epoch=2)
    dataset, val, flow = loaded.dataset(), loaded.split["val"], loaded.flow
    by_hand: dict[str, list[torch.Tensor]] = {k: [] for k in evaluated["metrics"]}
    by_flow: dict[str, list[torch.Tensor]] = {k: [] for k in evaluated["metrics"]}
    for start in range(0, len(val), 7):  # another batch size than training's: sample means do not depend on it
        batch = collate([dataset[i] for i in val[start : start + 7]])
        out = loaded.forward(batch)
        logits, labels = out["Classifier"]["class_logits"], batch["class_idx"]
        by_hand["Classifier/ce"].append(per_sample(LOSSES["MultinomialNLL"](logits, labels)))
        by_hand["Classifier/accuracy"].append(per_sample(EVALS["MultinomialAccuracy"](logits, labels)))
        top2 = logits.topk(2, dim=-1).indices
        by_hand["Classifier/Top2Accuracy"].append((top2 == labels.view(-1, 1)).any(-1).float())
        by_hand["Decoder/reconstruction"].append(
            per_sample(LOSSES["MSE"](out["Decoder"]["reconstruction"], batch["features"]))
        )
        for name, value in flow.values(flow.losses + flow.evals, batch, out).items():
            by_flow[name].append(value)
    assert evaluated["epoch"] == 2 and evaluated["num_samples"] == len(val) == 60
    for values in (by_hand, by_flow):
        means = {k: torch.cat(v).double().mean().item() for k, v in values.items()}
        assert means == pytest.approx(evaluated["metrics"], rel=1e-6, abs=1e-6)
    assert loaded.evaluate("val")["metrics"] == pytest.approx(evaluated["metrics"], rel=1e-6, abs=1e-6)
    row = [r for r in loaded.metrics if r["epoch"] == 2 and r["split"] == "val"][0]  # what validation logged
    assert evaluated["metrics"] == pytest.approx({k: row[k] for k in evaluated["metrics"]}, rel=1e-6, abs=1e-6)


def test_forward_takes_a_list_of_items_and_returns_every_models_outputs(trained: tuple[Path, Path, dict]) -> None:
    _, run, _ = trained
    loaded = dlscaffold.load_run(run, epoch="last")
    items = [loaded.dataset()[i] for i in loaded.split["val"][:5]]
    out = loaded.forward(items)
    assert set(out) == set(MODELS)
    assert out["Classifier"]["class_logits"].shape == (5, 3) and out["Decoder"]["reconstruction"].shape == (5, 8)
    assert not out["Classifier"]["class_logits"].requires_grad
    again = loaded.forward(collate(items))  # eval mode: dropout off, so the same batch gives the same outputs
    assert torch.equal(again["Encoder"]["encoding"], out["Encoder"]["encoding"])


def test_models_config_split_metrics_and_dataset(trained: tuple[Path, Path, dict]) -> None:
    toy, run, _ = trained
    rng = torch.get_rng_state()
    loaded = dlscaffold.load_run(str(run), epoch=1)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left as it was
    assert loaded.epoch == 1 and loaded.run_dir == run and loaded.project_dir == toy.resolve()
    assert list(loaded.models) == list(MODELS)
    for name, model in loaded.models.items():
        assert not model.training and not any(m.training for m in model.modules())
        assert _same_weights(model, _checkpoint(run, name, 1))
        assert all(p.device.type == "cpu" for p in model.parameters())
    assert isinstance(loaded.config, Config) and list(loaded.config.info_flow) == list(MODELS)
    assert loaded.config.training_params.max_training_epochs == 2
    assert loaded.split == json.loads((run / "idx_dict.json").read_text())
    assert loaded.metrics == read_metrics(run) and [(r["epoch"], r["split"]) for r in loaded.metrics] == [
        (1, "train"),
        (1, "val"),
        (2, "train"),
        (2, "val"),
    ]
    dataset = loaded.dataset()
    assert len(dataset) == 240 and dataset.idx_dict is loaded.split
    assert loaded.evaluate("train")["num_samples"] == 180


def test_best_epoch_loads_the_best_weights(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    project, run, _ = trained
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    # by hand: epoch 1 recorded as best, its weights copied to <Model>_best.pt
    info = read_run_info(copy)
    (copy / "run.json").write_text(json.dumps({**info, "best": {"epoch": 1, "metric": "Classifier/ce", "value": 1.0}}))
    for name in MODELS:
        shutil.copyfile(copy / "checkpoints" / f"{name}_000001.pt", copy / "checkpoints" / f"{name}_best.pt")
    loaded = dlscaffold.load_run(copy, project=project)  # "best" is the default; a copy outside its project names it
    assert loaded.epoch == 1
    assert all(_same_weights(m, _checkpoint(copy, n, "best")) for n, m in loaded.models.items())
    assert not _same_weights(loaded.models["Classifier"], _checkpoint(copy, "Classifier", 2))

    (copy / "run.json").write_text(json.dumps({k: v for k, v in info.items() if k != "best"}))
    for path in (copy / "checkpoints").glob("*_best.pt"):
        path.unlink()
    with pytest.raises(UserError) as err:
        dlscaffold.load_run(copy, epoch="best", project=project)
    assert len(err.value.problems) == 1 and "records no best epoch" in str(err.value) and "\n" not in str(err.value)
    assert dlscaffold.load_run(copy, epoch="last", project=project).epoch == 2


@pytest.mark.parametrize("epoch", [7, "seventh", True])
def test_a_missing_epoch_is_one_line(trained: tuple[Path, Path, dict], epoch: object) -> None:
    _, run, _ = trained
    with pytest.raises(UserError) as err:
        dlscaffold.load_run(run, epoch=epoch)
    assert len(err.value.problems) == 1 and "\n" not in str(err.value) and "epoch" in str(err.value)
    if epoch == 7:
        assert "epochs: 0, 1, 2" in str(err.value)


def test_an_unknown_run_folder_is_one_line(tmp_path: Path) -> None:
    for folder in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(UserError) as err:
            dlscaffold.load_run(folder)
        assert len(err.value.problems) == 1 and "not a run folder" in str(err.value)


def test_the_project_argument_overrides_the_recorded_folder(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    toy, run, _ = trained
    moved = copy_project("toyproject", tmp_path / "elsewhere")
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "run.json").write_text(json.dumps({**read_run_info(copy), "project_dir": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match="holds no models.py"):
        dlscaffold.load_run(copy, epoch=2)
    loaded = dlscaffold.load_run(copy, epoch=2, project=moved)
    assert loaded.project_dir == moved.resolve()
    assert _same_weights(loaded.models["Encoder"], _checkpoint(run, "Encoder", 2))


def test_importing_dlscaffold_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, dlscaffold; assert callable(dlscaffold.load_run); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
