"""``logging_params.log_images``: tensors shown as images in TensorBoard at each validation.

Each entry names a tensor as ``<Model>.<output>`` (an output of a model in ``info_flow``) or
``dataset.<key>`` (a value of the dataset's items). At each validation the first
:data:`NUM_SAMPLES` samples of the first validation batch are drawn side by side in one image, tag
``images/<entry>``.

An image tensor is ``(B, H, W)`` (grey) or ``(B, C, H, W)`` with ``C`` 1 (grey) or 3 (RGB), of a
float or integer dtype; channels-last ``(B, H, W, C)`` is not accepted (permute it in the model or
dataset). Every image is scaled to [0, 1] on its own (its minimum black, its maximum white; a
constant image is black; NaN and inf are black), so values of any range can be shown.

:func:`parse_image_specs` checks the entries before anything is built; :func:`image_problems` checks
the tensors on the pre-run batch; :func:`collect_images` takes the samples during validation and
:func:`image_grids` draws them for :meth:`dlscaffold.records.rundir.RunLog.images`.
"""

from __future__ import annotations

from typing import Any

import torch

from dlscaffold.config import DATASET
from dlscaffold.errors import did_you_mean

KEY = "logging_params.log_images"
NUM_SAMPLES = 8  # samples drawn per entry
PADDING = 2  # pixels between samples in a grid
EXPECTED = "expected images (B, H, W) or (B, C, H, W) with C 1 or 3"


def split_spec(spec: str) -> tuple[str, str]:
    """``'Model.output'`` -> ``('Model', 'output')`` (split at the first dot)."""
    source, _, name = spec.partition(".")
    return source, name


def parse_image_specs(specs: list[str], model_names: list[str]) -> list[str]:
    """The problems of ``log_images`` entries, one line each (empty if none).

    Args:
        specs: the entries, ``<Model>.<output>`` or ``dataset.<key>``.
        model_names: the models of ``info_flow``.
    """
    problems = []
    sources = [DATASET, *model_names]
    for spec in specs:
        source, name = split_spec(spec)
        if not source or not name:
            problems.append(f"{KEY}: found '{spec}'; expected '<Model>.<output>' or '{DATASET}.<key>'")
        elif source not in sources:
            problems.append(
                f"{KEY}: '{spec}' names unknown source '{source}'; {did_you_mean(source, sources)}"
                f"expected '{DATASET}' or a model in info_flow: {', '.join(sources)}"
            )
    return problems


def image_problem(spec: str, tensor: Any) -> str | None:
    """Why ``tensor`` cannot be shown as images, in one line (None if it can).

    Args:
        spec: the ``log_images`` entry, for the message.
        tensor: the tensor it names, with its batch dimension.
    """
    if not isinstance(tensor, torch.Tensor):
        return f"{KEY}: '{spec}' is a {type(tensor).__name__}, not a tensor; {EXPECTED}"
    shape = tuple(tensor.shape)
    if tensor.dtype == torch.bool or tensor.is_complex():
        return f"{KEY}: '{spec}' has dtype {tensor.dtype}; expected a float or integer tensor of images"
    if not (tensor.dim() == 3 or (tensor.dim() == 4 and shape[1] in (1, 3))) or 0 in shape:
        return f"{KEY}: '{spec}' has shape {shape}; {EXPECTED}"
    return None


def find_image_tensor(spec: str, batch: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> tuple[Any, str | None]:
    """The tensor an entry names, or a one-line problem when the batch or model has none by that name."""
    source, name = split_spec(spec)
    pool = batch if source == DATASET else outputs.get(source, {})
    if name in pool:
        return pool[name], None
    holder = "the dataset's items hold" if source == DATASET else f"model '{source}' returns"
    return None, (
        f"{KEY}: '{spec}': {holder} no '{name}'; {did_you_mean(name, list(pool))}"
        f"expected one of: {', '.join(pool) or 'nothing'}"
    )


def image_problems(specs: list[str], batch: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> list[str]:
    """Every ``log_images`` entry checked on a batch (the pre-run check): the tensor exists and is images."""
    problems = []
    for spec in specs:
        tensor, problem = find_image_tensor(spec, batch, outputs)
        problem = problem or image_problem(spec, tensor)
        if problem:
            problems.append(problem)
    return problems


def collect_images(
    specs: list[str], batch: dict[str, Any], outputs: dict[str, dict[str, Any]]
) -> dict[str, torch.Tensor]:
    """The first :data:`NUM_SAMPLES` samples of each entry's tensor, detached, on the CPU.

    Args:
        specs: the ``log_images`` entries (checked before training).
        batch: the first validation batch.
        outputs: the models' outputs on it (:meth:`dlscaffold.parts.flow.Flow.forward`).

    Returns:
        ``{entry: samples}``; an entry whose tensor is missing or not images is left out.
    """
    images = {}
    for spec in dict.fromkeys(specs):
        tensor, problem = find_image_tensor(spec, batch, outputs)
        if problem is None and image_problem(spec, tensor) is None:
            images[spec] = tensor[:NUM_SAMPLES].detach().cpu()
    return images


def _normalised(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` scaled to [0, 1] per image; constant images and non-finite values are 0."""
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=0.0, neginf=0.0)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def image_grid(tensor: torch.Tensor, columns: int = NUM_SAMPLES) -> torch.Tensor:
    """The first :data:`NUM_SAMPLES` images of ``tensor`` side by side, each scaled to [0, 1].

    Args:
        tensor: ``(B, H, W)`` or ``(B, C, H, W)`` with ``C`` 1 or 3 (see :func:`image_problem`).
        columns: images per row.

    Returns:
        ``(C, H', W')`` floats in [0, 1] (``C`` 1 or 3), on the CPU, :data:`PADDING` black pixels
        between and around the images.
    """
    images = tensor.detach()[:NUM_SAMPLES].cpu()
    images = images.unsqueeze(1) if images.dim() == 3 else images
    images = _normalised(images)
    count, channels, height, width = images.shape
    rows, columns = -(-count // columns), min(columns, count)
    grid = torch.zeros(channels, rows * (height + PADDING) + PADDING, columns * (width + PADDING) + PADDING)
    for i, image in enumerate(images):
        top = (i // columns) * (height + PADDING) + PADDING
        left = (i % columns) * (width + PADDING) + PADDING
        grid[:, top : top + height, left : left + width] = image
    return grid


def image_grids(images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{entry: samples}`` from :func:`collect_images` as ``{"images/<entry>": grid}`` for TensorBoard."""
    return {f"images/{spec}": image_grid(samples) for spec, samples in images.items()}
