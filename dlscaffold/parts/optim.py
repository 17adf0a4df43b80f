"""Optimizers and learning-rate schedulers, chosen by torch class name + kwargs.

Without ``training_params.optimizer`` every trained model gets the older deep_learning tool's
optimizer: ``Adam(lr=lrn_rate, betas=(beta1, beta2), weight_decay=regularization_weight)``. With
it, the named ``torch.optim`` class gets ``kwargs``; ``lr`` defaults to ``lrn_rate`` and
``weight_decay`` to ``regularization_weight`` where the class takes them.

A model's own ``optimizer``, ``lr_scheduler`` and ``grad_clip_norm`` in ``info_flow`` replace
``training_params``' for it (:func:`model_params`); its ``param_groups`` split its parameters into
groups by glob (:func:`param_groups`): each group's ``lr`` is the optimizer's times ``lr_scale``,
and ``lr_scale`` and ``epochs`` stay in the group (so the trainer checkpoint shows them).

``OneCycleLR`` without ``total_steps`` / ``epochs`` is given the run's length. Before training,
:func:`check_settings` builds both on a dummy parameter and steps them (the pre-run phase of
``train`` calls it, :mod:`dlscaffold.prepare`); nothing else builds an optimizer outside training.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from dlscaffold.config import Config, ModelSpec, TrainingParams
from dlscaffold.errors import ConfigError, available, did_you_mean, first_line
from dlscaffold.parts.signatures import kwargs_problem

# Optimizers whose step needs a closure or sparse gradients: the loop cannot drive them.
UNSUPPORTED_OPTIMIZERS = ("LBFGS", "SparseAdam", "Optimizer")
# Schedulers that need a metric or other schedulers, which a config cannot give them.
UNSUPPORTED_SCHEDULERS = (
    "ReduceLROnPlateau",
    "LambdaLR",
    "MultiplicativeLR",
    "SequentialLR",
    "ChainedScheduler",
    "LRScheduler",
)


def optimizer_names() -> list[str]:
    return [
        n
        for n, c in vars(torch.optim).items()
        if isinstance(c, type)
        and issubclass(c, torch.optim.Optimizer)
        and not n.startswith("_")
        and n not in UNSUPPORTED_OPTIMIZERS
    ]


def scheduler_names() -> list[str]:
    module = torch.optim.lr_scheduler
    return [
        n
        for n, c in vars(module).items()
        if isinstance(c, type)
        and issubclass(c, module.LRScheduler)
        and not n.startswith("_")
        and n not in UNSUPPORTED_SCHEDULERS
    ]


def _optimizer_kwargs(cls: type, params: TrainingParams) -> dict[str, Any]:
    accepted = inspect.signature(cls).parameters
    kwargs = {}
    if "lr" in accepted:
        kwargs["lr"] = params.lrn_rate
    if "weight_decay" in accepted:
        kwargs["weight_decay"] = params.regularization_weight
    return {**kwargs, **params.optimizer.kwargs}


# Optimizers whose multi-tensor ("foreach") implementation computes bitwise what their per-tensor loop
# computes (tests/test_step_shortcuts.py holds them to it). torch picks it by itself only for GPU
# tensors; on a CPU it makes one call per operation instead of one per operation and tensor, which
# for a small model is a large share of the step. NAdam, RAdam and ASGD round differently: left alone.
FOREACH_SAME = frozenset({"Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "Adadelta", "Rprop"})
_IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "differentiable")  # a choice of the user's: kept


def build_optimizer(parameters: Iterable[Any], params: TrainingParams) -> torch.optim.Optimizer:
    """The optimizer over ``parameters`` (tensors, or groups as from :func:`param_groups`); one of
    :data:`FOREACH_SAME` with ``foreach=True`` unless the config chooses an implementation."""
    if params.optimizer is None:
        optimizer = torch.optim.Adam(
            parameters,
            lr=params.lrn_rate,
            betas=(params.beta1, params.beta2),
            weight_decay=params.regularization_weight,
            foreach=True,
        )
    else:
        cls = getattr(torch.optim, params.optimizer.name)
        kwargs = _optimizer_kwargs(cls, params)
        if cls.__name__ in FOREACH_SAME and not any(k in kwargs for k in _IMPLEMENTATION_KEYS):
            kwargs["foreach"] = True
        optimizer = cls(parameters, **kwargs)
    for group in optimizer.param_groups:
        if "lr_scale" in group:
            group["lr"] = group["lr"] * group["lr_scale"]
    return optimizer


def model_params(tp: TrainingParams, spec: ModelSpec) -> TrainingParams:
    """``training_params`` with a model's own ``optimizer``, ``lr_scheduler`` and ``grad_clip_norm``."""
    own = {k: v for k in ("optimizer", "lr_scheduler", "grad_clip_norm") if (v := getattr(spec, k)) is not None}
    return tp.model_copy(update=own) if own else tp


def param_groups(model: torch.nn.Module, spec: ModelSpec, name: str) -> list[Any]:
    """A model's parameters, grouped by its ``param_groups`` (first match wins; the parameters no
    glob matches form a last, plain group); without ``param_groups`` just its parameters."""
    if not spec.param_groups:
        return list(model.parameters())
    named = dict(model.named_parameters())
    left, groups, problems = dict(named), [], []
    for i, group in enumerate(spec.param_groups):
        where = f"info_flow.{name}.param_groups[{i}].params"
        matched = [n for n in named if fnmatch.fnmatchcase(n, group.params)]
        taken = [n for n in matched if n in left]
        if not matched:
            shown = ", ".join(list(named)[:8]) + (", ..." if len(named) > 8 else "")
            problems.append(f"{where}: '{group.params}' matches no parameter of {name}; its parameters: {shown}")
        elif not taken:
            problems.append(
                f"{where}: '{group.params}' matches only parameters an earlier group took (the first "
                "matching group wins); remove it or narrow the earlier glob"
            )
        else:
            extra = {"epochs": list(group.epochs)} if group.epochs else {}
            groups.append(
                {"params": [left.pop(n) for n in taken], "lr_scale": group.lr_scale, **extra, **group.options}
            )
    if problems:
        raise ConfigError(*problems)
    return groups + ([{"params": list(left.values())}] if left else [])


def build_scheduler(optimizer: torch.optim.Optimizer, params: TrainingParams, steps_per_epoch: int) -> Any | None:
    spec = params.lr_scheduler
    if spec is None:
        return None
    kwargs = dict(spec.kwargs)
    if spec.name == "OneCycleLR" and "total_steps" not in kwargs and "epochs" not in kwargs:
        per_epoch = steps_per_epoch if spec.interval == "step" else 1
        kwargs["total_steps"] = params.max_training_epochs * per_epoch
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    if spec.name == "OneCycleLR" and isinstance(kwargs.get("max_lr"), (int, float)) and set(scales) != {1.0}:
        kwargs["max_lr"] = [kwargs["max_lr"] * s for s in scales]  # each group keeps its lr_scale
    return getattr(torch.optim.lr_scheduler, spec.name)(optimizer, **kwargs)


# ---------------------------------------------------------------------------------- checking


def check_settings(config: Config) -> list[str]:
    """Build the optimizer and scheduler on a dummy parameter and take two steps: every setting
    torch rejects is found before anything is built or written, for ``training_params`` and for each
    trained model with its own settings or ``param_groups``. Returns the problems, one line each."""
    tp = config.training_params
    problems = _check_one(tp, "training_params", tp)
    for name, spec in config.info_flow.items():
        own = model_params(tp, spec)
        if spec.train and (own is not tp or spec.param_groups):
            problems += _check_one(own, f"info_flow.{name}", tp, spec)
    return problems


def _check_one(tp: TrainingParams, prefix: str, base: TrainingParams, model: ModelSpec | None = None) -> list[str]:
    """The problems of one optimizer + scheduler (``prefix``: where the settings are), only those
    of the settings ``prefix`` itself sets."""
    inherited = prefix != "training_params"
    optimizer, problems = _check_optimizer(tp, prefix)
    if inherited and tp.optimizer is base.optimizer:
        problems = []  # training_params' own check reports those
    if model is not None and model.param_groups:
        problems += _group_problems(tp, prefix, model)
    spec, where = tp.lr_scheduler, f"{prefix}.lr_scheduler"
    if spec is None or (inherited and spec is base.lr_scheduler and tp.optimizer is base.optimizer):
        return problems
    names = scheduler_names()
    if spec.name not in names:
        return [
            *problems,
            f"{where}.name: unsupported scheduler '{spec.name}'; {did_you_mean(spec.name, names)}{available(names)}",
        ]
    milestones = spec.kwargs.get("milestones")
    if milestones is not None and not (
        isinstance(milestones, list)
        and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones)
    ):
        return [*problems, f"{where}.kwargs.milestones: found {milestones!r}; expected a list of positive integers"]
    kwargs = dict(spec.kwargs, **({"total_steps": 1} if spec.name == "OneCycleLR" else {}))
    problem = kwargs_problem(getattr(torch.optim.lr_scheduler, spec.name), kwargs, spec.name, skip_first=True)
    if problem or optimizer is None:
        return [*problems, *([f"{where}.kwargs: {problem}"] if problem else [])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            scheduler = build_scheduler(optimizer, tp, steps_per_epoch=2)
            for _ in range(2):
                optimizer.step()
                scheduler.step()
    except Exception as exc:
        return [*problems, f"{where}: the scheduler rejects its settings ({first_line(exc)})"]
    return problems


def _group_problems(tp: TrainingParams, prefix: str, model: ModelSpec) -> list[str]:
    """Each ``param_groups`` option the optimizer has no setting for, or whose value it rejects."""
    try:
        options = build_optimizer([torch.nn.Parameter(torch.zeros(2))], tp).defaults
    except Exception:
        return []  # the optimizer's own line says why
    problems = []
    for i, group in enumerate(model.param_groups):
        where = f"{prefix}.param_groups[{i}]"
        unknown = [k for k in group.options if k not in options or k == "params"]
        if unknown:
            name = tp.optimizer.name if tp.optimizer else "Adam"
            problems.append(
                f"{where}: {name} has no group option {', '.join(map(repr, unknown))}; "
                f"expected params, lr_scale, epochs or one of: {', '.join(k for k in options if k != 'params')}"
            )
            continue
        if group.epochs and not 1 <= group.epochs[0] <= group.epochs[1]:
            problems.append(f"{where}.epochs: found {group.epochs}; expected [first, last] with 1 <= first <= last")
        try:
            params = {"params": [torch.nn.Parameter(torch.zeros(2))], "lr_scale": group.lr_scale, **group.options}
            optimizer = build_optimizer([params], tp)
            optimizer.param_groups[0]["params"][0].grad = torch.ones(2)
            optimizer.step()
        except Exception as exc:
            problems.append(f"{where}: the optimizer rejects the group's settings ({first_line(exc)})")
    return problems


def _check_optimizer(
    tp: TrainingParams, prefix: str = "training_params"
) -> tuple[torch.optim.Optimizer | None, list[str]]:
    """The optimizer built on a dummy parameter (None when it cannot be), and its problems."""
    spec, where = tp.optimizer, f"{prefix}.optimizer"
    if spec is not None:
        if spec.name in UNSUPPORTED_OPTIMIZERS:
            return None, [
                f"{where}.name: found '{spec.name}', which the training loop cannot step (it needs a "
                f"closure, sparse gradients or is a base class); {available(optimizer_names())}"
            ]
        if spec.name not in optimizer_names():
            names = optimizer_names()
            return None, [
                f"{where}.name: unknown optimizer '{spec.name}'; {did_you_mean(spec.name, names)}{available(names)}"
            ]
        problem = kwargs_problem(getattr(torch.optim, spec.name), spec.kwargs, spec.name, skip_first=True)
        if problem:
            return None, [f"{where}.kwargs: {problem}"]
    try:
        return build_optimizer([torch.nn.Parameter(torch.zeros(2))], tp), []
    except Exception as exc:  # the class's own check of its values, e.g. lr < 0
        key = where if spec else prefix
        return None, [f"{key}: the optimizer rejects its settings ({first_line(exc)})"]
