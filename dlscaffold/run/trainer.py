"""One training step, and what it steps: models, optimizers, schedulers, precision.

:meth:`Trainer.train_step` reads like a hand-written loop: forward under the precision's context ->
weighted sum of the losses -> backward -> unscale -> the finiteness check and clipping (here) ->
step (the precision object reports an fp16 scaler skip) -> scheduler -> evals on the same outputs.
A step whose loss or gradients are not finite is never applied (``training_params.on_nonfinite``:
``stop`` raises :class:`NonFiniteStep`, ``skip`` drops and counts it): neither the weights nor the
buffers its forward pass changed (BatchNorm's running statistics) keep anything of it.

A model's own ``optimizer``, ``lr_scheduler`` and ``param_groups`` only change what is stepped.
When a model of ``info_flow`` sets its own ``grad_clip_norm`` or ``update_every``, or a loss sets
``trains``, the step is per model
(:meth:`Trainer._model_step`): only the models due this step (``step % update_every == 0``) update,
each from the losses that train it, and gradients go only into those models' parameters. Otherwise
it is the joint step above, unchanged.

``training_params.accumulate: k`` makes k batches one step: each batch's forward and backward add
to the gradients (each batch's losses weighted by its share of the group's samples, so the gradient
is the mean over every sample of the group, across data-parallel ranks too, whose gradients are
all-reduced on the group's last batch only), and the optimizers step after the group's last batch.

``training_params.phases`` runs a step as ordered update phases (:meth:`Trainer._phased_step`):
each phase runs forward what its losses need, back-propagates them into its models and steps
their optimizers before the next phase; outputs of models no earlier phase updated are reused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._foreach_utils import _device_has_foreach_support

from dlscaffold.config import metric_name
from dlscaffold.errors import UserError
from dlscaffold.losses import as_dtype
from dlscaffold.parts.finite import FiniteCheck
from dlscaffold.parts.flow import Flow, Term, batch_size_of
from dlscaffold.parts.optim import build_optimizer, build_scheduler, model_params, param_groups
from dlscaffold.parts.precision import Precision

_NOTHING = contextlib.nullcontext()  # a context that does nothing (reusable)


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
        if not self.slots:  # models without buffers
            return
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
class Phase:
    """One update phase of a step: the models it trains, the losses that train them, and the models
    those losses read (with the models they read from)."""

    models: list[str]
    losses: list[Term]
    needed: set[str]


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
    # Called after each applied step with the names of the models whose optimizer stepped (EMA models).
    on_stepped: Callable[[set[str]], None] | None = None
    stepped: dict[str, int] = field(default_factory=dict)  # optimizer steps applied, per model
    # Per-model optimization (any of its keys set): the step of _model_step.
    per_model: bool = False
    # Parameters of groups that train in given epochs only: (parameter, first epoch, last epoch).
    windowed: list[tuple[torch.nn.Parameter, int, int]] = field(default_factory=list)
    distributed: bool = False  # data-parallel: DDP wants every parameter's gradient, each step
    update_every: dict[str, int] = field(default_factory=dict)  # model -> its optimizer steps every N steps
    clip: dict[str, float] = field(default_factory=dict)  # model -> its own grad_clip_norm
    trains: dict[str, list[str]] = field(default_factory=dict)  # loss name -> the models it updates
    reaches: dict[str, set[str]] = field(default_factory=dict)  # loss name -> the trained models it reaches
    intervals: dict[str, str] = field(default_factory=dict)  # model -> its scheduler's interval
    accumulate: int = 1  # batches per step (training_params.accumulate)
    own_accumulate: dict[str, int] = field(default_factory=dict)  # model -> its own batches per update
    world_size: int = 1  # data-parallel processes: a summed loss counts every rank's samples
    phases: list[Phase] = field(default_factory=list)  # ordered update phases; empty: one step of every model
    stale: dict[str, set[str]] = field(default_factory=dict)  # model -> what its update makes stale (phases)
    micro: int = 0  # batches of the current step done so far (accumulate > 1)
    losses: torch.Tensor | None = None  # finite when the step's losses so far were (read at its end)
    keep_outputs: bool = False  # keep the last batch's outputs (detached) for the hooks
    counted: bool = True  # the current batch has points of this rank (not a padding batch)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _one_group: bool | None = field(default=None, init=False, repr=False)  # see _total_norm
    finite_check: FiniteCheck = field(default_factory=FiniteCheck)  # the non-finite guard's test

    def train_step(
        self,
        batch: dict[str, Any],
        share: float = 1.0,
        last: bool = True,
        groups: dict[int, tuple[float, bool]] | None = None,
    ) -> dict[str, torch.Tensor] | None:
        """One batch of a step: forward, backward, and on the step's ``last`` batch the optimizer
        step. Returns every loss's and eval's values, or None for a skipped step.

        Args:
            batch: the batch, on the device.
            share: (this rank's points x ranks / the points of the step's batches on every rank):
                DDP averages the ranks' gradients, so scaling each rank's mean loss by it gives
                exactly the gradient of the mean over the step's samples, even for a short last
                batch (0 for a padding batch). 1 in a single process without accumulation.
            last: whether this batch ends the step (always, unless ``accumulate > 1``).
            groups: for models with their own ``accumulate`` N: ``{N: (share, ends)}``, this batch's
                share of their N batches' samples and whether it is the last of them.
        """
        self.counted = share > 0
        if self.micro == 0:
            self.flow.clock["step"] = self.step  # what {step: trainer} inputs read
            self.buffers.take()  # the forward pass updates buffers (BatchNorm): a dropped step puts them back
        if self.phases:
            return self._phased_step(batch, share)
        with self._no_sync(last):  # forward and backward: DDP decides in forward whether backward syncs
            if self.per_model:
                return self._model_step(batch, share, last, groups or {})
            return self._joint_step(batch, share, last)

    def _joint_step(self, batch: dict[str, Any], share: float, last: bool) -> dict[str, torch.Tensor] | None:
        """Every loss into every trained model, then every optimizer steps (the default step)."""
        with self.precision.forward_context():
            outputs = self.flow.forward(batch, needed_only=True)
            values = self.flow.values(self.flow.losses, batch, outputs)
            objective = self._objective(self.flow.losses, values, share, batch)
        self.precision.backward(objective)
        if not self._ends_step(objective, last):
            return self._evals(values, batch, outputs)
        optimizers = list(self.optimizers.values())
        self.precision.unscale(optimizers)
        grads = [g for p in self.params if (g := p.grad) is not None]
        if self.grad_clip_norm is None:  # one fused check, one host read per step (as GradScaler makes)
            finite, norm = self.finite_check([*grads, self.losses]), None
        else:  # the norm clipping needs tells whether the gradients are finite too
            norm = self._total_norm(grads) if grads else torch.zeros((), device=objective.device)
            finite = self._all_finite(norm)
        if not finite and not (self.precision.scaled and self._losses_finite()):
            return self._skip_nonfinite(values, batch, optimizers)  # never applied; raises for "stop"
        if finite and norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip_norm, norm)  # on true gradients
        if self.windowed and self.distributed:
            self._outside_epochs()
        applied = self.precision.step(optimizers, finite)  # False: the fp16 scaler skipped an overflow
        if applied:
            names = set(self.optimizers)
            for name in names:
                self.stepped[name] = self.stepped.get(name, 0) + 1
            if self.on_stepped is not None:
                self.on_stepped(names)
        self.step += 1
        if applied:  # after the optimizer step, as torch expects
            for name, scheduler in self.schedulers.items():
                if self.intervals.get(name, self.scheduler_interval) == "step":
                    scheduler.step()
        return self._evals(values, batch, outputs)

    def _objective(self, terms: list[Term], values: dict[str, torch.Tensor], share: float, batch: dict) -> Any:
        """The weighted sum of ``terms``: batch means scaled by ``share``; ``reduction: sum`` terms as
        sums over this rank's samples times the ranks (DDP averages them back to the global sum)."""
        objective: Any = None
        for t in terms:  # a weight of 1 multiplies nothing: x * 1 is x, and so are the gradients
            if t.reduction == "mean":
                mean = as_dtype(values[t.name], torch.float32).mean()
                mean = mean if t.weight == 1 else t.weight * mean
                objective = mean if objective is None else objective + mean
        objective = 0 if objective is None else objective
        if share != 1.0:
            objective = objective * share
        summed = [t for t in terms if t.reduction == "sum"]
        if summed:
            scale = float(self.world_size) if share > 0 else 0.0  # a padding batch counts nothing
            objective = objective + scale * sum(t.weight * _batch_sum(values[t.name], batch) for t in summed)
        return objective

    def _total_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """``torch.nn.utils.get_total_norm(grads)``, the same value: when every trained parameter is on
        one device in one dtype (known after the first call), one fused norm of them all without the
        grouping and the per-tensor copies of the general function."""
        if self._one_group is None:
            kinds = {(p.device, p.dtype) for p in self.params}
            self._one_group = len(kinds) == 1 and _device_has_foreach_support(next(iter(kinds))[0])
        if self._one_group and all(type(g) is torch.Tensor for g in grads):  # what torch's foreach path takes
            return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        return torch.nn.utils.get_total_norm(grads)

    def _ends_step(self, objective: torch.Tensor, last: bool) -> bool:
        """Note the batch's objective, whose finiteness is its losses' (kept on the device, read at the
        step's end); whether the step's optimizers step now."""
        value = objective.detach()  # a NaN or inf loss makes the weighted sum NaN or inf
        self.losses = value if self.micro == 0 else self.losses + _zero_if_finite(value)
        self.micro = 0 if last else self.micro + 1
        return last

    def _all_finite(self, norm: torch.Tensor) -> bool:
        """Whether the step's losses and its gradients' norm are all finite (the step's one host read)."""
        return bool(_zero_if_finite(self.losses) + _zero_if_finite(norm) == 0)

    def _losses_finite(self) -> bool:
        """Whether the step's losses were all finite (read only after a check of the whole step said no)."""
        return bool(_zero_if_finite(self.losses) == 0)

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Under data-parallel training, no gradient all-reduce on a step's batches before its last."""
        if last or not self.distributed:
            return _NOTHING
        stack = contextlib.ExitStack()
        for wrapped in self.flow.wrapped.values():
            ddp = getattr(wrapped, "_orig_mod", wrapped)  # torch.compile wraps the DDP module
            if hasattr(ddp, "no_sync"):
                stack.enter_context(ddp.no_sync())
        return stack

    def begin_epoch(self, epoch: int) -> None:
        """In one process, a parameter group outside its ``epochs`` stops requiring gradients for
        the epoch, so that backward skips its work. (Under data-parallel training, where DDP wants
        every parameter's gradient, each step drops them instead: :meth:`_outside_epochs`.)"""
        if not self.distributed:
            for p, first, last in self.windowed:
                p.requires_grad_(first <= epoch <= last)

    def _outside_epochs(self) -> None:
        """A parameter group outside its ``epochs``: no gradient, so the optimizer leaves it as it is."""
        epoch = self.flow.clock["epoch"]
        for p, first, last in self.windowed:
            if not first <= epoch <= last:
                p.grad = None

    def _evals(self, values: dict[str, torch.Tensor], batch: dict[str, Any], outputs: dict) -> dict:
        if self.flow.evals:
            with torch.no_grad(), self.precision.forward_context():  # evals read the same outputs, no graph
                values.update(self.flow.values(self.flow.evals, batch, outputs))
        if self.counted:  # a padding batch (this rank's share 0) counts in no metric
            self.flow.update_metrics(batch, outputs)  # torchmetrics evals: state only, computed at the epoch's end
        if self.keep_outputs:
            self.outputs = {m: {k: _detached(v) for k, v in out.items()} for m, out in outputs.items()}
        return values

    def _model_step(
        self, batch: dict[str, Any], share: float, last: bool, groups: dict[int, tuple[float, bool]]
    ) -> dict[str, torch.Tensor] | None:
        """The per-model step: the models due this step, each from the losses that train it; a
        model with its own ``accumulate`` steps after the last batch of its own group."""
        due = self._due(self.optimizers)
        own = {n: groups[k] for n, k in self.own_accumulate.items()}  # (share, ends) of the model's group
        with self.precision.forward_context():
            outputs = self.flow.forward(batch, needed_only=True)
            values = self.flow.values(self.flow.losses, batch, outputs)  # every loss, for the logs
        shares = {n: own[n][0] if n in own else share for n in due}
        objective = self._backward_into(due, self.flow.losses, values, shares, batch, retain=False)
        if not self._ends_step(objective, last):
            return self._evals(values, batch, outputs)
        stepped = self._apply([n for n in due if n not in own or own[n][1]], values, batch)
        if stepped is None:
            return None
        self.step += 1
        return self._evals(values, batch, outputs)

    def _phased_step(self, batch: dict[str, Any], share: float) -> dict[str, torch.Tensor] | None:
        """A step in ordered update phases. Each phase whose models are due runs forward what its
        losses need (outputs of earlier phases are reused, their graphs kept, unless an earlier
        phase's update made them stale), back-propagates its losses into its due models and steps
        their optimizers. A phase with no model due is skipped; its losses are logged from the
        outputs the step has. Evals read the step's last outputs."""
        outputs: dict[str, dict] = {}
        values: dict[str, torch.Tensor] = {}
        stale: set[str] = set()
        running = [(phase, due) for phase in self.phases if (due := self._due(phase.models))]
        for i, (phase, due) in enumerate(running):
            if i:
                self.buffers.take()  # a dropped phase puts back only what its own forward changed
            for name in stale & phase.needed:
                del outputs[name]
            stale -= phase.needed
            with self.precision.forward_context():
                self.flow.forward_missing(batch, outputs, phase.needed)
                values.update(self.flow.values(phase.losses, batch, outputs))
            more = i < len(running) - 1  # a later phase may reuse these outputs and their graphs
            objective = self._backward_into(due, phase.losses, values, dict.fromkeys(due, share), batch, retain=more)
            self._ends_step(objective, last=True)
            stepped = self._apply(due, values, batch)
            if stepped is None:
                return None
            stale |= {m for name in stepped for m in self.stale.get(name, ())}
        rest = [t for t in self.flow.losses if t.name not in values]  # the losses of skipped phases
        if rest:
            with torch.no_grad(), self.precision.forward_context():
                self.flow.forward_missing(batch, outputs, self.flow.sources({s for t in rest for _, s, _ in t.sources}))
                values.update(self.flow.values(rest, batch, outputs))
        self.step += 1
        with torch.no_grad(), self.precision.forward_context():  # what the evals read and no phase ran
            self.flow.forward_missing(batch, outputs, self.flow.needed or set(self.flow.models))
        return self._evals(values, batch, outputs)

    def _due(self, models: Any) -> list[str]:
        """The models of ``models`` whose optimizer steps this step (``update_every``)."""
        return [n for n in models if self.step % self.update_every.get(n, 1) == 0]

    def _backward_into(
        self,
        due: list[str],
        terms: list[Term],
        values: dict[str, torch.Tensor],
        shares: dict[str, float],
        batch: dict[str, Any],
        retain: bool,
    ) -> torch.Tensor:
        """Back-propagate each loss of ``terms`` into the parameters of the due models it trains
        (one backward per set of models, each weighted by the models' ``shares``: the models a loss
        trains accumulate alike); returns the objective (their weighted sum)."""
        groups: dict[tuple[tuple[str, ...], float], list[Term]] = {}  # (models a loss trains now, share) -> terms
        for t in terms:
            models = tuple(n for n in due if n in self.trains.get(t.name, self.flow.trained))
            if models:
                reached = [n for n in models if n in self.reaches.get(t.name, models)] or models
                groups.setdefault((models, shares[reached[0]]), []).append(t)
        with self.precision.forward_context():
            objectives = {key: self._objective(group, values, key[1], batch) for key, group in groups.items()}
        objective = sum(objectives.values(), torch.zeros((), device=self.flow.device))
        for i, ((models, _), loss) in enumerate(objectives.items()):  # gradients only into the models a loss trains
            inputs = [p for n in models for p in self.flow.models[n].parameters()]
            self.precision.backward(loss, inputs=inputs, retain_graph=retain or i < len(objectives) - 1)
        return objective

    def _apply(self, due: list[str], values: dict[str, torch.Tensor], batch: dict[str, Any]) -> set[str] | None:
        """The end of a per-model step or phase: unscale, the finiteness check, clipping, the due
        models' optimizer steps, EMA and step schedulers. Returns the models that stepped, or
        None when the step was dropped as non-finite."""
        params = {n: list(self.flow.models[n].parameters()) for n in due}
        due = [n for n in due if any(p.grad is not None for p in params[n])]
        optimizers = [self.optimizers[n] for n in due]
        self.precision.unscale(optimizers)
        grads = [g for n in due for p in params[n] if (g := p.grad) is not None]
        finite = self.finite_check([*grads, self.losses])  # _clip computes the norms it needs
        if not finite and not (self.precision.scaled and self._losses_finite()):
            return self._skip_nonfinite(values, batch, list(self.optimizers.values()))
        if finite:
            self._clip(due, params)
        applied = self.precision.step(optimizers, finite) if optimizers else finite
        stepped = set(due) if applied else set()
        for name in stepped:
            self.stepped[name] = self.stepped.get(name, 0) + 1
        if stepped and self.on_stepped is not None:
            self.on_stepped(stepped)
        for name in stepped:  # a scheduler counts its own model's updates
            if name in self.schedulers and self.intervals.get(name, self.scheduler_interval) == "step":
                self.schedulers[name].step()
        return stepped

    def _clip(self, due: list[str], params: dict[str, list[torch.nn.Parameter]]) -> None:
        """A model with its own grad_clip_norm on its own norm; the others jointly, as training_params says."""
        joint = [p for n in due if n not in self.clip for p in params[n]]
        for limit, group in [*((self.clip[n], params[n]) for n in due if n in self.clip), (self.grad_clip_norm, joint)]:
            grads = [p.grad for p in group if p.grad is not None]
            if limit is not None and grads:
                torch.nn.utils.clip_grads_with_norm_(group, limit, torch.nn.utils.get_total_norm(grads))

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
        for name, scheduler in self.schedulers.items():
            if self.intervals.get(name, self.scheduler_interval) == "epoch":
                scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        """``lr/<Model>``: each trained model's current learning rate (its first parameter group)."""
        return {f"lr/{name}": float(o.param_groups[0]["lr"]) for name, o in self.optimizers.items()}

    def set_learning_rate(self, lr: float) -> None:
        """Set every optimizer's base rate (``--resume ... training_params.lrn_rate=X``)."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
                if "initial_lr" in group:
                    group["initial_lr"] = group["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "skipped_nonfinite": self.skipped_nonfinite,
            "stepped": dict(self.stepped),
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
        self.stepped = dict(state.get("stepped") or {})


def build_trainer(run: Any, batches_per_epoch: int) -> Trainer:
    """One optimizer (and scheduler) per trained model of a built run (:class:`dlscaffold.run.builder.Run`)."""
    tp, flow = run.config.training_params, run.flow
    specs = {n: run.config.info_flow[n] for n in flow.trained}
    own = {n: model_params(tp, spec) for n, spec in specs.items()}  # a model's own settings, else training_params'
    optimizers = {n: build_optimizer(param_groups(flow.models[n], specs[n], n), own[n]) for n in flow.trained}
    updates = {n: -(-batches_per_epoch // (spec.accumulate or tp.accumulate)) for n, spec in specs.items()}
    schedulers = {n: s for n, o in optimizers.items() if (s := build_scheduler(o, own[n], updates[n])) is not None}
    interval = tp.lr_scheduler.interval if tp.lr_scheduler else "epoch"
    trains = {
        metric_name(m, key, loss): loss.trains
        for m, spec in run.config.info_flow.items()
        for key, loss in spec.losses.items()
        if loss.trains is not None
    }
    own_accumulate = {n: s.accumulate for n, s in specs.items() if s.accumulate not in (None, tp.accumulate)}
    per_model = (
        bool(trains)
        or bool(own_accumulate)
        or any(s.update_every != 1 or s.grad_clip_norm is not None for s in specs.values())
    )
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    world_size = torch.distributed.get_world_size() if initialized else 1
    phases = build_phases(run.config, flow, trains)
    _check_one_process(world_size > 1, per_model, phases, trains, flow)
    return Trainer(
        flow,
        optimizers,
        schedulers,
        interval,
        tp.grad_clip_norm,
        run.precision,
        tp.on_nonfinite,
        [p for n in flow.trained for p in flow.models[n].parameters()],
        buffers=BufferSnapshot([flow.models[n] for n in flow.trained]),  # frozen models run in eval mode
        per_model=per_model,
        windowed=[  # the parameters the model lets train (requires_grad) in groups with epochs
            (p, *group["epochs"])
            for optimizer in optimizers.values()
            for group in optimizer.param_groups
            if group.get("epochs")
            for p in group["params"]
            if p.requires_grad
        ],
        distributed=world_size > 1,
        update_every={n: spec.update_every for n, spec in specs.items()},
        clip={n: spec.grad_clip_norm for n, spec in specs.items() if spec.grad_clip_norm is not None},
        trains=trains,
        intervals={n: o.lr_scheduler.interval for n, o in own.items() if o.lr_scheduler is not None},
        accumulate=tp.accumulate,
        own_accumulate=own_accumulate,
        reaches={t.name: flow.sources({s for _, s, _ in t.sources}) & set(flow.trained) for t in flow.losses},
        world_size=world_size,
        phases=phases,
        stale=_stale(run.config, flow) if phases else {},
    )


def _check_one_process(
    distributed: bool, per_model: bool, phases: list[Phase], trains: dict[str, list[str]], flow: Flow
) -> None:
    """Per-model steps need one process, unless phases make each phase one backward pass (DDP
    reduces each model's gradients once per forward)."""
    if distributed and (phases and any(_backwards(p, trains, flow) > 1 for p in phases) or per_model and not phases):
        raise UserError(
            "info_flow: update_every, a model's own grad_clip_norm and accumulate, and a loss's trains need one "
            "process (each model steps on its own), or training_params.phases in which each phase's losses "
            "train the same models; train without torchrun, or change them"
        )


def build_phases(config: Any, flow: Flow, trains: dict[str, list[str]]) -> list[Phase]:
    """``training_params.phases`` as :class:`Phase` objects (none without the key). Each loss goes
    to the phase of the models it trains (prepare has checked that they lie in one phase)."""
    if not config.training_params.phases:
        return []
    phases = [Phase(list(models), [], set()) for models in config.training_params.phases]
    for term in flow.losses:
        models = trains.get(term.name) or sorted(flow.sources({s for _, s, _ in term.sources}) & set(flow.trained))
        phase = next((p for p in phases if any(n in p.models for n in models)), None)
        if phase is not None:  # a loss reaching no trained model is logged, never back-propagated
            phase.losses.append(term)
    for phase in phases:
        phase.needed = flow.sources({s for t in phase.losses for _, s, _ in t.sources}) & set(flow.models)
    return phases


def _backwards(phase: Phase, trains: dict[str, list[str]], flow: Flow) -> int:
    """How many backward passes a phase makes at most: one per distinct set of models its losses train."""
    return len({tuple(n for n in phase.models if n in trains.get(t.name, flow.trained)) for t in phase.losses})


def _stale(config: Any, flow: Flow) -> dict[str, set[str]]:
    """For each trained model, the models whose outputs its update makes stale within a step: itself,
    its EMA models, and every model reading from those."""
    stale = {}
    for name in flow.trained:
        updated = {name} | {m for m, spec in config.info_flow.items() if spec.ema_of == name}
        stale[name] = set().union(*(flow.readers(m) for m in updated))
    return stale


def _batch_sum(values: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """A loss's sum over the batch's samples (a scalar batch mean counts once per sample)."""
    return values.float().sum() if values.dim() else values.float() * batch_size_of(batch)


def _zero_if_finite(value: torch.Tensor) -> torch.Tensor:
    """0 where ``value`` is finite, NaN where it is inf or NaN (``x - x``): the finiteness test of
    ``torch.isfinite`` in one kernel instead of five, and flags that add up (a NaN stays NaN)."""
    return value - value


def _detached(value: Any) -> Any:
    return value.detach() if isinstance(value, torch.Tensor) else value
