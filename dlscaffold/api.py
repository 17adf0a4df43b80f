"""The Python API: a finished run's models, config, split and metrics, for a notebook or a script.

:func:`load_run` builds a run exactly as ``dlscaffold evaluate`` does (the one run builder,
:func:`~dlscaffold.run.builder.build_run`, with the run's config, split and the project code it recorded)
and loads one epoch's weights. ``dlscaffold.load_run`` is the same function, imported lazily.

Example:
    >>> import dlscaffold
    >>> run = dlscaffold.load_run("runs/20250101_1_baseline", epoch="last")  # doctest: +SKIP
    >>> samples = [run.dataset()[i] for i in run.split["val"][:8]]  # doctest: +SKIP
    >>> outputs = run.forward(collate(samples))  # from dlscaffold.data import collate  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlscaffold.config import Config
from dlscaffold.data import collate
from dlscaffold.evaluate import evaluate_run, set_clock
from dlscaffold.parts.flow import Flow
from dlscaffold.parts.seeding import forked_rng
from dlscaffold.prepare import prepare
from dlscaffold.records.checkpoint import resolve_epoch, trained_without_monitor
from dlscaffold.records.lineage import warn_changed
from dlscaffold.records.rundir import CONFIG_FILE, read_metrics
from dlscaffold.records.runfiles import BEST, LAST, check_run_dir, epoch_number, parse_epoch
from dlscaffold.run.builder import Run, build_run
from dlscaffold.run.progress import Progress


@dataclass
class LoadedRun:
    """A run folder's models at one epoch, ready to use (see :func:`load_run`)."""

    run_dir: Path  # the run folder, absolute
    project_dir: Path  # the folder whose code was imported
    epoch: int | str  # the epoch whose weights are loaded ("best" only when run.json does not say which)
    _run: Run
    requested_epoch: int | str | None = None  # what load_run was asked for: "best", "last" or the number

    @property
    def models(self) -> dict[str, nn.Module]:
        """Every model of ``info_flow`` by name, with the epoch's weights, in eval mode."""
        return self._run.flow.models

    @property
    def config(self) -> Config:
        """The run's validated config (``config.yml`` of the run folder)."""
        return self._run.config

    @property
    def split(self) -> dict[str, Any]:
        """The run's ``idx_dict``: dataset indices under ``train``, ``val``, ``dev`` (and ``test``), with the
        points' ``ids`` (a dataset with ``point_id(i)``: the indices are those of the ids today) or the
        dataset's ``fingerprint``."""
        return self._run.idx_dict

    @property
    def flow(self) -> Flow:
        """The run's ``info_flow`` as built: models, routing, and the loss and eval terms
        (``flow.values(flow.losses + flow.evals, batch, outputs)`` gives their per-sample values)."""
        return self._run.flow

    @property
    def device(self) -> torch.device:
        """Where the models are, and where :meth:`forward` moves batches."""
        return self._run.placement.device

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of the run's ``metrics.jsonl``, read now: ``{"epoch", "split", "step", "<Model>/<name>": ...}``."""
        return read_metrics(self.run_dir)

    def dataset(self) -> Any:
        """The project's ``CustomDataSet`` built from the run's config, with ``idx_dict`` set to :attr:`split`."""
        return self._run.dataset

    def forward(self, batch: dict[str, Any] | Sequence[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        """Every model's outputs for a batch, routed through the run's ``info_flow``.

        Runs in eval mode without gradients, as ``dlscaffold evaluate`` does: the batch's tensors go
        to :attr:`device`, then through the dataset's ``transform_batch(batch, train=False)`` when it
        has one, then through the models in order.

        Args:
            batch: a collated batch of dataset items (``dlscaffold.data.collate([...])``), or a list
                of items (``[run.dataset()[i], ...]``), which is collated first.

        Returns:
            ``{model_name: {output_name: tensor}}``, on :attr:`device`.
        """
        if not isinstance(batch, dict):
            batch = collate(list(batch))
        run = self._run
        run.flow.set_mode(training=False)
        with torch.no_grad():
            batch = run.transform(run.placement.move(batch), False)
            with run.precision.forward_context():
                return run.flow.forward(batch)

    def evaluate(self, split: str = "val", progress_bar: bool = False, tta: bool = True) -> dict[str, Any]:
        """Every configured loss and eval over ``split``: the numbers ``dlscaffold evaluate RUN
        --epoch E --split SPLIT`` reports (``tta=False``: ``--no-tta``, without the run's test-time
        augmentation).

        Returns:
            ``{"run_dir", "epoch", "requested_epoch", "split", "num_samples", "tta", "metrics": {"<Model>/<name>":
            value}}``: ``epoch`` the loaded epoch's number, ``requested_epoch`` what ``load_run`` was
            asked for (``"best"``, ``"last"`` or the number).
        """
        with forked_rng():  # a dataset's transform_batch may draw random numbers: leave the caller's RNGs
            result = evaluate_run(self._run, split, Progress(progress_bar), tta)
        return {"run_dir": str(self.run_dir), "epoch": self.epoch, "requested_epoch": self.requested_epoch, **result}

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.run_dir)!r}, epoch={self.epoch}, models={list(self.models)}, device={self.device})"


def load_run(
    run_dir: str | Path,
    epoch: str | int | None = None,
    device: str | None = "cpu",
    project: str | Path | None = None,
    precision: str | None = None,
) -> LoadedRun:
    """Load a run folder's models at one epoch, with its config, split and metrics.

    The project's code is imported from ``project``, taken as is, or else from the project folder
    ``run.json`` records for the run's latest session, only when the run folder lies inside it and
    its code files still have the recorded SHA-256 hashes
    (:func:`dlscaffold.prepare.project_folder`); never from the run folder itself, nor from a
    folder the run merely names. Nothing is written, and the caller's random number generators are
    left as they were. The project's modules stay imported, for the models' classes; a later
    :func:`dlscaffold.train.train` imports its project anew all the same.

    Args:
        run_dir: a folder printed by ``dlscaffold train``.
        epoch: ``"best"`` (the epoch ``run.json`` records as best, from its ``<Model>_best.pt``
            weights), ``"last"`` (the newest epoch saved for every model) or an epoch number; None
            (the default): ``"best"``, or ``"last"`` for a run trained with ``training_params.monitor:
            none``, which has no best epoch.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; None chooses as training did (``use_GPU``).
        project: the project folder whose code to import as it is, instead of the one the run
            recorded (needed for a run outside its project folder, or after the code changed).
        precision: compute in this precision (``fp32``, ``bf16``, ``fp16``, ``auto``); default: the
            run's, except that a run trained in bf16 (or fp16) runs in fp32 on a CPU without native
            support for it, with a note (its weights are fp32 already).

    Returns:
        A :class:`LoadedRun`.

    Raises:
        UserError: one line: not a run folder, no such epoch, no best epoch recorded (or ``"best"`` of a
            run trained with ``monitor: none``), missing code, a recorded project folder that does not
            hold the run or whose code changed.
    """
    epoch = None if epoch is None else parse_epoch(epoch, "epoch")
    run_dir = check_run_dir(Path(run_dir))
    if epoch is None:  # a run trained with training_params.monitor: none has no best epoch
        epoch = LAST if trained_without_monitor(run_dir) else BEST
    project_dir = Path(project).expanduser().resolve() if project is not None else None
    overrides = [] if precision is None else [f"training_params.precision={precision}"]
    prepared = prepare(run_dir / CONFIG_FILE, overrides, project_dir, run_dir=run_dir, splits=(), training=False)
    warn_changed(run_dir)  # a weights file this run was loaded from changed since: one warning per model
    saved = resolve_epoch(run_dir, list(prepared.config.info_flow), epoch, "epoch")  # a number or "best"
    with forked_rng():  # building seeds every RNG, as training did; the caller's states are restored after
        run = build_run(prepared, {}, device, weights=(run_dir, saved), keep_precision=precision is not None)
    run.flow.set_mode(training=False)
    set_clock(run, run_dir, saved)
    return LoadedRun(run_dir, prepared.project.root, epoch_number(run_dir, saved), run, requested_epoch=epoch)
