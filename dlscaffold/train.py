"""``dlscaffold train``: the training run, top to bottom.

:func:`train` is :func:`setup` (check, build, create the run folder) followed by :func:`fit` (the
epoch loop: train, validate every ``val_every`` epochs, log, checkpoint every ``save_every``).
:class:`Trainer` owns one training step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from dlscaffold.builder import Run, build_run
from dlscaffold.checkpoint import last_trainer_state, load_trainer_state, save_checkpoint, set_rng_state
from dlscaffold.config import dump_config
from dlscaffold.data import save_idx_dict
from dlscaffold.epoch import Sums, run_epoch
from dlscaffold.errors import UserError
from dlscaffold.flow import Flow, batch_size_of
from dlscaffold.optim import build_optimizer, build_scheduler
from dlscaffold.precision import Precision
from dlscaffold.prepare import Prepared, check_batch, prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import NullLog, RunLog, create_run_dir, is_run_dir, update_run_info, write_text_atomic

Echo = Callable[[str], None]


@dataclass
class TrainOptions:
    """How to run, beside the config: the ``dlscaffold train`` flags."""

    dev: bool = False  # train and validate on the dev set
    no_save: bool = False  # log, but keep no checkpoints
    debug: bool = False  # dev set, anomaly detection, nothing written
    device: str | None = None  # force a device (cpu, cuda, cuda:1)
    progress_bar: bool = False  # show a progress bar (on a terminal)


@dataclass
class Trainer:
    """What the loop steps: the models and their optimizers and schedulers."""

    flow: Flow
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    scheduler_interval: str  # "epoch" or "step"
    grad_clip_norm: float | None
    precision: Precision
    params: list[torch.nn.Parameter] = field(default_factory=list)  # every trained parameter, for clipping
    step: int = 0

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.flow.clock["step"] = self.step  # what {step: trainer} inputs read
        with self.precision.forward_context():
            outputs = self.flow.forward(batch)
            values = self.flow.values(self.flow.losses, batch, outputs)
            objective = sum(t.weight * values[t.name].float().mean() for t in self.flow.losses)
        self.precision.backward(objective)
        self.precision.step(list(self.optimizers.values()), self.params, self.grad_clip_norm)
        if self.scheduler_interval == "step":  # after the optimizer step, as torch expects
            for scheduler in self.schedulers.values():
                scheduler.step()
        self.step += 1
        with torch.no_grad(), self.precision.forward_context():  # evals read the same outputs, no graph
            values.update(self.flow.values(self.flow.evals, batch, outputs))
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step,
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                "precision": self.precision.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.precision.load_state_dict(state.get("precision", {}))
        self.step = state["step"]


def build_trainer(run: Run, steps_per_epoch: int) -> Trainer:
    """One optimizer (and scheduler) per trained model."""
    tp, flow = run.config.training_params, run.flow
    optimizers = {n: build_optimizer(flow.models[n].parameters(), tp) for n in flow.trained}
    schedulers = {n: s for n, o in optimizers.items() if (s := build_scheduler(o, tp, steps_per_epoch)) is not None}
    interval = tp.lr_scheduler.interval if tp.lr_scheduler else "epoch"
    params = [p for n in flow.trained for p in flow.models[n].parameters()]
    return Trainer(flow, optimizers, schedulers, interval, tp.grad_clip_norm, run.precision, params)


@dataclass
class Session:
    """A training run, set up: what :func:`fit` loops over."""

    run: Run
    trainer: Trainer
    log: RunLog | NullLog
    run_dir: Path | None  # None: a --debug run writes nothing
    start_epoch: int
    options: TrainOptions

    @property
    def saves(self) -> bool:
        return self.run_dir is not None and not self.options.no_save


def train(config_path: Path | None, overrides: list[str] = (), *, project_dir: Path | None = None,
          resume: Path | None = None, options: TrainOptions | None = None, echo: Echo = print) -> Path | None:
    """Train the models of a config; returns the run folder (None when nothing is written).

    Args:
        config_path: the config file (ignored with ``resume``: the run's own config is used).
        overrides: dotted ``key=value`` overrides.
        project_dir: folder with the project's code; default: the config's folder, or for
            ``resume`` the project recorded in the run's ``run.json``.
        resume: a run folder to continue from its last checkpoint, in place.
        options: the command's flags (:class:`TrainOptions`).
        echo: where the human-readable lines go.
    """
    session = setup(config_path, list(overrides), project_dir, resume, options or TrainOptions(), echo)
    return fit(session, echo)


def setup(config_path: Path | None, overrides: list[str], project_dir: Path | None, resume: Path | None,
          options: TrainOptions, echo: Echo) -> Session:
    """Check everything, build data, models and trainer, then create (or reopen) the run folder."""
    if resume is not None:
        resume = resume.resolve()
        if not is_run_dir(resume):
            raise UserError(f"--resume: {resume} is not a run folder (no config.yml and idx_dict.json in it)")
        config_path = resume / "config.yml"
    if options.dev or options.debug:
        overrides = [*overrides, "training_params.use_dev=true"]
    prepared = prepare(config_path, overrides, project_dir, run_dir=resume)
    dev = prepared.config.training_params.use_dev
    splits = ("dev", "dev") if dev else ("train", "val")
    if resume is not None:
        echo(f"Resuming {resume} with the code of the project in {prepared.project.root}")
    state = load_trainer_state(last_trainer_state(resume)) if resume is not None else None
    weights = (resume, state["epoch"]) if state is not None else None
    run = build_run(prepared, {"train": (splits[0], True), "val": (splits[1], False)}, options.device, weights)
    trainer = build_trainer(run, len(run.loaders["train"]))
    check_batch(run, run.idx_dict[splits[0]])
    torch.autograd.set_detect_anomaly(options.debug)  # global: also switch it off after an earlier --debug run
    if state is not None:
        trainer.load_state_dict(state)
        set_rng_state(state["rng"])  # last: building and checking above drew from the RNGs
    run_dir = None if options.debug else (resume or create_run_dir(prepared.config.logging_params.logging_dir,
                                                                   prepared.config.logging_params.run_notes))
    log = NullLog() if run_dir is None else open_run_log(run_dir, prepared, run.idx_dict, state)
    echo("Debug run: dev set, anomaly detection on, nothing is written." if run_dir is None
         else f"Logging and Model Saving Directory: {run_dir}")
    echo(f"Training {', '.join(run.flow.trained) or 'nothing'} on {run.placement.device} "
         f"({len(run.loaders['train'].sampler)} train / {len(run.loaders['val'].sampler)} val points"
         f"{', dev set' if dev else ''})")
    return Session(run, trainer, log, run_dir, state["epoch"] + 1 if state else 1, options)


def open_run_log(run_dir: Path, prepared: Prepared, idx_dict: dict[str, Any], state: dict[str, Any] | None) -> RunLog:
    """Write the run's config, split and run.json; open its metrics log (trimmed when resuming)."""
    from dlscaffold import __version__

    write_text_atomic(run_dir / "config.yml", dump_config(prepared.config))
    save_idx_dict(idx_dict, run_dir / "idx_dict.json")
    update_run_info(run_dir, project_dir=str(prepared.project.root), dlscaffold_version=__version__)
    return RunLog(run_dir, state["epoch"] if state else 0, state["step"] if state else 0)


def train_epoch(trainer: Trainer, run: Run, log: RunLog | NullLog, log_every: int,
                progress: Progress) -> dict[str, float]:
    """One pass over the training loader; returns the epoch's sample means."""
    device = run.placement.device
    trainer.flow.set_mode(training=True)
    epoch_sums, window = Sums(trainer.flow.term_names, device), Sums(trainer.flow.term_names, device)
    for batch in progress.track(run.loaders["train"], "train"):
        batch = run.transform(run.placement.move(batch), True)
        values = trainer.train_step(batch)
        size = batch_size_of(batch)
        epoch_sums.add(values, size)
        window.add(values, size)
        if trainer.step % log_every == 0:  # reading the window's means is a GPU sync: only at log points
            log.step_scalars(trainer.step, window.means())
            window = Sums(trainer.flow.term_names, device)
    if trainer.scheduler_interval == "epoch":
        for scheduler in trainer.schedulers.values():
            scheduler.step()
    return epoch_sums.means()


def fit(session: Session, echo: Echo) -> Path | None:
    """The epoch loop: train, validate, log, checkpoint; then the summary. Returns the run folder."""
    run, trainer, log = session.run, session.trainer, session.log
    tp = run.config.training_params
    progress = Progress(session.options.progress_bar)
    last_val: dict[str, float] = {}
    started = time.perf_counter()
    if session.saves and session.start_epoch == 1:  # epoch 0: the initial weights, and a state to resume from
        save_checkpoint(session.run_dir, 0, run.flow.models, trainer.state_dict())
    for epoch in range(session.start_epoch, tp.max_training_epochs + 1):
        epoch_start = time.perf_counter()
        run.loaders["train"].sampler.set_epoch(epoch)  # the epoch's order depends on (seed, epoch) only
        run.flow.clock["epoch"] = epoch  # what {epoch: trainer} inputs read
        train_values = train_epoch(trainer, run, log, tp.log_every, progress)
        log.epoch_row(epoch, "train", trainer.step, train_values)
        line = f"epoch {epoch}/{tp.max_training_epochs}  train: {_format(train_values)}"
        last_epoch = epoch == tp.max_training_epochs
        if epoch % tp.val_every == 0 or last_epoch:
            last_val, _ = run_epoch(run.flow, run.loaders["val"], run.placement, run.precision, run.transform,
                                    progress, "val")
            log.epoch_row(epoch, "val", trainer.step, last_val)
            line += f"  | val: {_format(last_val)}"
        if session.saves and (epoch % tp.save_every == 0 or last_epoch):
            save_checkpoint(session.run_dir, epoch, run.flow.models, trainer.state_dict())
        echo(f"{line}  ({time.perf_counter() - epoch_start:.1f}s)")
    log.hparams(_hparams(run.config), {f"val/{k}": v for k, v in last_val.items()})
    log.close()
    _summary(echo, session, last_val, time.perf_counter() - started)
    return session.run_dir


def _format(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in values.items())


def _hparams(config: Any) -> dict[str, Any]:
    tp, dl = config.training_params, config.dataloading_params
    return {"lrn_rate": tp.lrn_rate, "batch_size": dl.batch_size, "regularization_weight": tp.regularization_weight,
            "seed": tp.seed, "optimizer": tp.optimizer.name if tp.optimizer else "Adam",
            "max_training_epochs": tp.max_training_epochs, "run_notes": config.logging_params.run_notes}


def _summary(echo: Echo, session: Session, last_val: dict[str, float], seconds: float) -> None:
    epochs, run_dir = session.run.config.training_params.max_training_epochs, session.run_dir
    echo(f"Done: {epochs} epochs in {seconds:.1f}s.")
    if last_val:
        echo(f"Final val: {_format(last_val)}")
    if run_dir is not None:
        echo(f"Run folder: {run_dir}")
        echo("  metrics:     metrics.jsonl (one row per epoch and split)")
        if session.saves:
            echo("  checkpoints: checkpoints/<Model>_<epoch:06d>.pt")
        echo(f"  TensorBoard: tensorboard --logdir {run_dir}")
        echo(f"  evaluate:    dlscaffold evaluate {run_dir}")
