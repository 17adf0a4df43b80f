"""``info_flow`` made real: build the models, route named tensors, compute losses and evals.

Tensors flow dataset -> models (in ``info_flow`` order) -> losses / evals. A model's ``forward``
receives the tensors named in its ``inputs`` as keyword arguments and returns a dict of named
tensors; a loss or eval receives its ``inputs`` positionally, in the order the config lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dlscaffold.checks import DATASET, checkpoint_path, saved_init_args
from dlscaffold.config import Config
from dlscaffold.errors import UserError
from dlscaffold.losses import per_sample
from dlscaffold.project import Project
from dlscaffold.registry import Registry


@dataclass
class Term:
    """One configured loss or eval."""

    name: str  # the metric name, "<Model>/<logging_name>"
    path: str  # its key path in the config, for messages
    fn: Callable[..., torch.Tensor]
    weight: float
    sources: list[tuple[str, str]]  # (tensor name, "dataset" or model name), in call order


@dataclass
class Flow:
    """The built models and the terms that read their outputs."""

    models: dict[str, nn.Module]
    inputs: dict[str, list[tuple[str, str]]]
    trained: list[str]
    losses: list[Term]
    evals: list[Term]

    @property
    def term_names(self) -> list[str]:
        return [t.name for t in self.losses + self.evals]

    def set_mode(self, training: bool) -> None:
        """Trained models follow ``training``; frozen ones stay in eval mode."""
        for name, model in self.models.items():
            model.train(training and name in self.trained)

    def forward(self, batch: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """Run every model in order; returns each model's dict of named outputs."""
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        for name, model in self.models.items():
            kwargs = {t: _fetch(batch, outputs, t, src, f"model '{name}'") for t, src in self.inputs[name]}
            try:
                out = model(**kwargs)
            except Exception as exc:  # free unless raised; lets the one-batch check name the model
                exc.dlscaffold_where = f"info_flow.{name}: {name}.forward"
                raise
            if not isinstance(out, dict):
                raise UserError(f"info_flow.{name}: {name}.forward returned {type(out).__name__}; expected a dict of named tensors")
            outputs[name] = out
        return outputs

    def values(self, terms: list[Term], batch: dict[str, Any], outputs: dict) -> dict[str, torch.Tensor]:
        """Each term's per-sample values ``(B,)``, or a scalar batch mean."""
        values = {}
        for t in terms:
            args = [_fetch(batch, outputs, tensor, src, t.path) for tensor, src in t.sources]
            try:
                values[t.name] = per_sample(t.fn(*args))
            except Exception as exc:
                exc.dlscaffold_where = t.path
                raise
        return values


def _fetch(batch: dict, outputs: dict, tensor: str, source: str, who: str) -> Any:
    pool = batch if source == DATASET else outputs[source]
    try:
        return pool[tensor]
    except KeyError:
        origin = "the dataset's items" if source == DATASET else f"model '{source}'"
        raise UserError(
            f"{who} needs tensor '{tensor}' from {source}, but {origin} hold only: {', '.join(pool) or 'nothing'}"
        ) from None


def batch_size_of(batch: dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, (torch.Tensor, list)):
            return len(value)
    raise UserError("dataset items hold no tensors; CustomDataSet.__getitem__ must return named values")


def resolve_init_args(config: Config) -> None:
    """Fill each loaded model's ``init_args`` from its earlier run's config (explicit ones win)."""
    for name, spec in config.info_flow.items():
        if spec.model_dir is not None:
            spec.init_args = {**saved_init_args(spec.model_dir, name), **spec.init_args}


def _terms(config: Config, kind: str, registry: Registry) -> list[Term]:
    terms = []
    for model_name, spec in config.info_flow.items():
        for key, term in getattr(spec, kind).items():
            terms.append(Term(
                name=f"{model_name}/{term.logging_name or key}",
                path=f"info_flow.{model_name}.{kind}.{key}",
                fn=registry.get(term.function or key),
                weight=getattr(term, "weight", 0.0),
                sources=list(term.inputs.items()),
            ))
    names = [t.name for t in terms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"info_flow: {kind} logged twice as {', '.join(duplicates)}; give each a distinct logging_name")
    return terms


def load_weights(model: nn.Module, path: Path, who: str) -> None:
    """Load a saved ``state_dict`` (``weights_only``: a checkpoint can never run code)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise UserError(f"{who}: weights in {path} do not fit the model ({first}); check init_args") from None


def build_flow(config: Config, project: Project, losses: Registry, evals: Registry,
               device: torch.device, weights: tuple[Path, int] | None = None) -> Flow:
    """Build the models in ``info_flow`` order and the loss / eval terms.

    Args:
        config: a validated config whose ``init_args`` were resolved (:func:`resolve_init_args`).
        project: the project's model classes.
        losses, evals: where term names are looked up.
        device: where the models go.
        weights: ``(run_dir, epoch)`` to load every model from (evaluation and resume); by default
            only models with a ``model_dir`` load weights.
    """
    models, inputs, trained = {}, {}, []
    for name, spec in config.info_flow.items():
        model = project.model_classes[name](**spec.init_args)
        if weights is not None:
            load_weights(model, checkpoint_path(weights[0], name, weights[1]), f"info_flow.{name}")
        elif spec.model_dir is not None:
            load_weights(model, checkpoint_path(spec.model_dir, name, spec.epoch), f"info_flow.{name}.model_dir")
        model.to(device)
        if spec.train:
            trained.append(name)
        else:
            model.requires_grad_(False)  # frozen: in no optimizer, but gradients still pass through
            model.eval()
        models[name], inputs[name] = model, list(spec.inputs.items())
    return Flow(models, inputs, trained, _terms(config, "losses", losses), _terms(config, "evals", evals))
