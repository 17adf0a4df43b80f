"""Data-dependent initialisation: a model's ``init_from_data(**inputs)``, once, before a fresh run.

A model that defines ``init_from_data`` receives the tensors its ``forward`` would get (its
``inputs``: the dataset's, after ``transform_batch(batch, train=False)``, and earlier models'
outputs) for the first ``dataloading_params.init_samples`` points of the training split, as one
batch, and sets its weights from them (for example a first convolution that whitens image
patches). It is called before the first epoch of a fresh run, in ``info_flow`` order, so a later
model sees the outputs of an earlier model already initialised. It is never called on ``--resume``
(the checkpoint holds the weights), for a model that loads weights (``model_dir``) or for an EMA
model; an EMA model of an initialised model starts from its initialised weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dlscaffold.data import collate
from dlscaffold.errors import blame


def wanting(run: Any) -> list[str]:
    """The models that will get ``init_from_data``: they define it and load no weights."""
    found = []
    for name, spec in run.config.info_flow.items():
        method = getattr(run.flow.models[name], "init_from_data", None)
        if callable(method) and spec.model_dir is None and spec.ema_of is None:
            found.append(name)
    return found


@torch.no_grad()
def init_from_data(run: Any, indices: list[int], echo: Callable[[str], None]) -> list[str]:
    """Call ``init_from_data`` of every :func:`wanting` model (see the module); returns their names."""
    names = wanting(run)
    if not names:
        return []
    count = min(run.config.dataloading_params.init_samples, len(indices))
    batch = run.transform(run.placement.move(collate([run.dataset[i] for i in indices[:count]])), False)
    flow, outputs = run.flow, {}
    flow.set_mode(training=False)
    last = max(list(flow.models).index(name) for name in names)
    for name, model in list(flow.models.items())[: last + 1]:
        kwargs = {
            arg: flow.fetch(batch, outputs, tensor, src, f"info_flow.{name}.inputs.{arg}")
            for arg, src, tensor in flow.inputs[name]
        }
        if name in names:
            with blame(f"info_flow.{name}: {name}.init_from_data"):
                model.init_from_data(**kwargs)
            _copy_into_averages(run, name)
        if list(flow.models).index(name) < last:  # a later model may read its outputs
            with blame(f"info_flow.{name}: {name}.forward"):
                outputs[name] = model(**kwargs)
    echo(f"Initialised {', '.join(names)} from {count} training points (init_from_data)")
    return names


def _copy_into_averages(run: Any, source: str) -> None:
    """EMA models of ``source`` start from its initialised weights, as they start from its initial ones."""
    for name, spec in run.config.info_flow.items():
        if spec.ema_of == source:
            run.flow.models[name].load_state_dict(run.flow.models[source].state_dict())
