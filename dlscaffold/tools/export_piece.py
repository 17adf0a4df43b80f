"""The piece of a run's ``info_flow`` that ``dlscaffold export`` exports, as one ``nn.Module``.

A piece is a set of models run in ``info_flow`` order, the named tensors it takes from outside
(the dataset's, or another model's when a model is exported alone) and the named outputs it
returns. :class:`FlowPiece` runs it through the runtime's own routing
(:meth:`dlscaffold.parts.flow.Flow.forward_missing`), so the exported graph reads each tensor where
training read it. :func:`sample_runs` gives the run's validation samples, the flow's eager outputs
for them and the piece's inputs: what the export is traced with and checked against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlscaffold.config import DATASET, TRAINER, split_source
from dlscaffold.data import collate
from dlscaffold.errors import UserError, available, did_you_mean
from dlscaffold.parts.flow import Flow, batch_size_of
from dlscaffold.parts.seeding import forked_rng

SAMPLES = 16  # validation samples checked at most: the full batch of the check
MIDDLE_BATCH = 7  # a batch size other than the one traced with, and not 1

Tensor = tuple[str, str]  # (source: "dataset" or a model, tensor name)


def tensor_name(source: str, tensor: str) -> str:
    """How an input or output is named in messages, ONNX and ``export.json``: a dataset tensor by
    its own name (``features``), a model's as ``Model.tensor``."""
    return tensor if source == DATASET else f"{source}.{tensor}"


@dataclass
class Piece:
    """What to export: ``models`` run in order, on ``inputs``, returning ``outputs``."""

    label: str  # the model's name (--model) or the outputs joined with "+" (--outputs)
    models: list[str]
    inputs: list[Tensor]  # positional, in the order the piece first reads them
    outputs: list[Tensor]  # (model, tensor), in the order asked for


class FlowPiece(nn.Module):
    """Some of a run's models, routed as in training, as one module.

    ``forward(*inputs)`` takes :attr:`Piece.inputs` positionally (each with the batch first) and
    returns the one output, or a tuple of :attr:`Piece.outputs` in their order. ``trainer`` inputs
    (``epoch``, ``step``) are the loaded epoch's, fixed in the export.
    """

    def __init__(self, flow: Flow, piece: Piece):
        super().__init__()
        self.piece = piece
        # registered, so that the exported program holds their weights; keys may not hold dots
        self.models = nn.ModuleDict({name.replace(".", "_"): flow.models[name] for name in piece.models})
        self.flow = Flow(
            models={name: flow.models[name] for name in piece.models},
            inputs={name: flow.inputs[name] for name in piece.models},
            trained=[],
            losses=[],
            evals=[],
            device=flow.device,
            clock=dict(flow.clock),
        )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        batch: dict[str, torch.Tensor] = {}
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        for (source, tensor), value in zip(self.piece.inputs, inputs, strict=True):
            (batch if source == DATASET else outputs.setdefault(source, {}))[tensor] = value
        self.flow.forward_missing(batch, outputs, set(self.piece.models), wrapped=False)
        found = tuple(outputs[model][tensor] for model, tensor in self.piece.outputs)
        return found[0] if len(found) == 1 else found


def choose_piece(flow: Flow, model: str | None, outputs: list[str], batch: dict[str, Any]) -> Piece:
    """The piece ``--model`` or ``--outputs`` asks for, its names checked against what the run's
    models return for ``batch`` and its inputs and outputs checked to be tensors."""
    if model is not None and model not in flow.models:
        raise UserError(
            f"--model: no model '{model}' in the run; {did_you_mean(model, flow.models)}{available(flow.models)}"
        )
    produced = eager_outputs(flow, batch)
    piece = model_piece(flow, model, produced) if model is not None else outputs_piece(flow, outputs, produced)
    check_tensors(piece, batch, produced)
    return piece


def model_piece(flow: Flow, name: str, produced: dict[str, dict[str, Any]]) -> Piece:
    """``--model NAME``: that model alone, every output it returns; an input another model computes
    (``Encoder.z`` for a decoder) becomes an input of the piece."""
    return Piece(name, [name], _inputs(flow, [name]), [(name, tensor) for tensor in produced[name]])


def outputs_piece(flow: Flow, wanted: list[str], produced: dict[str, dict[str, Any]]) -> Piece:
    """``--outputs Model.tensor ...``: the models those outputs need, from the dataset's tensors on."""
    outputs: list[Tensor] = []
    for text in dict.fromkeys(wanted):  # each once, in the order given
        model, tensor = split_source(text, flow.models)
        if model not in flow.models:
            raise UserError(
                f"--outputs {text}: no model '{model}' in the run; expected MODEL.TENSOR; "
                f"{did_you_mean(model, flow.models)}{available(flow.models)}"
            )
        if tensor is None or tensor not in produced[model]:
            named = f"returns no tensor '{tensor}'; " if tensor is not None else "is a model; "
            raise UserError(
                f"--outputs {text}: {model} {named}expected MODEL.TENSOR; {did_you_mean(tensor or '', produced[model])}"
                f"{available(f'{model}.{t}' for t in produced[model])}"
            )
        outputs.append((model, tensor))
    needed = flow.sources({model for model, _ in outputs})
    models = [name for name in flow.models if name in needed]
    return Piece("+".join(dict.fromkeys(wanted)), models, _inputs(flow, models), outputs)


def _inputs(flow: Flow, models: list[str]) -> list[Tensor]:
    """The tensors ``models`` read from outside themselves, in the order they are first read."""
    found: dict[Tensor, None] = {}
    for name in models:
        for _, source, tensor in flow.inputs[name]:
            if source != TRAINER and (source == DATASET or source not in models):
                found[(source, tensor)] = None
    return list(found)


def sample_batch(run: Any, echo: Any) -> dict[str, Any]:
    """Up to :data:`SAMPLES` of the run's validation points (cycled to at least :data:`MIDDLE_BATCH`),
    collated, on the run's device, through ``transform_batch(batch, train=False)``: what
    :meth:`dlscaffold.api.LoadedRun.forward` does to a batch."""
    split = "val" if run.split.get("val") else "train"
    if split != "val":
        echo("note: the run has no validation points; checking on training points")
    indices = list(run.split[split])[:SAMPLES]
    if not indices:
        raise UserError(f"{run.run_dir}: the run's split holds no points to check the export on")
    indices = [indices[i % len(indices)] for i in range(max(len(indices), MIDDLE_BATCH))]
    dataset = run.dataset()
    batch = collate([dataset[i] for i in indices])
    batch = {k: v.to(run.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    transform = getattr(dataset, "transform_batch", None)
    with forked_rng(), torch.no_grad():
        return transform(batch, False) if callable(transform) else batch


def eager_outputs(flow: Flow, batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every model's outputs for ``batch``, in eval mode without gradients (the reference)."""
    flow.set_mode(training=False)
    with forked_rng(), torch.no_grad():
        return flow.forward(batch)


def piece_tensors(batch: dict[str, Any], produced: dict, which: Iterable[Tensor]) -> list[Any]:
    """The tensors ``which`` names, from the batch (dataset) or the models' outputs."""
    return [batch.get(tensor) if source == DATASET else produced[source].get(tensor) for source, tensor in which]


def check_tensors(piece: Piece, batch: dict[str, Any], produced: dict) -> None:
    """Refuse, in one line, an input the dataset does not provide or that is not a tensor, and an
    output that is not a tensor (an exported program takes and returns tensors)."""
    for (source, tensor), value in zip(piece.inputs, piece_tensors(batch, produced, piece.inputs), strict=True):
        name = tensor_name(source, tensor)
        if value is None and source == DATASET:
            raise UserError(
                f"input '{name}': the dataset's items hold no tensor '{tensor}'; "
                f"{did_you_mean(tensor, batch)}{available(batch)}"
            )
        if not isinstance(value, torch.Tensor):
            raise UserError(
                f"input '{name}' is a {type(value).__name__}, not a tensor: an export takes tensors only; "
                "export a piece that does not read it"
            )
    for (model, tensor), value in zip(piece.outputs, piece_tensors(batch, produced, piece.outputs), strict=True):
        if not isinstance(value, torch.Tensor):
            raise UserError(
                f"output '{model}.{tensor}' is a {type(value).__name__}, not a tensor: an export returns "
                "tensors only; ask for its tensor outputs with --outputs"
            )


def sliced(batch: dict[str, Any], size: int) -> dict[str, Any]:
    """The first ``size`` samples of a collated batch (tensors and lists)."""
    return {k: v[:size] if isinstance(v, (torch.Tensor, list)) else v for k, v in batch.items()}


def check_cases(flow: Flow, piece: Piece, batch: dict[str, Any]) -> list[tuple[int, list[Any], list[Any]]]:
    """``(batch size, the piece's inputs, the run's eager outputs)`` for batch sizes 1,
    :data:`MIDDLE_BATCH` and the whole sample batch: each the flow run on the first samples, so an
    input another model computes is what the run's flow computes for them."""
    cases = []
    for size in sorted({1, MIDDLE_BATCH, batch_size_of(batch)}):
        part = sliced(batch, size)
        produced = eager_outputs(flow, part)
        cases.append((size, piece_tensors(part, produced, piece.inputs), piece_tensors(part, produced, piece.outputs)))
    return cases
