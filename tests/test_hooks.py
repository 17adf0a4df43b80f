"""Project hooks (``training_params.hooks``): counting events, eval mode and no gradients while a
hook runs, options checked against the signature, unknown names, one-line errors naming the
project line, state for resume, stop requests and ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_config
from torch import nn

from dlscaffold.config.schema import HookSpec, TrainingParams
from dlscaffold.errors import ConfigError, UserError
from dlscaffold.parts.hooks import HookContext, Hooks, build_hooks, hook_problems
from dlscaffold.prepare import prepare
from dlscaffold.project.code import load_project


def specs(*entries: dict[str, Any]) -> list[HookSpec]:
    return TrainingParams(hooks=list(entries)).hooks


def ctx(event: str, epoch: int = 1, step: int = 0, models: dict | None = None, **kw: Any) -> HookContext:
    return HookContext(event, epoch, step, models or {}, **kw)


class Config:
    """What hook_problems and build_hooks read of a config."""

    def __init__(self, *entries: dict[str, Any]):
        self.training_params = TrainingParams(hooks=list(entries))


class Recorder:
    """A hook object that keeps state: what it saw, saved and restored with the run."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, ctx: HookContext, tag: str = "") -> None:
        self.seen.append((ctx.event, ctx.epoch, ctx.step))

    def state_dict(self) -> dict[str, Any]:
        return {"seen": [list(s) for s in self.seen]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = [tuple(s) for s in state["seen"]]


class Tracked:
    def __init__(self) -> None:
        self.scalars: list[tuple[int, dict]] = []
        self.grids: list[tuple[int, dict]] = []

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        self.scalars.append((step, values))

    def images(self, step: int, grids: dict[str, Any]) -> None:
        self.grids.append((step, grids))


def test_every_counts_steps_epochs_validations_and_end_runs_once() -> None:
    rec = Recorder()
    hooks = Hooks(
        specs(
            {"name": "R", "event": "step", "every": 3},
            {"name": "R", "event": "epoch", "every": 2},
            {"name": "R", "event": "validation", "every": 2},
            {"name": "R", "event": "end"},
        ),
        {"R": rec},
    )
    for step in range(1, 10):
        hooks.fire("step", ctx("step", step=step))
    for epoch in range(1, 5):
        hooks.fire("epoch", ctx("epoch", epoch=epoch, step=10 * epoch))
    for n in range(5):  # validations 1..5, whatever their step
        hooks.fire("validation", ctx("validation", step=100 + n))
    hooks.fire("end", ctx("end", epoch=4, step=999))
    assert rec.seen == [
        ("step", 1, 3),
        ("step", 1, 6),
        ("step", 1, 9),
        ("epoch", 2, 20),
        ("epoch", 4, 40),
        ("validation", 1, 101),
        ("validation", 1, 103),
        ("end", 4, 999),
    ]


def test_hooks_of_one_event_run_in_config_order_with_their_options() -> None:
    calls = []
    fns = {"A": lambda ctx, tag="a": calls.append(tag), "B": lambda ctx, tag="b": calls.append(tag)}
    hooks = Hooks(
        specs(
            {"name": "B", "event": "step"},
            {"name": "A", "event": "step", "options": {"tag": "x"}},
            {"name": "A", "event": "epoch"},
        ),
        fns,
    )
    hooks.fire("step", ctx("step", step=1))
    assert calls == ["b", "x"]


def test_no_hooks_costs_nothing() -> None:
    hooks = Hooks([], {})
    assert not any(hooks.wants(event) for event in ("step", "validation", "epoch", "end"))
    assert hooks.fire("step", None) is None  # returns before reading the context
    assert Hooks(specs({"name": "A", "event": "epoch"}), {"A": lambda ctx: None}).wants("step") is False


def test_models_are_in_eval_mode_without_gradients_and_their_flags_come_back() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    frozen = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model[1].eval()  # one submodule in eval mode on its own
    frozen.eval()
    before = [m.training for m in (*model.modules(), *frozen.modules())]
    seen = []

    def look(ctx: HookContext) -> None:
        seen.append(([m.training for mod in ctx.models.values() for m in mod.modules()], torch.is_grad_enabled()))
        assert not model(torch.ones(3, 2)).requires_grad

    hooks = Hooks(specs({"name": "Look", "event": "step"}), {"Look": look})
    hooks.fire("step", ctx("step", step=1, models={"Model": model, "Frozen": frozen}))
    assert seen == [([False] * len(before), False)]
    assert [m.training for m in (*model.modules(), *frozen.modules())] == before
    assert torch.is_grad_enabled()


def test_flags_come_back_when_a_hook_fails() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    hooks = Hooks(specs({"name": "Bad", "event": "step"}), {"Bad": lambda ctx: 1 / 0})
    with pytest.raises(UserError):
        hooks.fire("step", ctx("step", step=1, models={"M": model}))
    assert all(m.training for m in model.modules()) and torch.is_grad_enabled()


def test_options_are_checked_against_the_signature() -> None:
    def grid(ctx, count=8, *, tag="samples"):
        pass

    def needs(ctx, count):
        pass

    def no_ctx(*, count=8):
        pass

    fns = {"Grid": grid, "Needs": needs, "NoCtx": no_ctx, "Rec": Recorder(), "Any": lambda ctx, **kw: None}
    config = Config(
        {"name": "Grid", "event": "step", "options": {"count": 4, "tag": "x"}},
        {"name": "Grid", "event": "step", "options": {"cont": 4}},
        {"name": "Needs", "event": "epoch"},
        {"name": "Needs", "event": "epoch", "options": {"count": 2}},
        {"name": "NoCtx", "event": "end"},
        {"name": "Rec", "event": "validation", "options": {"tag": "v"}},
        {"name": "Any", "event": "validation", "options": {"whatever": 1}},
    )
    problems = hook_problems(config, fns)
    assert problems == [
        "training_params.hooks[1].options: unexpected 'cont' (did you mean 'count'?); Grid takes (count, tag)",
        "training_params.hooks[2].options: missing required 'count'; Needs takes (count)",
        "training_params.hooks[4].options: NoCtx takes no positional argument for the context; "
        "expected def NoCtx(ctx, ...)",
    ]


def test_unknown_names_say_what_is_meant_and_what_there_is() -> None:
    config = Config({"name": "SampleGird", "event": "step"}, {"name": "Anneal", "event": "epoch"})
    (problem,) = hook_problems(config, {"SampleGrid": lambda ctx: None, "Anneal": lambda ctx: None})
    assert problem == (
        "training_params.hooks[0]: unknown hook 'SampleGird'; did you mean 'SampleGrid'? available: Anneal, SampleGrid"
    )
    for none in (None, {}):
        first, second = hook_problems(config, none)
        assert first.startswith("training_params.hooks[0]: unknown hook 'SampleGird'")
        assert "training_utils.py defines no get_project_hooks()" in first and second.startswith(
            "training_params.hooks[1]"
        )
    with pytest.raises(UserError, match="unknown hook 'SampleGird'"):
        Hooks(config.training_params.hooks, {"SampleGrid": lambda ctx: None, "Anneal": lambda ctx: None})


def test_a_state_dict_round_trip_continues_exactly() -> None:
    entries = ({"name": "R", "event": "validation", "every": 2}, {"name": "Plain", "event": "validation", "every": 3})
    first = Recorder()
    hooks = Hooks(specs(*entries), {"R": first, "Plain": lambda ctx: None})
    for step in range(1, 4):
        hooks.fire("validation", ctx("validation", step=step))
    state = hooks.state_dict()
    assert state["counts"]["validation"] == 3 and state["hooks"] == {"0:R": {"seen": [["validation", 1, 2]]}}

    again = Recorder()
    resumed = Hooks(specs(*entries), {"R": again, "Plain": lambda ctx: None})
    resumed.load_state_dict(state)
    for hooks_ in (hooks, resumed):
        for step in range(4, 8):
            hooks_.fire("validation", ctx("validation", step=step))
    assert again.seen == first.seen == [("validation", 1, 2), ("validation", 1, 4), ("validation", 1, 6)]
    assert resumed.state_dict() == hooks.state_dict()


def test_stop_is_returned_as_the_reason() -> None:
    def plateau(ctx: HookContext, patience: int = 2) -> None:
        if ctx.epoch >= patience:
            ctx.stop(f"no progress for {patience} epochs")

    hooks = Hooks(specs({"name": "Plateau", "event": "epoch"}), {"Plateau": plateau})
    assert hooks.fire("epoch", ctx("epoch", epoch=1)) is None
    assert hooks.fire("epoch", ctx("epoch", epoch=2)) == "no progress for 2 epochs"


def test_hooks_run_in_the_main_process_unless_they_ask_for_every_rank() -> None:
    calls = []

    def everywhere(ctx: HookContext) -> None:
        calls.append("everywhere")

    everywhere.all_ranks = True
    fns = {"Main": lambda ctx: calls.append("main"), "Every": everywhere}
    entries = ({"name": "Main", "event": "step"}, {"name": "Every", "event": "step"}, {"name": "Main", "event": "end"})
    other = Hooks(specs(*entries), fns, main=False)
    other.fire("step", ctx("step", step=1))
    assert calls == ["everywhere"] and not other.wants("end")
    Hooks(specs(*entries), fns, main=True).fire("step", ctx("step", step=1))
    assert calls == ["everywhere", "main", "everywhere"]
    assert Hooks.main_only(fns["Main"]) and not Hooks.main_only(everywhere)


def test_log_scalar_and_log_image_reach_the_trackers_at_the_step() -> None:
    def log(ctx: HookContext) -> None:
        ctx.log_scalar("hooks/mean", torch.tensor(0.5))
        ctx.log_image("hooks/grid", torch.rand(10, 1, 4, 4))

    tracked = Tracked()
    Hooks(specs({"name": "Log", "event": "step"}), {"Log": log}).fire("step", ctx("step", step=7, trackers=tracked))
    assert tracked.scalars == [(7, {"hooks/mean": 0.5})]
    ((step, grids),) = tracked.grids
    assert step == 7 and list(grids) == ["hooks/grid"]
    assert grids["hooks/grid"].shape == (1, 4 + 2 * 2, 8 * (4 + 2) + 2)  # the first 8, one row, padded
    assert 0.0 <= grids["hooks/grid"].min() and grids["hooks/grid"].max() <= 1.0


HOOKS_CODE = """

def ratio(ctx, scale=1.0):
    return scale / 0  # fails here


def bad_image(ctx):
    ctx.log_image("grid", torch.zeros(2, 5, 4, 4))


def get_project_hooks():
    return {"Ratio": ratio, "BadImage": bad_image}
"""


def _toy_with_hooks(toy: Path, code: str = HOOKS_CODE) -> Path:
    utils = toy / "training_utils.py"
    utils.write_text("import torch\n" + utils.read_text() + code)
    return utils


def test_a_failing_hook_is_one_line_naming_the_project_line(toy: Path) -> None:
    utils = _toy_with_hooks(toy)
    project = load_project(toy)
    assert set(project.hooks) == {"Ratio", "BadImage"}
    line = next(i for i, text in enumerate(utils.read_text().splitlines(), 1) if "fails here" in text)
    config = Config({"name": "BadImage", "event": "epoch"}, {"name": "Ratio", "event": "epoch"})
    hooks = build_hooks(config, project, main=True)
    with pytest.raises(UserError) as info:
        hooks.fire("epoch", ctx("epoch"))
    (problem,) = info.value.problems
    assert problem.startswith(
        "training_params.hooks[0] (BadImage): ValueError: log_image: 'grid' has shape (2, 5, 4, 4)"
    )
    assert "at training_utils.py:" in problem and "\n" not in problem

    hooks = build_hooks(Config({"name": "Ratio", "event": "epoch"}), project, main=True)
    with pytest.raises(UserError) as info:
        hooks.fire("epoch", ctx("epoch"))
    assert info.value.problems == [
        f"training_params.hooks[0] (Ratio): ZeroDivisionError: float division by zero at training_utils.py:{line} "
        "(rerun with --debug for the traceback)"
    ]


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("\ndef get_project_hooks():\n    return [print]\n", "returned a list"),
        ("\ndef get_project_hooks():\n    return {'A': 3}\n", "maps 'A' to a int"),
        ("\nget_project_hooks = {}\n", "get_project_hooks is a dict"),
        ("\ndef get_project_hooks():\n    raise KeyError('x')\n", "get_project_hooks() failed: KeyError"),
    ],
)
def test_get_project_hooks_must_return_a_dict_of_functions(toy: Path, code: str, found: str) -> None:
    _toy_with_hooks(toy, code)
    with pytest.raises(UserError) as info:
        load_project(toy)
    (problem,) = info.value.problems
    assert "training_utils.py" in problem and found in problem


def test_a_project_without_hooks_has_none(toy: Path) -> None:
    assert load_project(toy).hooks == {}


def test_prepare_reports_hook_problems_with_every_other_problem(toy: Path) -> None:
    _toy_with_hooks(toy)
    config = write_config(
        toy,
        "bad.yml",
        training_params__hooks=[
            {"name": "Ratoi", "event": "step"},
            {"name": "Ratio", "event": "end", "options": {"s": 1}},
            {"name": "Ratio", "evnt": "end"},
        ],
        training_params__lrn_rate=-1,
    )
    with pytest.raises(ConfigError) as info:
        prepare(config)
    problems = info.value.problems
    assert any("lrn_rate" in p for p in problems)
    # a misspelled key of an entry is one line (not also "event: missing")
    assert [p for p in problems if "hooks[2]" in p] == [
        "training_params.hooks[2].evnt: unknown key; did you mean 'event'? expected one of: name, event, every, options"
    ]
    assert (
        "training_params.hooks[0]: unknown hook 'Ratoi'; did you mean 'Ratio'? available: BadImage, Ratio" in problems
    )
    assert any(p.startswith("training_params.hooks[1].options: unexpected 's'") for p in problems)
