"""One batch through a built run: the last check before training writes anything.

:func:`check_batch` takes a run from :func:`~dlscaffold.run.builder.build_run` and sends two samples
through every model, loss and eval, so that a wrong tensor name or shape fails in seconds, before
the run folder is created, and back-propagates each loss to find which trained models it reaches.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from dlscaffold.config import DATASET, metric_name
from dlscaffold.data import Collate, collate
from dlscaffold.errors import CodeError, ConfigError, UserError, blame, first_line
from dlscaffold.losses import check_inputs, class_index_problem, class_inputs, classes_owner
from dlscaffold.parts.flow import batch_size_of
from dlscaffold.parts.seeding import forked_rng
from dlscaffold.prepare import gradient_path_problems
from dlscaffold.records.images import image_problems
from dlscaffold.run.epoch import evaluate_batch


def check_batch(run: Any, indices: list[int], training: bool = True) -> None:
    """Forward, losses and evals on two samples, so a wrong tensor name or shape fails in seconds.

    The last check before the run folder is created, once models exist: the inputs of every
    built-in loss and eval must have the shapes it declares (built-ins never broadcast), and every
    loss or eval must give one value per sample or a scalar. It runs in eval mode without gradients
    and with every RNG forked, so it changes no state a resumed run would have to reproduce.

    Args:
        run: the built run (:class:`dlscaffold.run.builder.Run`).
        indices: dataset indices to take the two samples from.
        training: the run trains: also back-propagate each loss (in eval mode, nothing is stepped)
            and report, all at once, a trained model that no loss trains and a loss whose
            ``trains`` names a model it does not reach or a model that is not trained.
    """
    with forked_rng(), torch.no_grad():
        collated = collate([run.dataset[i] for i in indices[:2]])
        raw = {k: v.clone() for k, v in collated.items() if isinstance(v, torch.Tensor)}  # before transform_batch
        batch = run.transform(run.placement.move(collated), True)
        run.flow.set_mode(training=False)
        try:
            with run.precision.forward_context():
                outputs = run.flow.forward(batch)
                terms = run.flow.losses + run.flow.evals
                problems = [p for t in terms if (p := _term_problem(run.flow, t, batch, outputs))]
                problems += image_problems(run.config.logging_params.log_images, batch, outputs)
            if problems:
                raise ConfigError(*problems)
            _limit_class_indices(run, raw, batch, outputs)
            evaluate_batch(run.flow, batch, run.precision)  # also learns the ensembles' member counts
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. classes absent from 2 samples
                run.flow.compute_metrics()  # a torchmetrics result that is not a number fails here, in seconds
            run.flow.reset_metrics()
            if training:
                _check_gradient_paths(run, batch)
        except CodeError as exc:  # e.g. init_args that do not fit the data's shapes
            raise UserError(f"{exc.where} failed on a batch of 2 before training: {first_line(exc.cause)}") from exc


def _limit_class_indices(run: Any, raw: dict[str, Any], batch: dict[str, Any], outputs: dict[str, Any]) -> None:
    """From now on every batch of the run's loaders is checked, on the CPU, for the class indices a
    built-in reads from the dataset: in ``[0, K)`` for the K classes this check's logits had
    (:class:`dlscaffold.data.Collate`), so a label out of range is one line at its batch. Only
    indices the dataset's ``transform_batch`` leaves as they are (``raw``: the check's batch before
    it), since the check reads the batch as collated."""
    for term in run.flow.losses + run.flow.evals:
        args = run.flow.term_args(term, batch, outputs)
        for i, at, k in class_inputs(term.fn, args):
            _, source, tensor = term.sources[i]
            before = raw.get(tensor) if source == DATASET else None
            if before is not None and before.dtype == args[i].dtype and torch.equal(before, args[i].cpu()):
                owner = classes_owner(term.sources[at][1], term.sources[at][0])
                for loader in run.loaders.values():
                    if isinstance(loader.collate_fn, Collate):
                        loader.collate_fn.limit(tensor, k, owner, term.path)


def _term_problem(flow: Any, term: Any, batch: dict[str, Any], outputs: dict[str, Any]) -> str | None:
    """What is wrong with one loss or eval on the check's batch (None if nothing)."""
    args = flow.term_args(term, batch, outputs)
    problem = class_index_problem(term.fn, args, [src for _, src, _ in term.sources]) or check_inputs(term.fn, args)
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


def _check_gradient_paths(run: Any, batch: dict[str, Any]) -> None:
    """Which trained models each loss's gradient reaches, on the check's batch; one line per problem."""
    flow, config = run.flow, run.config
    named = {metric_name(m, k, t): t.trains for m, spec in config.info_flow.items() for k, t in spec.losses.items()}
    params = [(n, p) for n in flow.trained for p in flow.models[n].parameters() if p.requires_grad]
    with torch.enable_grad(), run.precision.forward_context():
        values = flow.values(flow.losses, batch, flow.forward(batch))
        means = {t.name: values[t.name].float().mean() for t in flow.losses}
    reaches = []
    for term in flow.losses:
        value = means[term.name]
        grads = (
            torch.autograd.grad(value, [p for _, p in params], allow_unused=True, retain_graph=True)
            if value.requires_grad and params
            else [None] * len(params)
        )
        reached = {n for (n, _), g in zip(params, grads, strict=True) if g is not None}
        reaches.append((term.path, reached, named.get(term.name)))
    problems = gradient_path_problems(reaches, list(flow.trained))
    if problems:
        raise ConfigError(*problems)
