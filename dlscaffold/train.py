"""``dlscaffold train``: the training run, top to bottom.

:func:`train` validates, builds data and models, checks one batch, creates the run folder, then
loops over epochs: train (:func:`train_epoch`), validate every ``val_every`` epochs
(:func:`run_epoch` without gradients), log, checkpoint every ``save_every`` epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from dlscaffold.checkpoint import last_trainer_state, load_trainer_state, save_checkpoint, set_rng_state
from dlscaffold.config import dump_config
from dlscaffold.data import batch_transform, collate, make_loader, save_idx_dict
from dlscaffold.device import Placement, select_placement
from dlscaffold.errors import UserError
from dlscaffold.flow import Flow, batch_size_of, build_flow, resolve_init_args
from dlscaffold.optim import build_optimizer, build_scheduler
from dlscaffold.prepare import Prepared, build_dataset, load_split, prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import RunLog, create_run_dir, is_run_dir, recorded_project, write_run_info, write_text_atomic
from dlscaffold.seeding import forked_rng, seed_everything



class Sums:
    """Sample-weighted sums of per-sample values, kept on the device.

    Adding never synchronises with the GPU; only :meth:`means` reads values back (a ``.item()`` per
    step would stall the GPU pipeline).
    """

    def __init__(self, names: list[str], device: torch.device):
        self.names = names
        # float64 keeps long epochs' sums exact; Apple's MPS has no float64
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.totals = torch.zeros(len(names), dtype=self.dtype, device=device)
        self.count = 0

    def add(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        # A scalar is a batch mean: weigh it by the batch size so epoch values are sample means.
        totals = [v.detach().sum() if v.dim() else v.detach() * batch_size for v in values.values()]
        self.totals += torch.stack(totals).to(self.dtype)
        self.count += batch_size

    def means(self) -> dict[str, float]:
        values = (self.totals / max(self.count, 1)).tolist()  # the one sync point
        return dict(zip(self.names, values))


@dataclass
class Trainer:
    """What the loop steps: the models and their optimizers and schedulers."""

    flow: Flow
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    scheduler_interval: str
    grad_clip_norm: float | None
    placement: Placement
    step: int = 0
    params: list[torch.nn.Parameter] = field(default_factory=list)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self.placement.autocast():
            outputs = self.flow.forward(batch)
            values = self.flow.values(self.flow.losses, batch, outputs)
            objective = sum(t.weight * values[t.name].float().mean() for t in self.flow.losses)
        objective.backward()
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm)
        for optimizer in self.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if self.scheduler_interval == "step":
            for scheduler in self.schedulers.values():
                scheduler.step()
        self.step += 1
        with torch.no_grad(), self.placement.autocast():
            values.update(self.flow.values(self.flow.evals, batch, outputs))
        return values


def train_epoch(trainer: Trainer, loader: Any, transform: Callable, log: RunLog | None,
                log_every: int, progress: Progress) -> dict[str, float]:
    placement = trainer.placement
    trainer.flow.set_mode(training=True)
    epoch_sums = Sums(trainer.flow.term_names, placement.device)
    window = Sums(trainer.flow.term_names, placement.device)
    for batch in progress.track(loader, "train"):
        batch = transform(placement.move(batch), True)
        values = trainer.train_step(batch)
        size = batch_size_of(batch)
        epoch_sums.add(values, size)
        window.add(values, size)
        if trainer.step % log_every == 0:
            if log is not None:
                log.step_scalars(trainer.step, window.means())
            window = Sums(trainer.flow.term_names, placement.device)
    if trainer.scheduler_interval == "epoch":
        for scheduler in trainer.schedulers.values():
            scheduler.step()
    return epoch_sums.means()


@torch.no_grad()
def run_epoch(flow: Flow, loader: Any, placement: Placement, transform: Callable, progress: Progress,
              label: str) -> tuple[dict[str, float], int]:
    """Every loss and eval over ``loader`` in eval mode; returns sample means and the sample count."""
    flow.set_mode(training=False)
    sums = Sums(flow.term_names, placement.device)
    for batch in progress.track(loader, label):
        batch = transform(placement.move(batch), False)
        sums.add(evaluate_batch(flow, batch, placement), batch_size_of(batch))
    return sums.means(), sums.count


def evaluate_batch(flow: Flow, batch: dict[str, Any], placement: Placement) -> dict[str, torch.Tensor]:
    """Every loss and eval of one batch (the caller sets eval mode and no_grad)."""
    with placement.autocast():
        outputs = flow.forward(batch)
        return flow.values(flow.losses + flow.evals, batch, outputs)


def check_one_batch(flow: Flow, dataset: Any, indices: list[int], placement: Placement) -> None:
    """Forward, losses and evals on two samples, so a wrong tensor name fails in seconds.

    Runs in eval mode without gradients and with every RNG forked, so it changes no state a
    resumed run would have to reproduce.
    """
    with forked_rng(), torch.no_grad():
        batch = batch_transform(dataset)(placement.move(collate([dataset[i] for i in indices[:2]])), True)
        flow.set_mode(training=False)
        try:
            evaluate_batch(flow, batch, placement)
        except UserError:
            raise
        except Exception as exc:  # e.g. init_args that do not fit the data's shapes
            where = getattr(exc, "dlscaffold_where", None)
            if where is None:
                raise
            message = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"{where} failed on a batch of 2 before training: {type(exc).__name__}: {message}") from exc


def restore_trainer(trainer: Trainer, state: dict[str, Any]) -> int:
    """Load optimizer, scheduler and RNG states and the step from a checkpoint; returns the next epoch."""
    for name, optimizer in trainer.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    for name, scheduler in trainer.schedulers.items():
        scheduler.load_state_dict(state["schedulers"][name])
    set_rng_state(state["rng"])
    trainer.step = state["step"]
    return state["epoch"] + 1


def open_run_log(run_dir: Path, prepared: Prepared, idx_dict: dict[str, Any], state: dict[str, Any] | None) -> RunLog:
    """Write the run's config, split and run.json; open its metrics log (trimmed when resuming)."""
    write_text_atomic(run_dir / "config.yml", dump_config(prepared.config))
    save_idx_dict(idx_dict, run_dir / "idx_dict.json")
    write_run_info(run_dir, prepared.project.root)
    return RunLog(run_dir, state["epoch"] if state else 0, state["step"] if state else 0)


def _format(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in values.items())


def train(config_path: Path | None, overrides: list[str] = (), *, project_dir: Path | None = None,
          resume: Path | None = None, dev: bool = False, no_save: bool = False, debug: bool = False,
          device: str | None = None, echo: Callable[[str], None] = print, progress_bar: bool = False) -> Path | None:
    """Train the models of a config; returns the run folder (None when nothing is written).

    Args:
        config_path: the config file (ignored with ``resume``: the run's own config is used).
        overrides: dotted ``key=value`` overrides.
        project_dir: folder with the project's code; default: the config's folder, or for a run's
            saved config the project recorded in its ``run.json``.
        resume: a run folder to continue from its last checkpoint, in place.
        dev: train and validate on the dev set.
        no_save: log, but keep no checkpoints.
        debug: dev set, anomaly detection, nothing written.
        device: force a device (``cpu``, ``cuda``, ``cuda:1``).
        echo: where the human-readable lines go.
        progress_bar: show a progress bar (on a terminal).
    """
    if resume is not None:
        resume = resume.resolve()
        if not is_run_dir(resume):
            raise UserError(f"--resume: {resume} is not a run folder (no config.yml and idx_dict.json in it)")
        config_path = resume / "config.yml"
    assert config_path is not None
    if project_dir is None:  # a run's saved config: its code is in the recorded project
        project_dir = recorded_project(config_path.resolve().parent) or config_path.resolve().parent
    prepared = prepare(config_path, overrides, project_dir)
    config, tp = prepared.config, prepared.config.training_params
    if dev or debug:
        tp.use_dev = True
    resolve_init_args(config)
    seed_everything(tp.seed)

    dataset = build_dataset(prepared)
    idx_dict = load_split(config, dataset, saved=resume)
    train_idx, val_idx = (idx_dict["dev"], idx_dict["dev"]) if tp.use_dev else (idx_dict["train"], idx_dict["val"])
    if not val_idx:
        raise UserError("dataloading_params.val_ratio: the validation split is empty; expected val_ratio > 0")
    placement = select_placement(tp.use_GPU, device, tp.precision)
    dl = config.dataloading_params
    train_loader = make_loader(dataset, train_idx, dl.batch_size, True, tp.seed, dl.num_workers, placement.pin_memory)
    val_loader = make_loader(dataset, val_idx, dl.batch_size, False, tp.seed, dl.num_workers, placement.pin_memory)

    state = load_trainer_state(last_trainer_state(resume)) if resume is not None else None
    weights = (resume, state["epoch"]) if state is not None else None
    flow = build_flow(config, prepared.project, prepared.losses, prepared.evals, placement.device, weights)
    optimizers = {n: build_optimizer(flow.models[n], tp) for n in flow.trained}
    schedulers = {n: s for n, o in optimizers.items() if (s := build_scheduler(o, tp, len(train_loader))) is not None}
    trainer = Trainer(flow, optimizers, schedulers, tp.lr_scheduler.interval if tp.lr_scheduler else "epoch",
                      tp.grad_clip_norm, placement, params=[p for n in flow.trained for p in flow.models[n].parameters()])
    check_one_batch(flow, dataset, train_idx, placement)
    torch.autograd.set_detect_anomaly(debug)  # global: also switch it off after an earlier --debug run

    start_epoch = restore_trainer(trainer, state) if state is not None else 1
    run_dir = None if debug else (resume or create_run_dir(config.logging_params.logging_dir, config.logging_params.run_notes))
    if run_dir is None:
        echo("Debug run: dev set, anomaly detection on, nothing is written.")
        log = None
    else:
        echo(f"Logging and Model Saving Directory: {run_dir}")
        log = open_run_log(run_dir, prepared, idx_dict, state)
    echo(f"Training {', '.join(flow.trained) or 'nothing'} on {placement.device} "
         f"({len(train_idx)} train / {len(val_idx)} val points{', dev set' if tp.use_dev else ''})")

    progress, transform = Progress(progress_bar), batch_transform(dataset)
    last_val: dict[str, float] = {}
    started = time.perf_counter()
    for epoch in range(start_epoch, tp.max_training_epochs + 1):
        epoch_start = time.perf_counter()
        train_loader.sampler.set_epoch(epoch)
        train_values = train_epoch(trainer, train_loader, transform, log, tp.log_every, progress)
        line = f"epoch {epoch}/{tp.max_training_epochs}  train: {_format(train_values)}"
        if log is not None:
            log.epoch_row(epoch, "train", trainer.step, train_values)
        if epoch % tp.val_every == 0 or epoch == tp.max_training_epochs:
            last_val, _ = run_epoch(flow, val_loader, placement, transform, progress, "val")
            line += f"  | val: {_format(last_val)}"
            if log is not None:
                log.epoch_row(epoch, "val", trainer.step, last_val)
        if run_dir is not None and not no_save and (epoch % tp.save_every == 0 or epoch == tp.max_training_epochs):
            save_checkpoint(run_dir, epoch, trainer.step, flow.models, optimizers, schedulers)
        echo(f"{line}  ({time.perf_counter() - epoch_start:.1f}s)")

    if log is not None:
        log.hparams(_hparams(config), {f"val/{k}": v for k, v in last_val.items()})
        log.close()
    _summary(echo, run_dir, tp.max_training_epochs, last_val, time.perf_counter() - started, no_save)
    return run_dir


def _hparams(config: Any) -> dict[str, Any]:
    tp, dl = config.training_params, config.dataloading_params
    return {"lrn_rate": tp.lrn_rate, "batch_size": dl.batch_size, "regularization_weight": tp.regularization_weight,
            "seed": tp.seed, "optimizer": tp.optimizer.name if tp.optimizer else "Adam",
            "max_training_epochs": tp.max_training_epochs, "run_notes": config.logging_params.run_notes}


def _summary(echo: Callable[[str], None], run_dir: Path | None, epochs: int, last_val: dict[str, float],
             seconds: float, no_save: bool) -> None:
    echo(f"Done: {epochs} epochs in {seconds:.1f}s.")
    if last_val:
        echo(f"Final val: {_format(last_val)}")
    if run_dir is not None:
        echo(f"Run folder: {run_dir}")
        echo("  metrics:     metrics.jsonl (one row per epoch and split)")
        if not no_save:
            echo("  checkpoints: checkpoints/<Model>_<epoch:06d>.pt")
        echo(f"  TensorBoard: tensorboard --logdir {run_dir}")
        echo(f"  evaluate:    dlscaffold evaluate {run_dir}")
