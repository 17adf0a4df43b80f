"""What a training step does once instead of at every step, or in one kernel instead of several,
gives what the general calls give: the gradients' total norm, the finiteness flags, a built-in's
input check (done once per kind of input), errors of the project's code named as before, the
optimizers' multi-tensor implementation, bitwise the per-tensor one, and an optimizer's step called
without torch's profiler wrapper only where that wrapper has nothing else to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlscaffold.config.schema import OptimizerSpec, TrainingParams
from dlscaffold.errors import CodeError
from dlscaffold.losses import LOSSES
from dlscaffold.parts.flow import GUARD_MEMORY, Flow, Term
from dlscaffold.parts.optim import FOREACH_SAME, build_optimizer
from dlscaffold.parts.precision import step
from dlscaffold.run.trainer import Trainer

SPECIAL = (0.0, -0.0, 1.0, -3.0e38, 3.0e38, 1e-45, float("inf"), float("-inf"), float("nan"))


def trainer(params: list[torch.Tensor]) -> Trainer:
    return Trainer(None, {}, {}, "epoch", None, None, params=params)


def test_the_total_norm_is_torchs() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=gen) for shape in ((64, 8), (64,), (10, 64), (10,))]
    fused = trainer([nn.Parameter(g.clone()) for g in grads])
    assert torch.equal(fused._total_norm(grads), torch.nn.utils.get_total_norm(grads))
    assert fused._one_group  # one device, one dtype: the fused norm
    grads[1] = grads[1].double()  # two dtypes: torch's grouping, the same function
    mixed = trainer([nn.Parameter(g.clone()) for g in grads])
    assert torch.equal(mixed._total_norm(grads), torch.nn.utils.get_total_norm(grads))
    assert mixed._one_group is False
    for value in SPECIAL:  # the same value, NaN and inf included
        bad = [grads[0], torch.tensor([value, 1.0])]
        ours, torchs = fused._total_norm(bad), torch.nn.utils.get_total_norm(bad)
        assert torch.equal(ours, torchs) or (ours.isnan() and torchs.isnan()), value


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_finiteness_flags_are_isfinite(dtype: torch.dtype) -> None:
    t = trainer([])
    for losses in ((1.0,), (2.0, float("nan")), (float("inf"), 1.0), (0.0, -0.0, 5.0)):
        for norm in SPECIAL:
            for i, loss in enumerate(losses):
                t._ends_step(torch.tensor(loss, dtype=dtype, requires_grad=True), last=i == len(losses) - 1)
            finite_losses = all(torch.isfinite(torch.tensor(v, dtype=dtype)) for v in losses)
            expected = finite_losses and bool(torch.isfinite(torch.tensor(norm, dtype=dtype)))
            assert t._all_finite(torch.tensor(norm, dtype=dtype)) == expected, (losses, norm)
            assert t._losses_finite() == finite_losses, losses
            assert t.micro == 0


def test_a_builtin_checks_each_kind_of_input_once_and_still_refuses_one_that_does_not_fit() -> None:
    mse = LOSSES["MSE"]
    term = Term("M/mse", "info_flow.M.losses.MSE", mse, 1.0, [], unguarded=mse.__wrapped__)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(term.compute([a, b]), mse(a, b))
    assert len(term.passed) == 1
    assert torch.equal(term.compute([a, b]), mse(a, b))  # the same kind: no second check
    assert len(term.passed) == 1
    with pytest.raises(ValueError, match="same shape"):
        term.compute([a, torch.randn(4, 1)])  # a kind it has not passed is checked
    with pytest.raises(ValueError):
        term.compute([a, b.numpy()])  # not a tensor: checked, and refused
    for size in range(2, 2 + 2 * GUARD_MEMORY):  # kinds beyond its memory are checked every time
        term.compute([torch.randn(size, 3), torch.randn(size, 3)])
    assert len(term.passed) == GUARD_MEMORY


class Fails(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise RuntimeError("shapes\nmore")


def test_an_error_in_the_projects_code_names_it() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise KeyError("nope")

    flow = Flow({"M": Fails()}, {"M": [("x", "dataset", "x")]}, ["M"], [], [])
    with pytest.raises(CodeError, match=r"^info_flow\.M: M\.forward failed: RuntimeError: shapes$") as caught:
        flow.forward({"x": torch.zeros(2)})
    assert isinstance(caught.value.__cause__, RuntimeError)
    term = Term("M/x", "info_flow.M.evals.Broken", broken, 0.0, [("x", "dataset", "x")])
    with pytest.raises(CodeError, match=r"^info_flow\.M\.evals\.Broken failed: KeyError: 'nope'$"):
        flow.values([term], {"x": torch.zeros(2)}, {})


OPTIMIZER_CASES = [
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("AdamW", {}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("SGD", {"momentum": 0.9, "dampening": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.9}),
    ("Adagrad", {"lr_decay": 1e-3}),
    ("Adamax", {}),
    ("Adadelta", {}),
    ("Rprop", {}),
]


def _trained(name: str | None, kwargs: dict) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """A small MLP after 60 steps of the optimizer :func:`build_optimizer` makes (None: the default Adam)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    spec = {} if name is None else {"optimizer": OptimizerSpec(name=name, kwargs=kwargs)}
    optimizer = build_optimizer(model.parameters(), TrainingParams(lrn_rate=0.01, regularization_weight=1e-3, **spec))
    gen = torch.Generator().manual_seed(1)
    for _ in range(60):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()], optimizer


@pytest.mark.parametrize(("name", "kwargs"), [(None, {}), *OPTIMIZER_CASES])
def test_the_multi_tensor_optimizers_train_bitwise_as_the_per_tensor_loop(name: str | None, kwargs: dict) -> None:
    ours, optimizer = _trained(name, kwargs)
    assert optimizer.defaults["foreach"] is True
    if name is None:  # the default: Adam with training_params' betas
        tp = TrainingParams()
        name, kwargs = "Adam", {"betas": (tp.beta1, tp.beta2)}
    loop, per_tensor = _trained(name, {**kwargs, "foreach": False})  # the user's choice is kept
    assert per_tensor.defaults["foreach"] is False
    assert all(torch.equal(a, b) for a, b in zip(ours, loop, strict=True))


def test_only_the_optimizers_known_to_agree_bitwise_get_the_multi_tensor_implementation() -> None:
    assert {name for name, _ in OPTIMIZER_CASES} == FOREACH_SAME  # every one of them is tested above
    for name in ("NAdam", "RAdam", "ASGD"):  # round differently: torch's default
        assert _trained(name, {})[1].defaults["foreach"] is None
    assert _trained("SGD", {"fused": True})[1].defaults["foreach"] is None  # the user's choice of implementation


def _stepped(use: str, hooks: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """Weights and calls after 5 steps of Adam (with a scheduler), stepped by ``optimizer.step()`` or by
    :func:`step`, with step hooks of the optimizer's own and global ones when ``hooks``."""
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, foreach=True)
    calls: list[str] = []
    undo = []
    if hooks:
        undo += [optimizer.register_step_pre_hook(lambda *a: calls.append("pre")).remove]
        undo += [optimizer.register_step_post_hook(lambda *a: calls.append("post")).remove]
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        undo += [register_optimizer_step_pre_hook(lambda *a: calls.append("global")).remove]
    for _ in range(5):
        model(torch.randn(4, 8)).square().sum().backward()
        optimizer.step() if use == "torch" else step(optimizer)
        optimizer.zero_grad()
    for remove in undo:
        remove()
    return [p.detach().clone() for p in model.parameters()], calls


def test_an_optimizer_step_without_torchs_wrapper_computes_the_same_and_keeps_hooks_schedulers_profiles() -> None:
    ours, torchs = _stepped("ours")[0], _stepped("torch")[0]
    assert all(torch.equal(a, b) for a, b in zip(ours, torchs, strict=True))
    weights, calls = _stepped("ours", hooks=True)  # hooks: through the wrapper, which calls them
    assert calls == ["global", "pre", "post"] * 5
    assert all(torch.equal(a, b) for a, b in zip(weights, torchs, strict=True))
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # wraps the instance's step
    model(torch.ones(1, 2)).sum().backward()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would raise
        step(optimizer)
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.5
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step(optimizer)
    assert any(e.name == "Optimizer.step#SGD.step" for e in profile.events())  # profiled: annotated
