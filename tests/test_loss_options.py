"""``options:`` on a loss or eval: keyword arguments of its function (``label_smoothing`` of
MultinomialNLL), bound for every batch and checked against the signature before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_dirs, write_config

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.errors import ConfigError
from dlscaffold.prepare import prepare

SMOOTHING = "info_flow.Classifier.losses.MultinomialNLL.options.label_smoothing"


def test_label_smoothing_option_is_the_loss_the_run_logs(toy: Path) -> None:
    assert main(["train", str(toy / "config.yml"), "training_params.max_training_epochs=1", f"{SMOOTHING}=0.3"]) == 0
    (run_dir,) = run_dirs(toy)
    run = dlscaffold.load_run(run_dir)
    assert run.config.info_flow["Classifier"].losses["MultinomialNLL"].options == {"label_smoothing": 0.3}
    logged = run.evaluate("val")["metrics"]["Classifier/ce"]

    batch = [run.dataset()[i] for i in run.split["val"]]
    logits = run.forward(batch)["Classifier"]["class_logits"]
    labels = torch.as_tensor([item["class_idx"] for item in batch]).long()
    smoothed = F.cross_entropy(logits.float(), labels, label_smoothing=0.3).item()
    plain = F.cross_entropy(logits.float(), labels).item()
    assert logged == pytest.approx(smoothed, rel=1e-5)
    assert abs(smoothed - plain) > 1e-3  # the option changed the value


def test_unknown_option_is_one_line_naming_the_accepted_ones(toy: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(
        toy,
        "bad.yml",
        info_flow__Classifier__losses__MultinomialNLL__options={"label_smoothin": 0.2},
    )
    with pytest.raises(ConfigError) as info:
        prepare(config)
    (problem,) = [p for p in info.value.problems if ".options" in p]
    assert problem.startswith("info_flow.Classifier.losses.MultinomialNLL.options: 'label_smoothin'")
    assert "did you mean 'label_smoothing'" in problem and "its options: label_smoothing" in problem

    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "label_smoothin" in err and "Traceback" not in err
    assert not (toy / "runs").exists() or not run_dirs(toy)


def test_a_function_without_options_and_a_torchmetrics_eval_refuse_them(toy: Path) -> None:
    config = write_config(
        toy,
        "bad.yml",
        info_flow__Decoder__losses__MSE__options={"beta": 2.0},
        info_flow__Classifier__evals={
            "torchmetrics.Accuracy": {
                "init_args": {"task": "multiclass", "num_classes": 3},
                "options": {"top_k": 1},
                "inputs": {"preds": "Classifier", "target": "dataset.class_idx"},
            }
        },
    )
    with pytest.raises(ConfigError) as info:
        prepare(config)
    problems = "\n".join(info.value.problems)
    assert "info_flow.Decoder.losses.MSE.options: 'beta' is not an option of MSE (it takes no options)" in problems
    assert "info_flow.Classifier.evals.torchmetrics.Accuracy.options: a torchmetrics.<Class> eval takes" in problems


def test_a_project_function_takes_its_keyword_defaults_as_options() -> None:
    from dlscaffold.parts.signatures import options_problem

    def margin_loss(prediction, target, margin=1.0, *, power=2):
        return ((prediction - target).abs() - margin).clamp(min=0) ** power

    assert options_problem(margin_loss, {"margin": 0.5, "power": 1}, 2, "margin_loss") is None
    assert "'target' is not an option" in options_problem(margin_loss, {"target": 1}, 2, "margin_loss")


def test_options_bind_as_keywords_when_the_inputs_are_bound_by_name_in_another_order() -> None:
    from dlscaffold.losses import LOSSES
    from dlscaffold.parts.flow import Flow, Term, _with_options, bound_routes

    generator = torch.Generator().manual_seed(3)
    batch = {"prediction": torch.randn(5, 2, generator=generator), "target": torch.randn(5, 2, generator=generator)}
    fn = LOSSES["SmoothL1"]
    inputs = {"target": "dataset", "prediction": "dataset"}  # sorted keys
    term = Term("M/h", "info_flow.M.losses.SmoothL1", _with_options(fn, {"beta": 0.25}), 1.0, [])
    term.sources = bound_routes(inputs, ["M"], fn, "SmoothL1")
    values = Flow(models={}, inputs={}, trained=[], losses=[term], evals=[]).values([term], batch, {})
    expected = F.smooth_l1_loss(batch["prediction"], batch["target"], reduction="none", beta=0.25).mean(dim=1)
    assert torch.equal(values["M/h"], expected)
    assert not torch.equal(values["M/h"], fn(batch["prediction"], batch["target"]))  # beta 1: another value
