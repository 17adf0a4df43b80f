"""EMA models: a model of ``info_flow`` that holds the moving average of an earlier model's weights.

``Teacher: {ema_of: Student, decay: 0.999}`` builds a copy of ``Student`` (same class and
``init_args``, starting from its initial weights, :func:`dlscaffold.parts.flow.build_flow`) that no
optimizer steps: after every ``every``-th optimizer step of ``Student``,
``ema = decay * ema + (1 - decay) * weights`` for every parameter and floating-point buffer; integer
buffers (BatchNorm's ``num_batches_tracked``) are copied. With ``decay_ramp: p > 0`` the decay used
is ``decay * (step / total_steps) ** p`` (``step``: the source's optimizer steps so far,
``total_steps``: ``max_training_epochs`` x steps per epoch), so the average follows the weights
closely early on. ``write_back: true`` copies the average back into the source after each update
(Lookahead). An EMA model runs in eval mode, like a frozen model, and is saved, resumed and loaded
like any model; its update count is the trainer's count of the source's optimizer steps, which the
trainer checkpoint holds, so a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Average:
    """One EMA model and the model it averages."""

    name: str
    source: str
    decay: float
    every: int
    decay_ramp: float
    write_back: bool
    floats: tuple[list[torch.Tensor], list[torch.Tensor]]  # (average, source): parameters, float buffers
    others: tuple[list[torch.Tensor], list[torch.Tensor]]  # integer / bool buffers, copied

    def decay_at(self, step: int, total_steps: int) -> float:
        if self.decay_ramp <= 0:
            return self.decay
        return self.decay * min(1.0, step / max(total_steps, 1)) ** self.decay_ramp

    def update(self, step: int, total_steps: int) -> None:
        """Fold the source's current weights into the average (``step``: its optimizer steps so far)."""
        average, weights = self.floats
        with torch.no_grad():
            if average:  # lerp_(w, 1 - d) = d * avg + (1 - d) * w; weight 1 gives exactly w, weight 0 keeps avg
                torch._foreach_lerp_(average, weights, 1.0 - self.decay_at(step, total_steps))
            if self.others[0]:
                torch._foreach_copy_(self.others[0], self.others[1])
            if self.write_back and (weights or self.others[1]):
                torch._foreach_copy_([*weights, *self.others[1]], [*average, *self.others[0]])


def _tensors(average: nn.Module, source: nn.Module) -> tuple[tuple[list, list], tuple[list, list]]:
    """Matching (average, source) tensors of two modules of the same structure: the floating-point
    ones (parameters, running statistics), and the others (counters)."""
    pairs = [
        *zip(average.parameters(), source.parameters(), strict=True),
        *zip(average.buffers(), source.buffers(), strict=True),
    ]
    floats = [pair for pair in pairs if pair[0].is_floating_point()]
    others = [pair for pair in pairs if not pair[0].is_floating_point()]
    return ([a for a, _ in floats], [s for _, s in floats]), ([a for a, _ in others], [s for _, s in others])


@dataclass
class EMAHook:
    """What the trainer calls after each optimizer step (:attr:`dlscaffold.run.trainer.Trainer.on_stepped`)."""

    averages: list[Average]
    trainer: Any  # its ``stepped``: the applied optimizer steps per model (in its checkpoint)
    total_steps: int

    def __call__(self, names: set[str]) -> None:
        for average in self.averages:  # in info_flow order
            if average.source in names:
                step = self.trainer.stepped.get(average.source, 0)
                if step % average.every == 0:
                    average.update(step, self.total_steps)


def attach(run: Any, trainer: Any, steps_per_epoch: int) -> None:
    """Set ``trainer.on_stepped`` to update the run's EMA models (nothing for a run without one).

    Call it after the models are wrapped for training (SyncBatchNorm replaces modules)."""
    flow, config = run.flow, run.config
    averages = []
    for name, spec in config.info_flow.items():
        if spec.ema_of is None:
            continue
        floats, others = _tensors(flow.models[name], flow.models[spec.ema_of])
        averages.append(
            Average(name, spec.ema_of, spec.decay, spec.every, spec.decay_ramp, spec.write_back, floats, others)
        )
    if not averages:
        return
    total = config.training_params.max_training_epochs * steps_per_epoch
    trainer.on_stepped = EMAHook(averages, trainer, total)
