"""``info_flow`` made real: build the models, route named tensors, compute losses and evals.

Tensors flow dataset -> models (in ``info_flow`` order) -> losses / evals. A model's ``forward``
receives the tensors named in its ``inputs`` as keyword arguments and returns a dict of named
tensors; a loss or eval receives its ``inputs`` positionally, in the order the config lists them.
The source ``trainer`` gives the current ``epoch`` (from 1) and global ``step`` as 0-dim tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dlscaffold.checkpoint import load_weights, weights_path
from dlscaffold.config import DATASET, TRAINER, Config
from dlscaffold.errors import UserError
from dlscaffold.losses import members_fn, per_sample
from dlscaffold.project import Project
from dlscaffold.registry import Registry


@dataclass
class Term:
    """One configured loss or eval."""

    name: str  # the metric name, "<Model>/<logging_name>"
    path: str  # its key path in the config, for messages
    fn: Callable[..., torch.Tensor]
    weight: float
    sources: list[tuple[str, str]]  # (tensor name, "dataset", "trainer" or model name), in call order
    members: Callable[..., torch.Tensor] | None = None  # an ensemble eval's per-member values (B, E)
    num_members: int = 0  # E, known after the first batch

    @property
    def names(self) -> list[str]:
        """The names it logs: its own, then ``<name>_<i>`` for each ensemble member."""
        return [self.name, *(f"{self.name}_{i}" for i in range(self.num_members))]


@dataclass
class Flow:
    """The built models and the terms that read their outputs."""

    models: dict[str, nn.Module]
    inputs: dict[str, list[tuple[str, str]]]
    trained: list[str]
    losses: list[Term]
    evals: list[Term]
    device: torch.device | None = None  # where the models are
    clock: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "step": 0})  # the "trainer" source

    @property
    def term_names(self) -> list[str]:
        return [name for t in self.losses + self.evals for name in t.names]

    def set_mode(self, training: bool) -> None:
        """Trained models follow ``training``; frozen ones stay in eval mode."""
        for name, model in self.models.items():
            model.train(training and name in self.trained)

    def forward(self, batch: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """Run every model in order; returns each model's dict of named outputs."""
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        for name, model in self.models.items():
            kwargs = {t: self.fetch(batch, outputs, t, src, f"model '{name}'") for t, src in self.inputs[name]}
            try:
                out = model(**kwargs)
            except Exception as exc:  # free unless raised; lets error messages name the model
                exc.dlscaffold_where = f"info_flow.{name}: {name}.forward"
                raise
            if not isinstance(out, dict):
                raise UserError(f"info_flow.{name}: {name}.forward returned {type(out).__name__}; "
                                "expected a dict of named tensors")
            outputs[name] = out
        return outputs

    def term_args(self, term: Term, batch: dict[str, Any], outputs: dict) -> list[Any]:
        """A term's input tensors, in the config's order."""
        return [self.fetch(batch, outputs, tensor, src, term.path) for tensor, src in term.sources]

    def values(self, terms: list[Term], batch: dict[str, Any], outputs: dict) -> dict[str, torch.Tensor]:
        """Each term's per-sample values ``(B,)`` (or a scalar batch mean), and its members' values."""
        values = {}
        for t in terms:
            args = self.term_args(t, batch, outputs)
            try:
                values[t.name] = per_sample(t.fn(*args))
                if t.members is not None:
                    members = t.members(*args)  # (B, E)
                    t.num_members = members.shape[1]
                    values.update({f"{t.name}_{i}": members[:, i] for i in range(t.num_members)})
            except Exception as exc:
                exc.dlscaffold_where = t.path
                raise
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
            raise UserError(f"{who} needs tensor '{tensor}' from {source}, but {origin} hold only: "
                            f"{', '.join(pool) or 'nothing'}") from None


def batch_size_of(batch: dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, (torch.Tensor, list)):
            return len(value)
    raise UserError("dataset items hold no tensors; CustomDataSet.__getitem__ must return named values")


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
                members=members_fn(registry.get(term.function or key)) if kind == "evals" else None,
            ))
    return terms


def _construct(cls: type, init_args: dict[str, Any], name: str) -> nn.Module:
    """``cls(**init_args)``; a value the constructor rejects is the user's to fix, in one line."""
    try:
        return cls(**init_args)
    except Exception as exc:
        message = (str(exc).strip().splitlines() or [""])[0]
        shown = ", ".join(f"{k}={v!r}" for k, v in init_args.items())
        raise UserError(f"info_flow.{name}.init_args: {name}({shown}) failed: {type(exc).__name__}: {message}; "
                        "rerun with --debug for the traceback") from exc


def build_flow(config: Config, project: Project, losses: Registry, evals: Registry,
               device: torch.device, weights: tuple[Path, int] | None = None) -> Flow:
    """Build the models in ``info_flow`` order and the loss / eval terms.

    Args:
        config: a config from :func:`~dlscaffold.prepare.prepare` (loaded models' ``init_args`` filled in).
        project: the project's model classes.
        losses, evals: where term names are looked up.
        device: where the models go.
        weights: ``(run_dir, epoch)`` to load every model from (evaluation and resume); by default
            only models with a ``model_dir`` load weights.
    """
    models, inputs, trained = {}, {}, []
    for name, spec in config.info_flow.items():
        model = _construct(project.model_classes[name], spec.init_args, name)
        if weights is not None:
            load_weights(model, weights_path(weights[0], name, weights[1]), f"info_flow.{name}")
        elif spec.model_dir is not None:
            load_weights(model, weights_path(spec.model_dir, name, spec.epoch), f"info_flow.{name}.model_dir")
        model.to(device)
        if spec.train:
            trained.append(name)
        else:
            model.requires_grad_(False)  # frozen: in no optimizer, but gradients still pass through
            model.eval()
        models[name], inputs[name] = model, list(spec.inputs.items())
    return Flow(models, inputs, trained, _terms(config, "losses", losses), _terms(config, "evals", evals), device)
