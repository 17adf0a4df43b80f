"""Optimizers and learning-rate schedulers, chosen by torch class name + kwargs.

Without ``training_params.optimizer`` every trained model gets the seed's optimizer:
``Adam(lr=lrn_rate, betas=(beta1, beta2), weight_decay=regularization_weight)``. With it, the named
``torch.optim`` class gets ``kwargs``; ``lr`` defaults to ``lrn_rate`` and ``weight_decay`` to
``regularization_weight`` where the class takes them.

``OneCycleLR`` without ``total_steps`` / ``epochs`` is given the run's length.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from dlscaffold.checks import kwargs_problem
from dlscaffold.config import TrainingParams
from dlscaffold.errors import available, did_you_mean


def _class(module: Any, name: str) -> type | None:
    cls = getattr(module, name, None)
    return cls if isinstance(cls, type) else None


def _names(module: Any, base: type) -> list[str]:
    return [n for n in dir(module) if isinstance(getattr(module, n), type) and issubclass(getattr(module, n), base)
            and not n.startswith("_") and getattr(module, n) is not base]


def check_optim(params: TrainingParams) -> list[str]:
    """Problems with the optimizer / scheduler names and kwargs (checked before building)."""
    problems = []
    spec = params.optimizer
    if spec is not None:
        cls = _class(torch.optim, spec.name)
        if cls is None or not issubclass(cls, torch.optim.Optimizer):
            names = _names(torch.optim, torch.optim.Optimizer)
            problems.append(f"training_params.optimizer.name: unknown optimizer '{spec.name}'; {did_you_mean(spec.name, names)}{available(names)}")
        else:
            problem = kwargs_problem(cls, _optimizer_kwargs(cls, params), spec.name, skip_first=True)
            problems += [f"training_params.optimizer.kwargs: {problem}"] if problem else []
    sched = params.lr_scheduler
    if sched is not None:
        module = torch.optim.lr_scheduler
        cls = _class(module, sched.name)
        base = module.LRScheduler
        if cls is None or not issubclass(cls, base) or sched.name == "ReduceLROnPlateau":
            names = [n for n in _names(module, base) if n not in ("ReduceLROnPlateau", "LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler")]
            problems.append(f"training_params.lr_scheduler.name: unsupported scheduler '{sched.name}'; {did_you_mean(sched.name, names)}{available(names)}")
        else:
            kwargs = dict(sched.kwargs)
            if sched.name == "OneCycleLR" and "total_steps" not in kwargs and "epochs" not in kwargs:
                kwargs["total_steps"] = 1
            problem = kwargs_problem(cls, kwargs, sched.name, skip_first=True)
            problems += [f"training_params.lr_scheduler.kwargs: {problem}"] if problem else []
    return problems


def _optimizer_kwargs(cls: type, params: TrainingParams) -> dict[str, Any]:
    accepted = inspect.signature(cls).parameters
    kwargs = {}
    if "lr" in accepted:
        kwargs["lr"] = params.lrn_rate
    if "weight_decay" in accepted:
        kwargs["weight_decay"] = params.regularization_weight
    return {**kwargs, **params.optimizer.kwargs}


def build_optimizer(model: nn.Module, params: TrainingParams) -> torch.optim.Optimizer:
    if params.optimizer is None:
        return torch.optim.Adam(model.parameters(), lr=params.lrn_rate, betas=(params.beta1, params.beta2),
                                weight_decay=params.regularization_weight)
    cls = getattr(torch.optim, params.optimizer.name)
    return cls(model.parameters(), **_optimizer_kwargs(cls, params))


def build_scheduler(optimizer: torch.optim.Optimizer, params: TrainingParams, steps_per_epoch: int) -> Any | None:
    spec = params.lr_scheduler
    if spec is None:
        return None
    kwargs = dict(spec.kwargs)
    if spec.name == "OneCycleLR" and "total_steps" not in kwargs and "epochs" not in kwargs:
        per_epoch = steps_per_epoch if spec.interval == "step" else 1
        kwargs["total_steps"] = params.max_training_epochs * per_epoch
    return getattr(torch.optim.lr_scheduler, spec.name)(optimizer, **kwargs)
