"""Optimizers and learning-rate schedulers, chosen by torch class name + kwargs.

Without ``training_params.optimizer`` every trained model gets the older deep_learning tool's
optimizer: ``Adam(lr=lrn_rate, betas=(beta1, beta2), weight_decay=regularization_weight)``. With
it, the named ``torch.optim`` class gets ``kwargs``; ``lr`` defaults to ``lrn_rate`` and
``weight_decay`` to ``regularization_weight`` where the class takes them.

``OneCycleLR`` without ``total_steps`` / ``epochs`` is given the run's length. Before training,
:func:`check_settings` builds both on a dummy parameter and steps them (the pre-run phase of
``train`` calls it, :mod:`dlscaffold.prepare`); nothing else builds an optimizer outside training.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from dlscaffold.config import Config, TrainingParams
from dlscaffold.errors import available, did_you_mean, first_line
from dlscaffold.signatures import kwargs_problem

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


def build_optimizer(parameters: Iterable[torch.nn.Parameter], params: TrainingParams) -> torch.optim.Optimizer:
    if params.optimizer is None:
        return torch.optim.Adam(
            parameters,
            lr=params.lrn_rate,
            betas=(params.beta1, params.beta2),
            weight_decay=params.regularization_weight,
        )
    cls = getattr(torch.optim, params.optimizer.name)
    return cls(parameters, **_optimizer_kwargs(cls, params))


def build_scheduler(optimizer: torch.optim.Optimizer, params: TrainingParams, steps_per_epoch: int) -> Any | None:
    spec = params.lr_scheduler
    if spec is None:
        return None
    kwargs = dict(spec.kwargs)
    if spec.name == "OneCycleLR" and "total_steps" not in kwargs and "epochs" not in kwargs:
        per_epoch = steps_per_epoch if spec.interval == "step" else 1
        kwargs["total_steps"] = params.max_training_epochs * per_epoch
    return getattr(torch.optim.lr_scheduler, spec.name)(optimizer, **kwargs)


# ---------------------------------------------------------------------------------- checking


def check_settings(config: Config) -> list[str]:
    """Build the optimizer and scheduler on a dummy parameter and take two steps: every setting
    torch rejects is found before anything is built or written. Returns the problems, one line each."""
    tp = config.training_params
    optimizer, problems = _check_optimizer(tp)
    spec, where = tp.lr_scheduler, "training_params.lr_scheduler"
    if spec is None:
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
        return [f"{where}: the scheduler rejects its settings ({first_line(exc)})"]
    return []


def _check_optimizer(tp: TrainingParams) -> tuple[torch.optim.Optimizer | None, list[str]]:
    """The optimizer built on a dummy parameter (None when it cannot be), and its problems."""
    spec, where = tp.optimizer, "training_params.optimizer"
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
        key = where if spec else "training_params"
        return None, [f"{key}: the optimizer rejects its settings ({first_line(exc)})"]
