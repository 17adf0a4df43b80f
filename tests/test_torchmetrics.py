"""Epoch-level ``torchmetrics.<Class>`` evals: exact over a split, checked before a run starts."""

from __future__ import annotations

import gc
import io
import json
import weakref
from pathlib import Path

import pytest
import torch
import torchmetrics
import yaml
from conftest import copy_project, run_cli, run_dirs
from sklearn.metrics import f1_score

import dlscaffold
from dlscaffold.data import collate
from dlscaffold.errors import UserError
from dlscaffold.parts.flow import Flow, MetricTerm
from dlscaffold.parts.tm_metrics import build_metric, torchmetrics_class
from dlscaffold.records.rundir import read_metrics

F1 = {
    "logging_name": "f1",
    "init_args": {"task": "multiclass", "num_classes": 3, "average": "macro"},
    "inputs": {"class_logits": "Classifier", "class_idx": "dataset"},
}


def _config(project: Path, name: str, evals: dict, **training: object) -> Path:
    """The toy config with ``evals`` added to the Classifier's."""
    raw = yaml.safe_load((project / "config.yml").read_text())
    raw["info_flow"]["Classifier"]["evals"].update(evals)
    raw["training_params"].update(training)
    path = project / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def f1_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    toy = copy_project("toyproject", tmp_path_factory.mktemp("tm") / "toy")
    config = _config(toy, "f1.yml", {"torchmetrics.F1Score": F1}, max_training_epochs=2)
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(toy)
    return toy, run


def test_f1_over_the_val_split_equals_scikit_learns(f1_run: tuple[Path, Path]) -> None:
    toy, run = f1_run
    loaded = dlscaffold.load_run(run, epoch=2)
    dataset, val = loaded.dataset(), loaded.split["val"]
    labels, preds = [], []
    for start in range(0, len(val), 16):
        batch = collate([dataset[i] for i in val[start : start + 16]])
        labels.append(batch["class_idx"])
        preds.append(loaded.forward(batch)["Classifier"]["class_logits"].argmax(-1))
    expected = f1_score(torch.cat(labels).numpy(), torch.cat(preds).numpy(), average="macro")
    assert 0 < expected < 1

    row = [r for r in read_metrics(run) if r["epoch"] == 2 and r["split"] == "val"][0]
    assert row["Classifier/f1"] == pytest.approx(expected, abs=1e-6)
    result = run_cli("evaluate", str(run), "--epoch", "2", "--json", str(toy / "f1.json"), cwd=toy)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((toy / "f1.json").read_text())["metrics"]
    assert evaluated["Classifier/f1"] == pytest.approx(expected, abs=1e-6)
    assert loaded.evaluate()["metrics"]["Classifier/f1"] == pytest.approx(expected, abs=1e-6)
    # not a mean of batch values: the per-sample evals are unchanged beside it
    assert {"Classifier/ce", "Classifier/accuracy", "Classifier/Top2Accuracy"} <= set(evaluated)


def test_torchmetrics_values_are_epoch_level_only(f1_run: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run = f1_run
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert "val/Classifier/f1" in tags and "train_step/Classifier/ce" in tags
    assert "train_step/Classifier/f1" not in tags


def test_an_unknown_metric_class_is_one_line_with_did_you_mean(tmp_path: Path) -> None:
    toy = copy_project("toyproject", tmp_path / "toy")
    config = _config(toy, "typo.yml", {"torchmetrics.F1Scor": F1})
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "info_flow.Classifier.evals.torchmetrics.F1Scor: unknown torchmetrics metric" in line
    assert "did you mean 'torchmetrics.F1Score'?" in line
    assert not run_dirs(toy)


def test_init_args_arity_and_losses_are_checked_before_anything_runs(tmp_path: Path) -> None:
    toy = copy_project("toyproject", tmp_path / "toy")
    config = _config(
        toy,
        "bad.yml",
        {
            "torchmetrics.F1Score": {**F1, "init_args": {"task": "multiclass", "num_classes": 3, "averag": "macro"}},
            "auroc": {
                **F1,
                "logging_name": "auroc",
                "function": "torchmetrics.AUROC",
                "init_args": {"task": "multiclass", "num_classes": 3},
                "inputs": {**F1["inputs"], "extra": "dataset"},
            },
            "MultinomialAccuracy": {**F1, "logging_name": "accuracy"},  # a function given init_args
        },
    )
    raw = yaml.safe_load(config.read_text())
    raw["info_flow"]["Classifier"]["losses"]["torchmetrics.MeanSquaredError"] = {"inputs": {"a": "dataset"}}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_cli("train", str(config), cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    where = "error: info_flow.Classifier"
    assert len(lines) == 4, lines
    assert any(
        line.startswith(f"{where}.evals.torchmetrics.F1Score.init_args: torchmetrics.F1Score(") and "averag" in line
        for line in lines
    )
    assert any(
        line.startswith(f"{where}.evals.auroc.inputs: found 3 input(s); expected 2")
        and "torchmetrics.AUROC.update(preds, target)" in line
        for line in lines
    )
    assert any(line.startswith(f"{where}.evals.MultinomialAccuracy.init_args: only a torchmetrics") for line in lines)
    assert any(
        line.startswith(f"{where}.losses.torchmetrics.MeanSquaredError: unknown loss") and "epoch-level evals" in line
        for line in lines
    )


def test_lookup_and_vector_results() -> None:
    assert torchmetrics_class("torchmetrics.F1Score") is torchmetrics.F1Score
    for name in ("torchmetrics.Metric", "torchmetrics.functional", "torchmetrics.MetricCollection"):
        with pytest.raises(UserError, match="unknown torchmetrics metric"):
            torchmetrics_class(name)
    with pytest.raises(UserError) as err:
        build_metric("torchmetrics.Accuracy", {"task": "sideways"}, "info_flow.M.evals.acc")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("info_flow.M.evals.acc.init_args: ")

    # average: none gives one value per class, logged as <name>_<class>
    metric = build_metric("torchmetrics.F1Score", {"task": "multiclass", "num_classes": 3, "average": "none"}, "p")
    term = MetricTerm("Classifier/f1", "p", metric, [])
    preds, target = torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 1, 2, 1, 1])
    metric.update(preds[:2], target[:2])
    metric.update(preds[2:], target[2:])
    expected = f1_score(target.numpy(), preds.numpy(), average=None)
    values = term.values()
    assert list(values) == ["Classifier/f1_0", "Classifier/f1_1", "Classifier/f1_2"]
    assert list(values.values()) == pytest.approx(list(expected), abs=1e-6)


@pytest.mark.parametrize(
    "name, init_args",
    [
        ("torchmetrics.F1Score", {"task": "multiclass", "num_classes": 3}),
        ("torchmetrics.AUROC", {"task": "multiclass", "num_classes": 3}),
    ],
)
def test_metric_state_survives_a_stop_mid_epoch(name: str, init_args: dict) -> None:
    # AUROC keeps lists of tensors (cat states), F1 sums: both round-trip through a weights_only checkpoint
    def flow() -> Flow:
        metric = build_metric(name, init_args, "p")
        return Flow({}, {}, [], [], [], torch.device("cpu"), metrics=[MetricTerm("M/m", "p", metric, [])])

    gen = torch.Generator().manual_seed(0)
    preds, target = torch.rand(40, 3, generator=gen).softmax(-1), torch.randint(0, 3, (40,), generator=gen)
    whole = flow()
    whole.metrics[0].metric.update(preds, target)
    before, after = flow(), flow()
    before.metrics[0].metric.update(preds[:25], target[:25])
    buffer = io.BytesIO()
    torch.save(before.metrics_state_dict(), buffer)
    buffer.seek(0)
    gc.disable()  # from here, only reference counts free the flow
    try:
        after.load_metrics_state_dict(torch.load(buffer, weights_only=True))
        after.metrics[0].metric.update(preds[25:], target[25:])
        assert after.compute_metrics() == pytest.approx(whole.compute_metrics(), abs=1e-6)
        after.reset_metrics()
        after.metrics[0].metric.update(preds[:3], target[:3])
        assert after.metrics[0].metric._update_count == 1
        # No reference cycle keeps the flow (in a run: its models, and through a data-parallel
        # wrapper the process group's threads) alive once the run lets go of it.
        kept = weakref.ref(after)
        del after
        assert kept() is None
    finally:
        gc.enable()
