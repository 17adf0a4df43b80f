"""One batch through a built run: the last check before training writes anything.

:func:`check_batch` takes a run from :func:`~dlscaffold.builder.build_run` and sends two samples
through every model, loss and eval, so that a wrong tensor name or shape fails in seconds, before
the run folder is created.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from dlscaffold.data import collate
from dlscaffold.epoch import evaluate_batch
from dlscaffold.errors import CodeError, ConfigError, UserError, blame, first_line
from dlscaffold.flow import batch_size_of
from dlscaffold.images import image_problems
from dlscaffold.losses import check_inputs
from dlscaffold.seeding import forked_rng


def check_batch(run: Any, indices: list[int]) -> None:
    """Forward, losses and evals on two samples, so a wrong tensor name or shape fails in seconds.

    The last check before the run folder is created, once models exist: the inputs of every
    built-in loss and eval must have the shapes it declares (built-ins never broadcast), and every
    loss or eval must give one value per sample or a scalar. It runs in eval mode without gradients
    and with every RNG forked, so it changes no state a resumed run would have to reproduce.

    Args:
        run: the built run (:class:`dlscaffold.builder.Run`).
        indices: dataset indices to take the two samples from.
    """
    with forked_rng(), torch.no_grad():
        batch = run.transform(run.placement.move(collate([run.dataset[i] for i in indices[:2]])), True)
        run.flow.set_mode(training=False)
        try:
            with run.precision.forward_context():
                outputs = run.flow.forward(batch)
                terms = run.flow.losses + run.flow.evals
                problems = [p for t in terms if (p := _term_problem(run.flow, t, batch, outputs))]
                problems += image_problems(run.config.logging_params.log_images, batch, outputs)
            if problems:
                raise ConfigError(*problems)
            evaluate_batch(run.flow, batch, run.precision)  # also learns the ensembles' member counts
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. classes absent from 2 samples
                run.flow.compute_metrics()  # a torchmetrics result that is not a number fails here, in seconds
            run.flow.reset_metrics()
        except CodeError as exc:  # e.g. init_args that do not fit the data's shapes
            raise UserError(f"{exc.where} failed on a batch of 2 before training: {first_line(exc.cause)}") from exc


def _term_problem(flow: Any, term: Any, batch: dict[str, Any], outputs: dict[str, Any]) -> str | None:
    """What is wrong with one loss or eval on the check's batch (None if nothing)."""
    args = flow.term_args(term, batch, outputs)
    problem = check_inputs(term.fn, args)
    if problem:
        return f"{term.path}: {problem}"
    with blame(term.path):
        value = term.fn(*args)
    size = batch_size_of(batch)
    if not hasattr(value, "shape") or (len(value.shape) > 0 and value.shape[0] != size):
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        return (
            f"{term.path}: returned {shape} for a batch of {size}; expected one value per sample, "
            f"({size},) or ({size}, ...), or a scalar batch mean"
        )
    return None
