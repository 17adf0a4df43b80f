"""``info_flow`` made real: build the models, route named tensors, compute losses and evals.

Tensors flow dataset -> models (in ``info_flow`` order) -> losses / evals. A model's ``forward``
receives the tensors named in its ``inputs`` as keyword arguments and returns a dict of named
tensors; a loss or eval receives its ``inputs`` bound by name: a key naming one of the function's
parameters goes to that parameter, the others fill the rest in the config's order (only the older
deep_learning tool's configs, whose keys name no parameter, rely on the order alone; see
:func:`~dlscaffold.parts.signatures.input_order`). An input ``argument: source`` takes the source's
tensor named like the argument, ``argument: source.tensor`` the one named ``tensor`` (``z:
Encoder.latent``, ``target: dataset.image``).
The source ``trainer`` gives the current ``epoch`` (from 1) and global ``step`` as 0-dim tensors.

An eval named ``torchmetrics.<Class>`` is a :class:`MetricTerm`: a ``torchmetrics.Metric`` built from
its ``init_args``, updated with every batch's outputs (:meth:`Flow.update_metrics`) and computed once
per pass over the data (:meth:`Flow.compute_metrics`), so that a metric that is not a mean over samples
(F1, AUROC, ...) is exact over the whole split. It has no per-sample values.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from dlscaffold.config import DATASET, TRAINER, Config, metric_name, split_source
from dlscaffold.errors import UserError, blame, closest, first_line
from dlscaffold.losses import members_fn, per_sample, spec_of
from dlscaffold.parts.signatures import input_order
from dlscaffold.parts.tm_metrics import build_metric, is_torchmetric
from dlscaffold.project.code import Project
from dlscaffold.project.registry import Registry
from dlscaffold.records.checkpoint import load_weights, weights_path
from dlscaffold.records.runfiles import model_weights

# An input as routed: (argument name, source: "dataset", "trainer" or a model, the source's tensor name).
Route = tuple[str, str, str]
GUARD_MEMORY = 16  # input kinds a term remembers its guard passed (Term.compute)


@dataclass
class Term:
    """One configured loss or eval."""

    name: str  # the metric name, "<Model>/<logging_name>"
    path: str  # its key path in the config, for messages
    fn: Callable[..., torch.Tensor]
    weight: float
    sources: list[Route]  # (argument, source, tensor name), in call order (bound_routes)
    members: Callable[..., torch.Tensor] | None = None  # an ensemble eval's per-member values (B, E)
    num_members: int = 0  # E, known after the first batch
    reduction: str = "mean"  # a loss's objective: the mean or the sum of its per-sample values
    # A declared built-in's function without its input guard (dlscaffold.losses.declare), and the
    # inputs (type, shape, dtype) the guard has passed: the guard reads nothing else, so inputs of a
    # kind it has passed skip it (up to GUARD_MEMORY kinds; more, e.g. varying lengths, are checked).
    unguarded: Callable[..., torch.Tensor] | None = None
    passed: set[tuple] = field(default_factory=set, repr=False)

    def compute(self, args: list[Any]) -> torch.Tensor:
        """``fn(*args)``: the function's values, its inputs' shapes and dtypes checked once for each kind."""
        if self.unguarded is None:
            return self.fn(*args)
        kind = tuple([(type(a), a.shape, a.dtype) if isinstance(a, torch.Tensor) else type(a) for a in args])
        if kind in self.passed:
            return self.unguarded(*args)
        value = self.fn(*args)  # raises for inputs that do not fit
        if len(self.passed) < GUARD_MEMORY:
            self.passed.add(kind)
        return value

    @property
    def names(self) -> list[str]:
        """The names it logs: its own, then ``<name>_<i>`` for each ensemble member."""
        return [self.name, *(f"{self.name}_{i}" for i in range(self.num_members))]


@dataclass
class MetricTerm:
    """One ``torchmetrics.<Class>`` eval: a metric object whose state accumulates over batches."""

    name: str  # the metric name, "<Model>/<logging_name>"
    path: str  # its key path in the config, for messages
    metric: Any  # the torchmetrics.Metric, on the flow's device
    sources: list[Route]  # (argument, source, tensor name), in the order update() takes them (bound_routes)

    def values(self) -> dict[str, float]:
        """The metric over everything it was updated with: ``{name: value}``; a vector result (e.g.
        ``average: none``) gives ``<name>_<i>``, a dict result ``<name>_<key>``."""
        with blame(self.path):
            result = self.metric.compute()
        if isinstance(result, dict):
            items = {f"{self.name}_{k}": v for k, v in result.items()}
        elif isinstance(result, torch.Tensor) and result.numel() > 1 and result.dim() == 1:
            items = {f"{self.name}_{i}": v for i, v in enumerate(result)}
        else:
            items = {self.name: result}
        bad = [
            k
            for k, v in items.items()
            if not (isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1))
        ]
        if bad:
            found = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise UserError(
                f"{self.path}: {type(self.metric).__name__}.compute() returned {found}; expected a "
                "number, one number per class or a dict of numbers: choose init_args that give one "
                "(e.g. average) or another metric"
            )
        return {k: float(v) for k, v in items.items()}


@dataclass
class Flow:
    """The built models and the terms that read their outputs."""

    models: dict[str, nn.Module]
    inputs: dict[str, list[Route]]  # each model's forward arguments
    trained: list[str]
    losses: list[Term]
    evals: list[Term]
    device: torch.device | None = None  # where the models are
    clock: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "step": 0})  # the "trainer" source
    metrics: list[MetricTerm] = field(default_factory=list)  # torchmetrics evals, computed per pass
    # What training calls instead of a trained model: its DistributedDataParallel and/or
    # torch.compile wrapper. ``models`` stay the plain modules: checkpoints hold their state_dicts.
    wrapped: dict[str, nn.Module] = field(default_factory=dict)
    training: bool = False
    # The models whose outputs a loss, an eval, a logged image or test-time augmentation reads, with
    # the models they read from: training and validation run only these (an EMA model that nothing
    # reads costs nothing per step). None: every model.
    needed: set[str] | None = None

    @property
    def term_names(self) -> list[str]:
        return [name for t in self.losses + self.evals for name in t.names]

    def set_mode(self, training: bool) -> None:
        """Trained models follow ``training``; frozen ones stay in eval mode."""
        self.training = training
        for name, model in self.models.items():
            model.train(training and name in self.trained)

    def forward(self, batch: dict[str, Any], needed_only: bool = False) -> dict[str, dict[str, torch.Tensor]]:
        """Run every model in order (``needed_only``: those in :attr:`needed`); returns each model's
        dict of named outputs."""
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        for name in self.models:
            if needed_only and self.needed is not None and name not in self.needed:
                continue
            outputs[name] = self.run_model(name, batch, outputs)
        return outputs

    def forward_missing(self, batch: dict[str, Any], outputs: dict, models: set[str], wrapped: bool = True) -> None:
        """Run, in order, the models of ``models`` that ``outputs`` does not hold yet, adding theirs
        (an update phase recomputes only what an earlier phase's update made stale)."""
        for name in self.models:
            if name in models and name not in outputs:
                outputs[name] = self.run_model(name, batch, outputs, wrapped)

    def run_model(self, name: str, batch: dict[str, Any], outputs: dict, wrapped: bool = True) -> dict:
        """One model's forward on its inputs from ``batch`` and ``outputs``: its dict of named tensors."""
        routes = self.inputs[name]
        try:
            kwargs = {arg: (batch if src == DATASET else outputs[src])[tensor] for arg, src, tensor in routes}
        except KeyError:  # the trainer's clock, or a missing tensor (fetch names it)
            kwargs = {
                arg: self.fetch(batch, outputs, tensor, src, f"info_flow.{name}.inputs.{arg}")
                for arg, src, tensor in routes
            }
        model = self.models[name]
        call = self.wrapped.get(name, model) if self.training and wrapped else model
        try:
            out = call(**kwargs)
        except Exception:
            _reraise_blamed(f"info_flow.{name}: {name}.forward")
        if not isinstance(out, dict):
            raise UserError(
                f"info_flow.{name}: {name}.forward returned {type(out).__name__}; expected a dict of named tensors"
            )
        return out

    def readers(self, name: str) -> set[str]:
        """The models that read ``name``'s outputs, directly or through other models (and itself)."""
        found = {name}
        for model, routes in self.inputs.items():  # in info_flow order: a model's sources come before it
            if any(src in found for _, src, _ in routes):
                found.add(model)
        return found

    def sources(self, names: set[str]) -> set[str]:
        """The models ``names`` read from, directly or through other models (and themselves)."""
        found = set(names)
        for model in reversed(list(self.models)):
            if model in found:
                found.update(src for _, src, _ in self.inputs[model] if src in self.models)
        return found

    def update_metrics(self, batch: dict[str, Any], outputs: dict) -> None:
        """Add one batch to every torchmetrics eval's state (no gradients; nothing is read back)."""
        if not self.metrics:
            return
        with torch.no_grad():
            for t in self.metrics:
                args = [a.detach() if isinstance(a, torch.Tensor) else a for a in self.term_args(t, batch, outputs)]
                with blame(t.path):
                    t.metric.update(*args)

    def compute_metrics(self) -> dict[str, float]:
        """Every torchmetrics eval over the batches since the last :meth:`reset_metrics` (a device
        sync; under data-parallel training torchmetrics gathers the other processes' state)."""
        return {name: value for t in self.metrics for name, value in t.values().items()}

    def unwrap(self) -> None:
        """Drop the training wrappers once training is over: a DistributedDataParallel wrapper holds
        the process group, whose threads must end before the process does (one that outlives the
        run can abort the process as it exits)."""
        self.wrapped.clear()

    def reset_metrics(self) -> None:
        """Forget the torchmetrics evals' state: call it before each pass over the data."""
        for t in self.metrics:
            t.metric.reset()

    def metrics_state_dict(self) -> dict[str, dict[str, Any]]:
        """The torchmetrics evals' accumulated state, on the CPU (tensors and lists of tensors, so a
        ``weights_only`` load reads it): what a run stopped mid-epoch saves with its position."""
        return {
            t.name: {
                **{k: _on_cpu(getattr(t.metric, k)) for k in t.metric._defaults},
                "_update_count": t.metric._update_count,
            }
            for t in self.metrics
        }

    def load_metrics_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Put back what :meth:`metrics_state_dict` saved (metrics it does not name are reset)."""
        for t in self.metrics:
            t.metric.reset()
            saved = dict(state.get(t.name) or {})
            t.metric._update_count = int(saved.pop("_update_count", 0))
            for key, value in saved.items():
                setattr(t.metric, key, _moved(value, self.device))

    def term_args(self, term: Term | MetricTerm, batch: dict[str, Any], outputs: dict) -> list[Any]:
        """A term's input tensors, in the order its function takes them (:func:`bound_routes`)."""
        try:
            return [(batch if src == DATASET else outputs[src])[tensor] for _, src, tensor in term.sources]
        except KeyError:  # the trainer's clock, or a missing tensor (fetch names it)
            return [self.fetch(batch, outputs, tensor, src, term.path) for _, src, tensor in term.sources]

    def values(self, terms: list[Term], batch: dict[str, Any], outputs: dict) -> dict[str, torch.Tensor]:
        """Each term's per-sample values ``(B,)`` (or a scalar batch mean), and its members' values."""
        values = {}
        for t in terms:
            args = self.term_args(t, batch, outputs)
            try:
                values[t.name] = per_sample(t.compute(args))
                if t.members is not None:
                    members = t.members(*args)  # (B, E)
                    t.num_members = members.shape[1]
                    values.update({f"{t.name}_{i}": members[:, i] for i in range(t.num_members)})
            except Exception:
                _reraise_blamed(t.path)
        return values

    def fetch(self, batch: dict, outputs: dict, tensor: str, source: str, who: str) -> Any:
        """One named tensor from the batch, a model's outputs, or the trainer's clock."""
        if source == TRAINER:  # only built when asked for: a host-to-device copy
            return torch.tensor(self.clock[tensor], device=self.device)
        pool = batch if source == DATASET else outputs[source]
        try:
            return pool[tensor]
        except KeyError:
            origin = "the dataset's items" if source == DATASET else f"model '{source}'"
            close = closest(tensor, pool)
            raise UserError(
                f"{who} needs tensor '{tensor}' from {source}, but {origin} hold only: {', '.join(pool) or 'nothing'}"
                + (f"; did you mean '{source}.{close}'?" if close else "")
            ) from None


def _on_cpu(value: Any) -> Any:
    """A metric state (a tensor or a list of them) copied to the CPU."""
    return [_on_cpu(v) for v in value] if isinstance(value, list) else value.detach().cpu().clone()


def _moved(value: Any, device: torch.device | None) -> Any:
    """A saved metric state (a tensor or a list of them) on ``device`` (None: where it is)."""
    if isinstance(value, list):
        return [_moved(v, device) for v in value]
    return value if device is None else value.to(device)


def _reraise_blamed(where: str) -> NoReturn:
    """Inside an ``except`` block: re-raise the exception as :func:`~dlscaffold.errors.blame` turns
    it (the project's code named), so that a call that does not raise enters no context manager."""
    with blame(where):
        raise  # the exception the caller's except block handles


def routes(inputs: dict[str, str], models: list[str]) -> list[Route]:
    """A config's ``inputs`` (argument -> source, or source.tensor) as routes, in order."""
    found = []
    for arg, text in inputs.items():
        source, tensor = split_source(text, models)
        found.append((arg, source, tensor or arg))
    return found


def bound_routes(inputs: dict[str, str], models: list[str], fn: Callable[..., Any], what: str) -> list[Route]:
    """A loss's, eval's or metric's ``inputs`` as routes in the order ``fn`` takes them: bound by name
    (:func:`~dlscaffold.parts.signatures.input_order`; prepare has refused inputs that do not bind)."""
    by_key = {route[0]: route for route in routes(inputs, models)}
    order, _ = input_order(fn, list(inputs), what)
    return [by_key[key] for key in order]


def batch_size_of(batch: dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, (torch.Tensor, list)):
            return len(value)
    raise UserError("dataset items hold no tensors; CustomDataSet.__getitem__ must return named values")


def needed_models(config: Config, inputs: dict[str, list[Route]], terms: list[Term | MetricTerm]) -> set[str]:
    """The models whose outputs ``terms`` (the losses and evals), ``log_images`` or ``tta_outputs``
    read, and every model those read from (see :attr:`Flow.needed`)."""
    models = list(config.info_flow)
    shown = [*config.logging_params.log_images, *config.training_params.tta_outputs]
    needed = {src for t in terms for _, src, _ in t.sources} | {split_source(s, models)[0] for s in shown}
    needed &= set(models)
    for name in reversed(models):  # a model's sources come before it
        if name in needed:
            needed.update(src for _, src, _ in inputs[name] if src in config.info_flow)
    return needed


def _terms(config: Config, kind: str, registry: Registry) -> list[Term]:
    terms = []
    for model_name, spec in config.info_flow.items():
        for key, term in getattr(spec, kind).items():
            if is_torchmetric(term.function or key):
                continue  # a MetricTerm (_metric_terms)
            fn = registry.get(term.function or key)
            unguarded = getattr(fn, "__wrapped__", None) if spec_of(fn) is not None else None
            terms.append(
                Term(
                    name=metric_name(model_name, key, term),
                    path=f"info_flow.{model_name}.{kind}.{key}",
                    fn=_with_options(fn, term.options),
                    weight=getattr(term, "weight", 0.0),
                    sources=bound_routes(term.inputs, list(config.info_flow), fn, term.function or key),
                    members=members_fn(fn) if kind == "evals" else None,
                    reduction=getattr(term, "reduction", "mean"),
                    unguarded=_with_options(unguarded, term.options) if unguarded is not None else None,
                )
            )
    return terms


def _with_options(fn: Callable[..., torch.Tensor], options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    """``fn`` with a term's ``options`` bound as keyword arguments (checked by prepare)."""
    return functools.partial(fn, **options) if options else fn


def _metric_terms(config: Config, device: torch.device) -> list[MetricTerm]:
    """The ``torchmetrics.<Class>`` evals, one metric object each, on ``device``."""
    terms = []
    for model_name, spec in config.info_flow.items():
        for key, term in spec.evals.items():
            name = term.function or key
            if is_torchmetric(name):
                path = f"info_flow.{model_name}.evals.{key}"
                metric = build_metric(name, dict(getattr(term, "init_args", None) or {}), path)
                terms.append(
                    MetricTerm(
                        metric_name(model_name, key, term),
                        path,
                        metric.to(device),
                        bound_routes(term.inputs, list(config.info_flow), metric.update, f"{name}.update"),
                    )
                )
    return terms


def _construct(cls: type, init_args: dict[str, Any], name: str) -> nn.Module:
    """``cls(**init_args)``; a value the constructor rejects is the user's to fix, in one line."""
    try:
        return cls(**init_args)
    except Exception as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in init_args.items())
        raise UserError(
            f"info_flow.{name}.init_args: {name}({shown}) failed: {first_line(exc)}; "
            "rerun with --debug for the traceback"
        ) from exc


def build_flow(
    config: Config,
    project: Project,
    losses: Registry,
    evals: Registry,
    device: torch.device,
    weights: tuple[Path, int] | None = None,
) -> Flow:
    """Build the models in ``info_flow`` order and the loss / eval terms.

    Args:
        config: a config from :func:`~dlscaffold.prepare.prepare` (loaded models' ``init_args``
            filled in, their ``epoch`` a saved epoch's number).
        project: the project's model classes.
        losses, evals: where term names are looked up.
        device: where the models go.
        weights: ``(run_dir, epoch)`` to load every model from (evaluation and resume); by default
            only models with a ``model_dir`` load weights.
    """
    models, inputs, trained = {}, {}, []
    for name, spec in config.info_flow.items():
        if spec.ema_of is not None:  # an EMA model: a copy of its source as built (dlscaffold.parts.ema)
            model = copy.deepcopy(models[spec.ema_of])
        else:
            model = _construct(project.model_classes[name], spec.init_args, name)
        if weights is not None:
            load_weights(model, weights_path(weights[0], name, weights[1]), f"info_flow.{name}")
        elif spec.model_dir is not None:  # spec.epoch: a number (prepare resolves best / last)
            path = model_weights(spec.model_dir, name, spec.epoch) or weights_path(spec.model_dir, name, spec.epoch)
            load_weights(model, path, f"info_flow.{name}.model_dir")
        model.to(device)
        if spec.train:
            trained.append(name)
        else:
            model.requires_grad_(False)  # frozen or EMA: in no optimizer, but gradients still pass through
            model.eval()
        models[name], inputs[name] = model, routes(spec.inputs, list(config.info_flow))
    terms = {kind: _terms(config, kind, registry) for kind, registry in (("losses", losses), ("evals", evals))}
    metrics = _metric_terms(config, device)
    needed = needed_models(config, inputs, [*terms["losses"], *terms["evals"], *metrics])
    return Flow(models, inputs, trained, terms["losses"], terms["evals"], device, metrics=metrics, needed=needed)
