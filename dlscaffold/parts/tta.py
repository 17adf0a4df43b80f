"""Test-time augmentation: model outputs averaged over weighted views of each evaluated batch.

A ``CustomDataSet`` may define ``tta_views(self, batch) -> [(weight, view), ...]``: views of a batch
after ``transform_batch(batch, train=False)`` (the batch itself, its mirror image, shifted copies),
each a batch dict like it. With ``training_params.tta_outputs: [<Model>.<output>, ...]``, validation,
``dlscaffold evaluate`` and ``load_run(...).evaluate`` run every model on every view and replace each
named output by the weighted mean over the views (weights normalised to sum to 1, in float32); all
other outputs are the first view's. Losses and evals then read the batch and those outputs.
Training batches never see it. ``dlscaffold evaluate --no-tta`` (``evaluate(tta=False)``) scores
the plain forward pass; the evaluation's JSON records ``"tta"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dlscaffold.config import Config, split_source
from dlscaffold.errors import UserError, blame


@dataclass
class Views:
    """The dataset's ``tta_views`` and the outputs averaged over them."""

    method: Callable[[dict[str, Any]], Any]
    outputs: list[tuple[str, str]]  # (model, output name)
    count: int = 0  # views per batch, known after the first batch

    def record(self) -> dict[str, Any]:
        """What an evaluation's JSON says about it."""
        return {"outputs": [f"{m}.{o}" for m, o in self.outputs], "views": self.count}

    def forward(self, flow: Any, batch: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """Every model's outputs for ``batch``, the named ones averaged over its views."""
        with blame("CustomDataSet.tta_views"):
            views = list(self.method(batch))
        if not views or sum(float(w) for w, _ in views) <= 0:
            raise UserError(
                "CustomDataSet.tta_views returned no views of positive weight; expected [(weight, batch), ...]"
            )
        total, self.count = sum(float(w) for w, _ in views), len(views)
        averaged: dict[tuple[str, str], torch.Tensor] = {}
        first: dict[str, dict[str, torch.Tensor]] = {}
        for i, (weight, view) in enumerate(views):
            outputs = flow.forward(view, needed_only=True)
            if i == 0:
                first = {model: dict(values) for model, values in outputs.items()}
            for model, name in self.outputs:
                if name not in outputs[model]:
                    raise UserError(
                        f"training_params.tta_outputs: {model} has no output '{name}'; "
                        f"it gives: {', '.join(outputs[model])}"
                    )
                part = outputs[model][name].float() * (float(weight) / total)
                averaged[model, name] = part if i == 0 else averaged[model, name] + part
        for (model, name), value in averaged.items():
            first[model][name] = value
        return first


def views_of(dataset: Any, config: Config) -> Views | None:
    """The run's test-time augmentation, or None when ``tta_outputs`` names nothing.

    Raises:
        UserError: an entry is not ``<Model>.<output>`` of a model in info_flow, or the dataset has
            no ``tta_views`` method.
    """
    names = config.training_params.tta_outputs
    if not names:
        return None
    outputs = []
    for entry in names:
        model, output = split_source(entry, list(config.info_flow))
        if model not in config.info_flow or not output:
            raise UserError(
                f"training_params.tta_outputs: found '{entry}'; expected <Model>.<output> of a model in info_flow "
                f"({', '.join(config.info_flow)})"
            )
        outputs.append((model, output))
    method = getattr(dataset, "tta_views", None)
    if not callable(method):
        raise UserError(
            "training_params.tta_outputs needs CustomDataSet.tta_views(batch) -> [(weight, batch), ...] in "
            "dataloader.py; define it, or remove tta_outputs"
        )
    return Views(method, outputs)
