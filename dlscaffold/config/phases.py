"""The checks of how a step updates the models: ``training_params.phases`` (ordered update phases,
each a list of trained models) and a model's own ``accumulate``.

Every trained model is in exactly one phase, and a loss trains models of one phase only (its
``trains``, or every trained model it reaches): that phase back-propagates it. A model's own
``accumulate`` is a multiple of ``training_params.accumulate``, and a loss trains models that
accumulate alike. All problems come as one line each, with the config's other problems.
"""

from __future__ import annotations

from dlscaffold.config.schema import Config
from dlscaffold.errors import did_you_mean

# (the loss's key path, the trained models it reaches, its trains): what prepare's graph check finds
Reach = tuple[str, set[str], "list[str] | None"]


def phase_problems(config: Config, reaches: list[Reach], trained: list[str]) -> list[str]:
    """One line per problem of ``training_params.phases`` (none when it is not set)."""
    phases = config.training_params.phases
    if phases is None:
        return []
    where, problems, phase_of = "training_params.phases", [], {}
    if config.training_params.accumulate > 1:
        problems.append(
            f"{where}: cannot be combined with training_params.accumulate > 1 (each phase would need the whole "
            "group of batches again); use one of them"
        )
    for i, phase in enumerate(phases):
        if not phase:
            problems.append(f"{where}[{i}]: empty; list the trained models this phase updates, or remove it")
        for name in phase:
            if name not in config.info_flow:
                problems.append(
                    f"{where}[{i}]: unknown model '{name}'; {did_you_mean(name, trained)}expected trained models of "
                    f"info_flow: {', '.join(trained)}"
                )
            elif name not in trained:
                problems.append(
                    f"{where}[{i}]: {name} is not trained (train: 0), so no phase updates it; remove it from phases"
                )
            elif name in phase_of:
                problems.append(f"{where}: {name} is in two phases ({phase_of[name]} and {i}); list it in one")
            else:
                phase_of[name] = i
    for name in trained:
        if name not in phase_of and all(name not in phase for phase in phases):
            problems.append(f"{where}: trained model {name} is in no phase; add it to the phase that updates it")
    for path, reached, trains in reaches:
        models = [n for n in (trains if trains is not None else sorted(reached)) if n in phase_of]
        spans = sorted({phase_of[n] for n in models})
        if len(spans) > 1:
            named = ", ".join(f"{n} (phase {phase_of[n]})" for n in models)
            problems.append(
                f"{path}: trains {named}, models of {len(spans)} phases; a loss trains the models of one phase: "
                "set its trains to those"
            )
    return problems


def phase_of_loss(models: list[str], phases: list[list[str]]) -> int | None:
    """The index of the phase whose models a loss trains (None: it trains no model of any phase)."""
    for i, phase in enumerate(phases):
        if any(n in phase for n in models):
            return i
    return None


def accumulate_problems(config: Config, reaches: list[Reach], trained: list[str]) -> list[str]:
    """One line per problem of the models' own ``accumulate`` (none when no model sets it)."""
    tp, flow = config.training_params, config.info_flow
    own = {n: spec.accumulate for n, spec in flow.items() if spec.accumulate is not None and n in trained}
    if not own:
        return []
    problems = []
    for name, k in own.items():
        where = f"info_flow.{name}.accumulate"
        if k % tp.accumulate:
            problems.append(f"{where}: {k} is not a multiple of training_params.accumulate ({tp.accumulate})")
        if k != tp.accumulate and flow[name].update_every != 1:
            problems.append(f"{where}: cannot be combined with update_every on one model; use one of them")
    if any(k != tp.accumulate for k in own.values()):
        if tp.phases is not None:
            problems.append("training_params.phases: cannot be combined with a model's own accumulate; use one of them")
        if tp.precision == "fp16":
            problems.append(
                "training_params.precision: fp16 cannot be combined with a model's own accumulate (its gradient "
                "scale changes between its batches); use bf16 or fp32"
            )
    for path, reached, trains in reaches:
        models = [n for n in (trains if trains is not None else sorted(reached)) if n in trained]
        counts = {n: own.get(n, tp.accumulate) for n in models}
        if len(set(counts.values())) > 1:
            named = ", ".join(f"{n} ({k})" for n, k in counts.items())
            problems.append(
                f"{path}: trains models that accumulate different numbers of batches: {named}; set its trains to "
                "models that accumulate alike"
            )
    return problems
