"""A loss's or eval's inputs are bound by name: a config written with its keys in another order
(sorted, say) computes the same values and trains the same weights; keys that name no argument keep
the older deep_learning tool's positional meaning; inputs that cannot be bound are one config line."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, run_dirs

from dlscaffold.losses import EVALS, LOSSES, spec_of
from dlscaffold.parts.flow import Flow, MetricTerm, Term, bound_routes
from dlscaffold.parts.signatures import input_order

SIZES = {"B": 4, "K": 3, "E": 2}


def example(shape: str, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A tensor fitting one declared input: dims by name (``*D``: (5,), ``...``: (B,)), values by kind."""
    dims = shape.split()
    size = [4] if dims == ["..."] else [5 if d.startswith("*") else SIZES[d] for d in dims]
    if kind == "class":
        return torch.randint(0, SIZES["K"], size, generator=generator)
    if kind == "binary":
        return torch.randint(0, 2, size, generator=generator).float()
    if kind in ("positive", "unit"):
        return torch.rand(size, generator=generator) + (0.1 if kind == "positive" else 0.0)
    return torch.randn(size, generator=generator)


def term_values(fn, name: str, keys: list[str], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The flow's values of one term whose ``inputs`` list ``keys`` (each from the dataset) in that order."""
    inputs = {key: "dataset" for key in keys}
    term = Term("M/term", f"info_flow.M.losses.{name}", fn, 1.0, bound_routes(inputs, ["M"], fn, name))
    flow = Flow(models={}, inputs={}, trained=[], losses=[term], evals=[])
    return flow.values([term], batch, {})


BUILTINS = sorted({*(("losses", n) for n in LOSSES), *(("evals", n) for n in EVALS)})


@pytest.mark.parametrize(("kind", "name"), BUILTINS, ids=[f"{k}-{n}" for k, n in BUILTINS])
def test_every_builtin_gives_the_same_values_whatever_the_order_of_its_input_keys(kind: str, name: str) -> None:
    fn = (LOSSES if kind == "losses" else EVALS)[name]
    declared = spec_of(fn).inputs
    generator = torch.Generator().manual_seed(0)
    batch = {i.name: example(i.shape, i.kind, generator) for i in declared}
    documented = [i.name for i in declared]
    expected = fn(*(batch[k] for k in documented))
    assert expected.shape[0] == SIZES["B"]
    orders = list(itertools.permutations(documented))  # sorted and reversed among them
    assert tuple(sorted(documented)) in orders
    for order in orders:
        assert input_order(fn, list(order), name) == (documented, None), order
        values = term_values(fn, name, list(order), batch)
        assert torch.equal(values["M/term"], expected), order


def test_sorted_keys_would_have_swapped_the_arguments_of_a_kl() -> None:
    """The case that motivates binding by name: sorted keys put target_logits first."""
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    batch = {"class_logits": student, "target_logits": teacher}
    kl = LOSSES["MultinomialKL"]
    sorted_keys = sorted(batch, reverse=True)  # ["target_logits", "class_logits"]
    assert not torch.equal(kl(teacher, student), kl(student, teacher))
    assert torch.equal(term_values(kl, "MultinomialKL", sorted_keys, batch)["M/term"], kl(student, teacher))


def test_a_torchmetrics_eval_is_bound_by_the_names_of_its_update_arguments() -> None:
    torchmetrics = pytest.importorskip("torchmetrics")
    generator = torch.Generator().manual_seed(2)
    batch = {"preds": torch.rand(6, generator=generator) + 0.5, "target": torch.rand(6, generator=generator) + 1.0}
    computed = {}
    for keys in (["preds", "target"], ["target", "preds"]):
        metric = torchmetrics.MeanAbsolutePercentageError()  # not symmetric in its two arguments
        routes = bound_routes(dict.fromkeys(keys, "dataset"), [], metric.update, "MeanAbsolutePercentageError.update")
        term = MetricTerm("M/mape", "info_flow.M.evals.mape", metric, routes)
        flow = Flow(models={}, inputs={}, trained=[], losses=[], evals=[], metrics=[term])
        flow.update_metrics(batch, {})
        computed[tuple(keys)] = flow.compute_metrics()["M/mape"]
    expected = float(((batch["preds"] - batch["target"]).abs() / batch["target"].abs()).mean())
    assert computed[("target", "preds")] == computed[("preds", "target")] == pytest.approx(expected)


def test_a_projects_function_is_bound_by_its_parameter_names_and_unnamed_keys_fill_the_rest() -> None:
    def distill(teacher, student, temperature_map):
        return teacher - 2 * student + 3 * temperature_map

    # by name, whatever the order
    assert input_order(distill, ["student", "temperature_map", "teacher"], "distill") == (
        ["teacher", "student", "temperature_map"],
        None,
    )
    # named keys bind by name; the others fill what is left, in the config's order
    assert input_order(distill, ["t", "student", "m"], "distill") == (["t", "student", "m"], None)
    assert input_order(distill, ["student", "t", "m"], "distill") == (["t", "student", "m"], None)
    # no key names a parameter: the config's order, as the older deep_learning tool passed them
    assert input_order(distill, ["c", "a", "b"], "distill") == (["c", "a", "b"], None)

    def variadic(first, *rest):
        return first

    assert input_order(variadic, ["z", "first", "y"], "variadic") == (["first", "z", "y"], None)


def test_inputs_that_cannot_be_bound_are_one_line_each() -> None:
    kl, nll = LOSSES["MultinomialKL"], LOSSES["MultinomialNLL"]
    _, gap = input_order(kl, ["target_logits"], "MultinomialKL")
    assert gap == (
        "the inputs name 'target_logits' of MultinomialKL(class_logits, target_logits) but none fills "
        "'class_logits' before it (the inputs fill its arguments from the first on); add an input named "
        "'class_logits', or name each input after its argument"
    )
    _, option = input_order(nll, ["class_logits", "label_smoothing"], "MultinomialNLL")
    assert option is not None and option.startswith(
        "'label_smoothing' is a keyword option of MultinomialNLL(class_logits, class_idx), not a tensor input; "
        "move it under options"
    )
    _, extra = input_order(kl, ["class_logits", "target_logits", "more"], "MultinomialKL")
    assert extra == "found 3 input(s); expected 2: MultinomialKL(class_logits, target_logits)"


# ------------------------------------------------------------------- through dlscaffold train

DISTILL_FILES = {
    "models.py": """
        from torch import nn


        class Student(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))

            def forward(self, features):
                return {"class_logits": self.net(features)}


        class Teacher(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(6, 4)

            def forward(self, features):
                return {"target_logits": 3 * self.net(features)}


        def get_ref_model_dict():
            return {"Teacher": Teacher, "Student": Student}
    """,
    "dataloader.py": """
        import numpy as np
        import torch


        class CustomDataSet(torch.utils.data.Dataset):
            def __init__(self, cfg):
                rng = np.random.default_rng(0)
                self.features = rng.normal(size=(60, 6)).astype("float32")

            def __len__(self):
                return len(self.features)

            def __getitem__(self, i):
                return {"features": self.features[i]}
    """,
}


def distill_project(root: Path, kl_inputs: dict[str, str], **more: object) -> Path:
    root.mkdir()
    for name, text in DISTILL_FILES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    config = {
        "dataloading_params": {"val_ratio": 0.2, "dev_num": 4, "num_workers": 0, "batch_size": 8},
        "training_params": {"seed": 5, "lrn_rate": 0.05, "max_training_epochs": 2, "use_GPU": False},
        "logging_params": {"logging_dir": "runs", "trackers": []},
        "info_flow": {
            "Teacher": {"train": 0, "inputs": {"features": "dataset"}},
            "Student": {
                "train": 1,
                "inputs": {"features": "dataset"},
                "losses": {"MultinomialKL": {"inputs": kl_inputs, **more}},
            },
        },
    }
    (root / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def trained_student(project: Path) -> dict[str, torch.Tensor]:
    result = run_cli("train", "config.yml", cwd=project)
    assert result.returncode == 0, result.stderr
    return torch.load(run_dirs(project)[-1] / "checkpoints" / "Student_000002.pt", weights_only=True)


def test_a_kl_with_its_input_keys_swapped_trains_bitwise_the_same_student(tmp_path: Path) -> None:
    documented = trained_student(
        distill_project(tmp_path / "documented", {"class_logits": "Student", "target_logits": "Teacher"})
    )
    swapped = trained_student(
        distill_project(tmp_path / "swapped", {"target_logits": "Teacher", "class_logits": "Student"})
    )
    assert documented.keys() == swapped.keys()
    assert all(torch.equal(documented[k], swapped[k]) for k in documented)
    # keys naming no argument are positional, as in the older tool: here the teacher comes first,
    # so the student is trained on the other direction of the KL and ends elsewhere
    positional = trained_student(
        distill_project(
            tmp_path / "positional", {"teacher": "Teacher.target_logits", "student": "Student.class_logits"}
        )
    )
    assert not all(torch.equal(documented[k], positional[k]) for k in documented)


def test_inputs_that_do_not_bind_are_config_errors_reported_with_the_others(tmp_path: Path) -> None:
    project = distill_project(tmp_path / "bad", {"target_logits": "Teacher"}, options={"label_smoothing": 0.1})
    raw = yaml.safe_load((project / "config.yml").read_text())
    raw["training_params"]["lrn_rat"] = 0.1  # another problem, reported in the same run
    raw["info_flow"]["Student"]["losses"]["nll"] = {
        "function": "MultinomialNLL",
        "inputs": {"class_logits": "Student", "label_smoothing": "dataset.features"},
    }
    raw["info_flow"]["Student"]["evals"] = {
        "MultinomialEntropy": {"inputs": {"class_logits": "Student", "temperature": "dataset.features"}}
    }
    (project / "config.yml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_cli("train", "config.yml", cwd=project)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    where = "error: info_flow.Student"
    assert any(line.startswith("error: training_params.lrn_rat: unknown key") for line in errors), errors
    assert f"{where}.losses.MultinomialKL.inputs: the inputs name 'target_logits' of MultinomialKL(" in result.stderr
    assert f"{where}.losses.MultinomialKL.options: 'label_smoothing' is not an option of MultinomialKL" in result.stderr
    assert f"{where}.losses.nll.inputs: 'label_smoothing' is a keyword option of MultinomialNLL(" in result.stderr
    assert f"{where}.evals.MultinomialEntropy.inputs: found 2 input(s); expected 1" in result.stderr
    assert run_dirs(project) == []
