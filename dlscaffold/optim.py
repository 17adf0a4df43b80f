"""Optimizers and learning-rate schedulers, chosen by torch class name + kwargs.

Without ``training_params.optimizer`` every trained model gets the older deep_learning tool's
optimizer: ``Adam(lr=lrn_rate, betas=(beta1, beta2), weight_decay=regularization_weight)``. With
it, the named ``torch.optim`` class gets ``kwargs``; ``lr`` defaults to ``lrn_rate`` and
``weight_decay`` to ``regularization_weight`` where the class takes them.

``OneCycleLR`` without ``total_steps`` / ``epochs`` is given the run's length. The names and
kwargs are checked in the pre-run phase (:mod:`dlscaffold.prepare`) by building both on a dummy
parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from dlscaffold.config import TrainingParams

# Optimizers whose step needs a closure or sparse gradients: the loop cannot drive them.
UNSUPPORTED_OPTIMIZERS = ("LBFGS", "SparseAdam", "Optimizer")
# Schedulers that need a metric or other schedulers, which a config cannot give them.
UNSUPPORTED_SCHEDULERS = ("ReduceLROnPlateau", "LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler",
                          "LRScheduler")


def optimizer_names() -> list[str]:
    return [n for n, c in vars(torch.optim).items() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)
            and not n.startswith("_") and n not in UNSUPPORTED_OPTIMIZERS]


def scheduler_names() -> list[str]:
    module = torch.optim.lr_scheduler
    return [n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, module.LRScheduler)
            and not n.startswith("_") and n not in UNSUPPORTED_SCHEDULERS]


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
        return torch.optim.Adam(parameters, lr=params.lrn_rate, betas=(params.beta1, params.beta2),
                                weight_decay=params.regularization_weight)
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
