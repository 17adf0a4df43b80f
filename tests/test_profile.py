"""``dlscaffold profile``: a few training steps under torch.profiler, with a range per model's
forward and backward, per loss and per optimizer step; a table and a trace, and nothing else written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_config
from test_ema import ema_config
from test_multi_model import gan_project

from dlscaffold.cli import main

MODELS = ("Encoder", "Classifier", "Decoder")


def trace_events(path: Path) -> list[dict]:
    events = json.loads(path.read_text())["traceEvents"]
    return [e for e in events if str(e.get("name", "")).startswith("dlscaffold/") and e.get("ph") == "X"]


def names(path: Path) -> set[str]:
    return {e["name"] for e in trace_events(path)}


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_profile_times_each_model_loss_and_optimizer_step(toy: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    before, trace = listing(toy), tmp_path / "out" / "trace.json"
    trace.parent.mkdir()
    assert main(["profile", str(toy / "config.yml"), "--steps", "10", "--trace", str(trace)]) == 0
    found = names(trace)
    for model in MODELS:
        assert {f"dlscaffold/{model}/{part}" for part in ("forward", "backward", "optimizer_step")} <= found
    for loss in ("Classifier/ce", "Decoder/reconstruction"):
        assert {f"dlscaffold/loss/{loss}/forward", f"dlscaffold/loss/{loss}/backward"} <= found
    assert "dlscaffold/eval/Classifier/accuracy" in found
    assert sum(e["name"] == "dlscaffold/step" for e in trace_events(trace)) == 10
    out = capsys.readouterr().out
    table = {line.split()[0] for line in out.splitlines() if line.strip()}
    for model in MODELS:
        assert {f"{model}.forward", f"{model}.backward", f"{model}.optimizer_step"} <= table
    assert "data loading and other" in out and "100.0%" in out
    assert f"Trace: {trace}" in out and "ui.perfetto.dev" in out
    # nothing else written: no run folder, the project as it was, only the trace here
    assert not (toy / "runs").exists() and listing(toy) == before
    assert listing(tmp_path) == {"toy", "out", "out/trace.json", *(f"toy/{name}" for name in before)}


def test_backward_ranges_follow_the_gradient_from_the_losses_to_the_first_model(toy: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    assert main(["profile", str(toy / "config.yml"), "--steps", "3", "--warmup", "1", "--trace", str(trace)]) == 0
    events = trace_events(trace)
    for step in (e for e in events if e["name"] == "dlscaffold/step"):
        inside = [e for e in events if step["ts"] <= e["ts"] <= step["ts"] + step["dur"] and e is not step]
        backward = sorted((e for e in inside if e["name"].endswith("/backward")), key=lambda e: e["ts"])
        for earlier, later in zip(backward, backward[1:], strict=False):  # one at a time: they add up
            assert earlier["ts"] + earlier["dur"] <= later["ts"] + 1
        order = [e["name"].split("/")[1] for e in backward if e["name"].count("/") == 2]
        assert sorted(order[:2]) == ["Classifier", "Decoder"] and order[2:] == ["Encoder"]  # upstream last
        first_model = min(e["ts"] for e in backward if e["name"].count("/") == 2)
        assert all(e["ts"] < first_model for e in backward if e["name"].startswith("dlscaffold/loss/"))


def test_two_models_with_their_own_optimizer_schedules(tmp_path: Path, monkeypatch, capsys) -> None:
    gan = gan_project(tmp_path / "gan")  # Generator -> Critic; the generator updates every 5 steps
    monkeypatch.chdir(tmp_path)
    assert main(["profile", str(gan / "config.yml"), "--steps", "3", "--warmup", "0"]) == 0
    events = trace_events(tmp_path / "profile_trace.json")  # the default trace: here
    count = {name: sum(e["name"] == name for e in events) for name in {e["name"] for e in events}}
    assert count["dlscaffold/Critic/optimizer_step"] == 3 and count["dlscaffold/Generator/optimizer_step"] == 1
    assert count["dlscaffold/Generator/backward"] == 1 and count["dlscaffold/Generator/forward"] == 3
    out = capsys.readouterr().out
    assert "Generator.backward" in out and "Critic.backward" in out
    assert not (gan / "runs").exists()


def test_warm_up_and_profiled_steps_are_one_pass_of_the_loader(toy: Path, tmp_path: Path, monkeypatch) -> None:
    """With loader workers, the warm-up goes on into the profiled steps: the training loader's
    iterator (and its workers' start) is created once, before the profiler records, and the epoch
    goes on instead of starting again; the trace holds the profiled steps only, every range whole."""
    from dlscaffold import data
    from dlscaffold.run import loop

    config = write_config(toy, "workers.yml", dataloading_params__num_workers=1, dataloading_params__batch_size=8)
    iterators, calls = [], []
    original_iter, original_train_steps = data._Loader.__iter__, loop.train_steps

    def counted_iter(loader):
        iterators.append(torch.autograd._profiler_enabled())  # made while the profiler records?
        return original_iter(loader)

    def kept(session, steps):
        calls.append((session, session.epoch or session.start_epoch, steps))
        return original_train_steps(session, steps)

    monkeypatch.setattr(data._Loader, "__iter__", counted_iter)
    monkeypatch.setattr(loop, "train_steps", kept)
    trace = tmp_path / "trace.json"
    assert main(["profile", str(config), "--steps", "10", "--warmup", "3", "--trace", str(trace)]) == 0
    [(session, epoch, steps)] = calls  # one pass: the warm-up and the profiled steps together
    assert steps == 13 and iterators == [False]  # one iterator, made before the profiler started
    assert session.trainer.step == 13 and session.epoch == epoch and session.position.batches == 13
    events = trace_events(trace)
    assert sum(e["name"] == "dlscaffold/step" for e in events) == 10
    assert all(e["dur"] >= 0 for e in events)


def test_every_hook_and_wrapper_is_removed(toy: Path) -> None:
    from dlscaffold.run.loop import train_steps
    from dlscaffold.tools.profile import Spans
    from dlscaffold.train import built_session

    def attached(session) -> int:
        flow, trainer = session.run.flow, session.trainer
        models = flow.models.values()
        hooks = [m._forward_hooks for m in models] + [m._forward_pre_hooks for m in models]
        hooks += [p._post_accumulate_grad_hooks or {} for m in models for p in m.parameters()]
        hooks += [o._optimizer_step_pre_hooks for o in trainer.optimizers.values()]
        hooks += [o._optimizer_step_post_hooks for o in trainer.optimizers.values()]
        patched = [t for t in flow.losses + flow.evals if "compute" in vars(t)] + ["train_step" in vars(trainer)]
        return sum(map(len, hooks)) + sum(map(bool, patched))

    with built_session(toy / "config.yml") as session:
        spans = Spans(session)
        with torch.profiler.profile(), spans.attached(2):
            assert attached(session) > 0
            train_steps(session, 2)
        assert attached(session) == 0
        train_steps(session, 1)  # the run steps on as before
    assert not (toy / "runs").exists()


@pytest.mark.parametrize("problem", ["config", "torchrun", "trace"])
def test_a_problem_is_one_line_and_exit_2(problem: str, toy: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    config, trace = toy / "config.yml", tmp_path / "trace.json"
    if problem == "config":
        config = write_config(toy, "bad.yml", training_params__lrn_rate="fast")
    elif problem == "torchrun":
        monkeypatch.setenv("WORLD_SIZE", "2")
    else:
        trace = tmp_path / "missing" / "trace.json"
    assert main(["profile", str(config), "--trace", str(trace)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert {"config": "lrn_rate", "torchrun": "torchrun", "trace": "missing"}[problem] in err[0]
    assert not trace.exists() and not (toy / "runs").exists()


def test_an_ema_model_has_its_update_row(toy: Path, tmp_path: Path, capsys) -> None:
    """A mean teacher (``ema_of``): the Teacher's forward and its EMA update after the step are rows."""
    trace = tmp_path / "trace.json"
    assert main(["profile", str(ema_config(toy)), "--steps", "4", "--warmup", "1", "--trace", str(trace)]) == 0
    assert {"dlscaffold/Teacher/forward", "dlscaffold/Teacher/ema_update"} <= names(trace)
    table = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert table.index("Teacher.ema_update") == table.index("Teacher.forward") + 1
