"""One training step, and what it steps: models, optimizers, schedulers, precision.

:meth:`Trainer.train_step` reads like a hand-written loop: forward under the precision's context ->
weighted sum of the losses -> backward -> unscale -> the finiteness check and clipping (here) ->
step (the precision object reports an fp16 scaler skip) -> scheduler -> evals on the same outputs.
A step whose loss or gradients are not finite is never applied (``training_params.on_nonfinite``:
``stop`` raises :class:`NonFiniteStep`, ``skip`` drops and counts it): neither the weights nor the
buffers its forward pass changed (BatchNorm's running statistics) keep anything of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dlscaffold.flow import Flow
from dlscaffold.optim import build_optimizer, build_scheduler
from dlscaffold.precision import Precision


class NonFiniteStep(Exception):
    """A step's loss or gradients were NaN/inf; it was not applied. ``batch`` is the offending batch."""

    def __init__(self, where: str, batch: dict[str, Any]):
        super().__init__(where)
        self.where, self.batch = where, batch


class BufferSnapshot:
    """A copy of modules' buffers (BatchNorm's running statistics, any registered buffer), taken
    before each step's forward pass and put back when the step is dropped. The copies are made
    once and refreshed in place (one fused device copy a step, no allocation)."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.slots = [(m, n) for module in modules for m in module.modules() for n, _ in m.named_buffers(recurse=False)]
        self.sources: list[torch.Tensor] = []  # the buffers the copies were taken from
        self.copies: list[torch.Tensor] = []

    def take(self) -> None:
        current = [getattr(module, name) for module, name in self.slots]
        if len(current) != len(self.sources) or any(a is not b for a, b in zip(current, self.sources, strict=True)):
            self.sources, self.copies = current, [b.detach().clone() for b in current]  # first step, or replaced
        elif current:
            torch._foreach_copy_(self.copies, current)

    @torch.no_grad()
    def restore(self) -> None:
        for (module, name), source, copy in zip(self.slots, self.sources, self.copies, strict=True):
            if getattr(module, name) is source:
                source.copy_(copy)
            else:  # the forward pass assigned a new tensor: put the old values back under the name
                setattr(module, name, copy.clone())


@dataclass
class Trainer:
    """What the loop steps: the models and their optimizers and schedulers."""

    flow: Flow
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    scheduler_interval: str  # "epoch" or "step"
    grad_clip_norm: float | None
    precision: Precision
    on_nonfinite: str = "stop"  # or "skip"
    params: list[torch.nn.Parameter] = field(default_factory=list)  # every trained parameter
    step: int = 0  # global step: batches trained on, skipped ones included
    skipped_nonfinite: int = 0  # steps dropped for NaN/inf with on_nonfinite: skip
    buffers: BufferSnapshot = field(default_factory=lambda: BufferSnapshot([]))  # the trained models' buffers

    def train_step(self, batch: dict[str, Any], share: float = 1.0) -> dict[str, torch.Tensor] | None:
        """One optimisation step; returns every loss's and eval's values, or None for a skipped step.

        Args:
            batch: the batch, on the device.
            share: under data-parallel training, (this rank's points x ranks / the global batch's
                points): DDP averages the ranks' gradients, so scaling each rank's mean loss by it
                gives exactly the gradient of the mean over the global batch, even for a short last
                batch (0 for a padding batch). 1 in a single process.
        """
        self.flow.clock["step"] = self.step  # what {step: trainer} inputs read
        self.buffers.take()  # the forward pass updates buffers (BatchNorm): a dropped step puts them back
        with self.precision.forward_context():
            outputs = self.flow.forward(batch)
            values = self.flow.values(self.flow.losses, batch, outputs)
            objective = sum(t.weight * values[t.name].float().mean() for t in self.flow.losses)
            if share != 1.0:
                objective = objective * share
        self.precision.backward(objective)
        optimizers = list(self.optimizers.values())
        self.precision.unscale(optimizers)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=objective.device)
        loss_finite = torch.isfinite(objective.detach())
        finite = bool(loss_finite & torch.isfinite(norm))  # one host read per step, as GradScaler makes
        if not finite and not (self.precision.scaled and bool(loss_finite)):
            return self._skip_nonfinite(values, batch, optimizers)  # never applied; raises for "stop"
        if finite and self.grad_clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip_norm, norm)  # on true gradients
        applied = self.precision.step(optimizers, finite)  # False: the fp16 scaler skipped an overflow
        self.step += 1
        if self.scheduler_interval == "step" and applied:  # after the optimizer step, as torch expects
            for scheduler in self.schedulers.values():
                scheduler.step()
        with torch.no_grad(), self.precision.forward_context():  # evals read the same outputs, no graph
            values.update(self.flow.values(self.flow.evals, batch, outputs))
        self.flow.update_metrics(batch, outputs)  # torchmetrics evals: state only, computed at the epoch's end
        return values

    def _skip_nonfinite(
        self, values: dict[str, torch.Tensor], batch: dict[str, Any], optimizers: list[torch.optim.Optimizer]
    ) -> None:
        """A NaN/inf loss or gradient: drop the step; ``on_nonfinite: stop`` raises :class:`NonFiniteStep`."""
        where = self._nonfinite_where(values)
        self.precision.skip(optimizers)
        self.buffers.restore()
        if self.on_nonfinite == "stop":
            raise NonFiniteStep(where, batch)  # self.step still numbers this step, as {step: trainer} did
        self.step += 1
        self.skipped_nonfinite += 1
        return None

    def _nonfinite_where(self, values: dict[str, torch.Tensor]) -> str:
        """Which loss, or which model's gradients, went NaN/inf (only read after a failed check)."""
        for term in self.flow.losses:
            if not bool(torch.isfinite(values[term.name].detach()).all()):
                return f"loss {term.path}"
        for name in self.flow.trained:
            grads = [p.grad for p in self.flow.models[name].parameters() if p.grad is not None]
            if any(not bool(torch.isfinite(g).all()) for g in grads):
                return f"the gradients of info_flow.{name}"
        return "the weighted sum of the losses"

    def end_epoch(self) -> None:
        if self.scheduler_interval == "epoch":
            for scheduler in self.schedulers.values():
                scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        """``lr/<Model>``: each trained model's current learning rate (its first parameter group)."""
        return {f"lr/{name}": float(o.param_groups[0]["lr"]) for name, o in self.optimizers.items()}

    def set_learning_rate(self, lr: float) -> None:
        """Set every optimizer's base rate (``--resume ... training_params.lrn_rate=X``)."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
                if "initial_lr" in group:
                    group["initial_lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "skipped_nonfinite": self.skipped_nonfinite,
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "precision": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.precision.load_state_dict(state.get("precision", {}))
        self.step = state["step"]
        self.skipped_nonfinite = state.get("skipped_nonfinite", 0)


def build_trainer(run: Any, steps_per_epoch: int) -> Trainer:
    """One optimizer (and scheduler) per trained model of a built run (:class:`dlscaffold.builder.Run`)."""
    tp, flow = run.config.training_params, run.flow
    optimizers = {n: build_optimizer(flow.models[n].parameters(), tp) for n in flow.trained}
    schedulers = {n: s for n, o in optimizers.items() if (s := build_scheduler(o, tp, steps_per_epoch)) is not None}
    interval = tp.lr_scheduler.interval if tp.lr_scheduler else "epoch"
    params = [p for n in flow.trained for p in flow.models[n].parameters()]
    buffers = BufferSnapshot([flow.models[n] for n in flow.trained])  # frozen models run in eval mode
    return Trainer(
        flow,
        optimizers,
        schedulers,
        interval,
        tp.grad_clip_norm,
        run.precision,
        tp.on_nonfinite,
        params,
        buffers=buffers,
    )
