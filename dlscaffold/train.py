"""``dlscaffold train``: the training run, top to bottom.

:func:`train` is :func:`setup` (check, build, open the run folder) followed by :func:`fit` (the
epoch loop: train, validate every ``val_every`` epochs, keep the best, log, checkpoint every
``save_every``). What can end a run early is handled in :func:`train`: a signal (a checkpoint of
the exact position, status ``interrupted``), a non-finite step or an error in the project's code
(one line, status ``failed``, the last good checkpoint kept).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlscaffold import distributed
from dlscaffold.builder import Run, build_run, wrap_for_training
from dlscaffold.checkpoint import (
    last_trainer_state,
    load_trainer_state,
    rng_state,
    save_best,
    save_checkpoint,
    set_rng_state,
)
from dlscaffold.config import dump_config
from dlscaffold.data import save_idx_dict
from dlscaffold.epoch import Sums, run_epoch
from dlscaffold.errors import QuietExit, UserError
from dlscaffold.flow import batch_size_of
from dlscaffold.images import collect_images, image_grids
from dlscaffold.prepare import Prepared, check_batch, monitored, prepare
from dlscaffold.progress import Progress
from dlscaffold.rundir import (
    NullLog,
    RunLock,
    RunLog,
    create_run_dir,
    is_run_dir,
    remove_stale_temporaries,
    update_run_info,
    write_text_atomic,
)
from dlscaffold.stops import RunInterrupted, StopFlag
from dlscaffold.trainer import NonFiniteStep, Trainer, build_trainer

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
class Monitor:
    """The best validation value so far of ``training_params.monitor``, and early stopping."""

    name: str
    mode: str  # "min" or "max"
    best: float | None = None
    best_epoch: int = 0
    bad: int = 0  # validations since the last improvement

    def update(self, value: float, epoch: int) -> bool:
        """Record a validation; returns whether it improved on the best."""
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_epoch, self.bad = value, epoch, 0
        else:
            self.bad += 1
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad}


@dataclass
class Position:
    """Where the loop is inside an epoch: a stop mid-epoch saves it, a resume continues from it."""

    batches: int = 0
    sums: dict[str, Any] | None = None  # the epoch's running sums (Sums.state_dict)
    window: dict[str, Any] | None = None  # the running log_every window's sums
    metrics: dict[str, Any] | None = None  # the torchmetrics evals' state (Flow.metrics_state_dict)
    rng: dict[str, Any] | None = None  # resuming mid-epoch: RNG states to restore once the loader iterates


@dataclass
class Session:
    """A training run, set up: what :func:`fit` loops over."""

    run: Run
    trainer: Trainer
    monitor: Monitor
    log: RunLog | NullLog
    run_dir: Path | None  # None: a --debug run writes nothing
    start_epoch: int
    options: TrainOptions
    position: Position = field(default_factory=Position)  # where a resumed run continues inside start_epoch
    lock: RunLock | None = None
    epoch: int = 0  # the epoch in progress (for messages)
    world: distributed.World = field(default_factory=distributed.World)

    @property
    def saves(self) -> bool:
        """Whether checkpoints are taken (every rank takes part; rank 0 alone writes)."""
        return self.run_dir is not None and not self.options.no_save

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder: rank 0 of a run that keeps a record."""
        return self.run_dir is not None and self.world.main


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

    Raises:
        UserError: a problem found before training (nothing written), or a failure during it
            (status ``failed`` in ``run.json``, the last checkpoint kept).
        RunInterrupted: SIGTERM or SIGINT; the position was saved (status ``interrupted``).
    """
    world = distributed.world_from_env()
    if not world.main:  # other ranks print nothing but errors
        echo = _silent
        logging.getLogger("dlscaffold").setLevel(logging.ERROR)
    try:
        session = setup(config_path, list(overrides), project_dir, resume, options or TrainOptions(), echo, world)
    except UserError:
        if not world.main:  # every rank found the same problem: rank 0 says it
            raise QuietExit(2) from None
        raise
    try:
        with StopFlag() as stop:
            return fit(session, stop, echo)
    except RunInterrupted as exc:
        _finish(session, "interrupted")
        if session.saves:
            echo(f"Stopped ({exc}); the run's exact position is saved in {session.run_dir}")
            echo(f"Resume it with: dlscaffold train --resume {session.run_dir}")
        raise
    except NonFiniteStep as exc:
        error = _nonfinite_error(session, exc)
        _finish(session, "failed", error)
        raise UserError(error) from None
    except UserError as exc:
        _finish(session, "failed", exc.problems[0] if exc.problems else str(exc))
        raise
    except Exception as exc:  # the project's model, loss or dataset failed during training
        if world.distributed and _peer_failed(exc):  # another rank failed first and says why
            _finish(session, "failed", "a data-parallel process failed (its error is printed)")
            raise QuietExit(1) from None
        error = _user_code_error(session, exc)
        _finish(session, "failed", error)
        raise UserError(error) from exc
    finally:
        session.log.close()
        if session.lock is not None:
            session.lock.release()
        distributed.shutdown()


def _silent(line: str) -> None:
    pass


def _peer_failed(exc: Exception) -> bool:
    """Whether a collective failed because another process is gone (closed connection, timeout)."""
    text = str(exc).lower()
    return type(exc).__name__ in ("DistError", "DistBackendError", "DistNetworkError") or any(
        words in text for words in ("connection closed", "connection reset", "broken pipe", "timed out"))


def _finish(session: Session, status: str, error: str | None = None) -> None:
    if session.writes:
        update_run_info(session.run_dir, status=status, error=error, ended=_now())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _nonfinite_error(session: Session, exc: NonFiniteStep) -> str:
    saved = ""
    if session.writes:
        path = session.run_dir / "nonfinite_batch.pt"
        from dlscaffold.checkpoint import save_atomic

        save_atomic({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in exc.batch.items()}, path)
        saved = f"; the batch is saved in {path}"
    return (f"epoch {session.epoch}, step {session.trainer.step}: {exc.where} is not finite (NaN or inf); the step "
            f"was not applied and the last checkpoint is intact{saved}; lower lrn_rate, set grad_clip_norm, or set "
            "training_params.on_nonfinite: skip")


def _user_code_error(session: Session, exc: Exception) -> str:
    where = getattr(exc, "dlscaffold_where", None) or "the training loop"
    lines = str(exc).strip().splitlines() or [""]
    if type(exc).__name__ == "DatasetItemError":  # from a DataLoader worker, its traceback: the last line says it
        what = lines[-1].partition("DatasetItemError: ")[2] or lines[-1]
    else:
        what = f"{where} failed: {type(exc).__name__}: {lines[0]}"
    if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
        what += "; torch.compile failed here: set training_params.compile: false"
    return (f"epoch {session.epoch}, step {session.trainer.step}: {what}; the last checkpoint is intact; "
            "rerun with --debug for the traceback")


# ------------------------------------------------------------------------------------- setup


def setup(config_path: Path | None, overrides: list[str], project_dir: Path | None, resume: Path | None,
          options: TrainOptions, echo: Echo, world: distributed.World | None = None) -> Session:
    """Check everything, build data, models and trainer, then create (or reopen) the run folder."""
    world = world or distributed.World()
    if resume is not None:
        resume = resume.resolve()
        if not is_run_dir(resume):
            raise UserError(f"--resume: {resume} is not a run folder (no config.yml and idx_dict.json in it)")
        config_path = resume / "config.yml"
    if options.dev or options.debug:
        overrides = [*overrides, "training_params.use_dev=true"]
    prepared = prepare(config_path, overrides, project_dir, run_dir=resume)
    tp = prepared.config.training_params
    options.device = distributed.init(world, tp.use_GPU, tp.backend) or options.device  # cuda:LOCAL_RANK or cpu
    # one writer per run folder: taken before anything of the run is read or written
    lock = RunLock(resume).acquire() if resume is not None and world.main else None
    try:
        session = _build_session(prepared, overrides, resume, options, echo, world)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    session.lock = session.lock or lock
    return session


def _build_session(prepared: Prepared, overrides: list[str], resume: Path | None, options: TrainOptions,
                   echo: Echo, world: distributed.World) -> Session:
    tp, dl = prepared.config.training_params, prepared.config.dataloading_params
    splits = ("dev", "dev") if tp.use_dev else ("train", "val")
    if resume is not None:
        echo(f"Resuming {resume} with the code of the project in {prepared.project.root}")
        if world.main:
            remove_stale_temporaries(resume)
    state = load_trainer_state(last_trainer_state(resume)) if resume is not None else None
    weights = (resume, state["epoch"]) if state is not None and "models" not in state else None
    run = build_run(prepared, {"train": (splits[0], True), "val": (splits[1], False)}, options.device, weights, world)
    wrap_for_training(run, world)
    trainer = build_trainer(run, len(run.loaders["train"]))
    check_batch(run, run.idx_dict[splits[0]])
    torch.autograd.set_detect_anomaly(options.debug)  # global: also switch it off after an earlier --debug run
    monitor = Monitor(*monitored(prepared.config))
    position = _restore(run, trainer, monitor, state, overrides, world) if state is not None else Position()
    start = state["epoch"] + 1 if state else 1
    session = Session(run, trainer, monitor, NullLog(), None, start, options, position, world=world)
    _open_run_folder(session, prepared, resume, state)
    echo("Debug run: dev set, anomaly detection on, nothing is written." if session.run_dir is None
         else f"Logging and Model Saving Directory: {session.run_dir}")
    echo(f"Training {', '.join(run.flow.trained) or 'nothing'} on {run.placement.device} "
         f"({len(run.idx_dict[splits[0]])} train / {len(run.idx_dict[splits[1]])} val points"
         f"{', dev set' if tp.use_dev else ''}); {world.world_size} process(es) x batch {dl.batch_size} "
         f"= global batch {world.world_size * dl.batch_size}")
    _show_models(run, state, options, echo)
    return session


def _open_run_folder(session: Session, prepared: Prepared, resume: Path | None, state: dict[str, Any] | None) -> None:
    """Rank 0 creates (or reopens) the run folder and tells the others; it alone writes there."""
    if session.options.debug:
        return
    world, logging_params = session.world, prepared.config.logging_params
    run_dir = resume or (create_run_dir(logging_params.logging_dir, logging_params.run_notes) if world.main else None)
    session.run_dir = distributed.broadcast(run_dir)
    if world.main:
        session.lock = RunLock(run_dir).acquire() if resume is None else None
        session.log = open_run_log(run_dir, prepared, session.run, state)
    if state is None and session.saves:  # epoch 0: the initial weights, and a state to resume from
        _save(session, 0)


def _show_models(run: Run, state: dict[str, Any] | None, options: TrainOptions, echo: Echo) -> None:
    """The models' table: name, class, parameters, trained or frozen, where the weights came from."""
    from dlscaffold.summary import model_summary, summary_lines

    resumed = state["epoch"] if state is not None else None
    if options.progress_bar:  # a terminal
        from rich.console import Console

        Console().print(model_summary(run.flow, run.config, resumed_epoch=resumed))
    else:
        for line in summary_lines(run.flow, run.config, resumed_epoch=resumed):
            echo(line)


def _restore(run: Run, trainer: Trainer, monitor: Monitor, state: dict[str, Any], overrides: list[str],
             world: distributed.World) -> Position:
    """Put a checkpoint's state back: trainer, monitor, mid-epoch weights and position, RNGs (last)."""
    from dlscaffold.checkpoint import load_state_dict

    trainer.load_state_dict(state)
    if any(item.partition("=")[0].strip() == "training_params.lrn_rate" for item in overrides):
        trainer.set_learning_rate(run.config.training_params.lrn_rate)  # the resumed run trains on at the new rate
    saved = state.get("monitor") or {}
    monitor.best, monitor.best_epoch, monitor.bad = saved.get("best"), saved.get("best_epoch", 0), saved.get("bad", 0)
    for name, weights in (state.get("models") or {}).items():
        load_state_dict(run.flow.models[name], weights, f"info_flow.{name}")
    ranks = state.get("rng_ranks") or []
    if len(ranks) == world.world_size > 1:  # each rank draws its own dropout: restore its own RNGs
        state = {**state, "rng": ranks[world.rank]}
    if not state.get("position"):
        set_rng_state(state["rng"])  # last: building and checking above drew from the RNGs
        return Position()
    # Mid-epoch: the RNGs are restored only after the epoch's loader iterator exists, because making
    # one draws a seed from torch's RNG, which the interrupted run had done before its first step.
    return Position(**{**state["position"], "rng": state["rng"]})


def open_run_log(run_dir: Path, prepared: Prepared, run: Run, state: dict[str, Any] | None) -> RunLog:
    """Write the run's config, split and run.json; open its metrics log (trimmed when resuming)."""
    from dlscaffold import __version__
    from dlscaffold.provenance import collect, write_git_diff
    from dlscaffold.rundir import read_run_info

    write_text_atomic(run_dir / "config.yml", dump_config(prepared.config))
    save_idx_dict(run.idx_dict, run_dir / "idx_dict.json")
    root = prepared.project.root
    update_run_info(run_dir, project_dir=str(root), dlscaffold_version=__version__, status="running", error=None,
                    started=read_run_info(run_dir).get("started") or _now(), ended=None,
                    provenance=collect(root, list(sys.argv), str(run.placement.device)))
    write_git_diff(root, run_dir)
    return RunLog(run_dir, (state["epoch"], state["step"]) if state else None)


# --------------------------------------------------------------------------------------- loop


def train_epoch(session: Session, stop: StopFlag, progress: Progress) -> dict[str, float] | None:
    """One pass over the training loader; returns the epoch's sample means (over every rank's
    samples), or None when a signal stopped it (the caller saves the exact position)."""
    run, trainer, log, position = session.run, session.trainer, session.log, session.position
    names, device, log_every = trainer.flow.term_names, run.placement.device, run.config.training_params.log_every
    epoch_sums, window = _running_sums(session)
    trainer.flow.set_mode(training=True)
    sampler, batches = run.loaders["train"].sampler, iter(run.loaders["train"])
    if position.rng is not None:  # resumed mid-epoch: the iterator has drawn its seed, as it had then
        set_rng_state(position.rng)
        position.rng = None
    done, epochs = position.batches, (session.epoch, run.config.training_params.max_training_epochs)
    for batch in progress.track(batches, "train", done + len(run.loaders["train"]), epoch=epochs, step=trainer.step,
                                done=done):
        batch = run.transform(run.placement.move(batch), True)
        mine, total = sampler.share(position.batches)  # this rank's points of the global batch
        values = trainer.train_step(batch, share=mine * session.world.world_size / total)
        position.batches += 1
        if values is not None and mine > 0:  # None: a skipped non-finite step; mine 0: a padding batch
            epoch_sums.add(values, batch_size_of(batch))
            window.add(values, batch_size_of(batch))
        if trainer.step % log_every == 0:  # reading the window's means is a GPU sync: only at log points
            means = window.means(across_ranks=False)  # rank 0's window; epoch values are over every rank
            log.step_scalars(trainer.step, {**means, **trainer.learning_rates()})
            progress.show(loss=sum(t.weight * means[t.name] for t in trainer.flow.losses))
            window = Sums(names, device)
        # a single process stops after any step; data-parallel ranks agree at log points, together
        at_log_point = trainer.step % log_every == 0
        if agreed_stop(session, stop) if at_log_point else stop.requested and not session.world.distributed:
            position.sums, position.window = epoch_sums.state_dict(), window.state_dict()
            position.metrics = trainer.flow.metrics_state_dict()
            return None
    trainer.end_epoch()
    return {**epoch_sums.means(), **trainer.flow.compute_metrics()}


def _running_sums(session: Session) -> tuple[Sums, Sums]:
    """The epoch's and the log window's sums: fresh, or as a mid-epoch checkpoint left them."""
    names, device, position = session.trainer.flow.term_names, session.run.placement.device, session.position
    epoch_sums, window = Sums(names, device), Sums(names, device)
    session.trainer.flow.reset_metrics()
    if position.sums is not None:
        epoch_sums.load_state_dict(position.sums)
        window.load_state_dict(position.window)
        session.trainer.flow.load_metrics_state_dict(position.metrics or {})
    return epoch_sums, window


def agreed_stop(session: Session, stop: StopFlag) -> bool:
    """Whether to stop now. Data-parallel ranks decide together: a signal seen by any rank stops
    every rank at the same point (one small collective, at log points and epoch ends only)."""
    if not session.world.distributed:
        return stop.requested
    seen = distributed.all_reduce_sum(torch.tensor([float(stop.signum or 0)], device=session.run.placement.device))
    if seen.item() and not stop.requested:
        stop.signum = int(signal.SIGTERM)
    return bool(seen.item())


def fit(session: Session, stop: StopFlag, echo: Echo) -> Path | None:
    """The epoch loop: train, validate, keep the best, log, checkpoint; then the summary."""
    run, tp = session.run, session.run.config.training_params
    progress, last_val, started = Progress(session.options.progress_bar), {}, time.perf_counter()
    last_epoch = session.start_epoch - 1
    for epoch in range(session.start_epoch, tp.max_training_epochs + 1):
        session.epoch, epoch_start = epoch, time.perf_counter()
        values = _train_and_validate(session, epoch, stop, progress)
        if values is None:  # a signal: save the exact position inside this epoch, then stop
            if session.saves:
                _save(session, epoch - 1, session.position)
            stop.raise_if_requested()
        train_values, val_values = values
        last_val, last_epoch = val_values or last_val, epoch
        stopping, signalled = _early_stop(session, epoch, val_values), agreed_stop(session, stop)
        if session.saves and (epoch % tp.save_every == 0 or epoch == tp.max_training_epochs or stopping or signalled):
            _save(session, epoch)
        echo(f"epoch {epoch}/{tp.max_training_epochs}  train: {_format(train_values)}"
             + (f"  | val: {_format(val_values)}" if val_values else "")
             + f"  ({time.perf_counter() - epoch_start:.1f}s)")
        session.position = Position()
        if signalled:  # a signal during validation: the epoch's checkpoint is saved above
            stop.raise_if_requested()
        if stopping:
            echo(f"Early stopping: {session.monitor.name} has not improved for {session.monitor.bad} validations "
                 f"(best {session.monitor.best:.6g} at epoch {session.monitor.best_epoch}).")
            break
    session.log.hparams(_hparams(run.config), {f"val/{k}": v for k, v in last_val.items()})
    _finish(session, "completed")
    _summary(echo, session, last_epoch, last_val, time.perf_counter() - started)
    return session.run_dir


def _train_and_validate(session: Session, epoch: int, stop: StopFlag,
                        progress: Progress) -> tuple[dict[str, float], dict[str, float]] | None:
    """Train one epoch and validate it when due; log the rows. None: stopped by a signal mid-epoch."""
    run, trainer, tp = session.run, session.trainer, session.run.config.training_params
    batch_size = run.config.dataloading_params.batch_size
    run.loaders["train"].sampler.set_epoch(epoch, start=session.position.batches * batch_size)  # order: (seed, epoch)
    run.flow.clock["epoch"] = epoch  # what {epoch: trainer} inputs read
    skipped_before = trainer.skipped_nonfinite
    train_values = train_epoch(session, stop, progress)
    if train_values is None:
        return None
    rates = trainer.learning_rates()  # after the epoch's scheduler step: the rate the next epoch starts with
    if tp.on_nonfinite == "skip":
        rates["skipped_nonfinite_steps"] = float(trainer.skipped_nonfinite - skipped_before)
    if trainer.precision.scaler.is_enabled():
        rates["fp16_skipped_steps"] = float(trainer.precision.skipped_steps)
    session.log.epoch_row(epoch, "train", trainer.step, {**train_values, **rates})
    val_values: dict[str, float] = {}
    if epoch % tp.val_every == 0 or epoch == tp.max_training_epochs:
        specs, images = run.config.logging_params.log_images, {}
        keep = (lambda batch, outputs: images.update(collect_images(specs, batch, outputs))) if specs else None
        val_values, _ = run_epoch(run.flow, run.loaders["val"], run.placement, run.precision, run.transform,
                                  progress, "val", first_batch=keep)
        session.log.epoch_row(epoch, "val", trainer.step, val_values)
        session.log.images(trainer.step, image_grids(images))
    return train_values, val_values


def _early_stop(session: Session, epoch: int, val_values: dict[str, float]) -> bool:
    """Record a validation with the monitor; save the best weights; whether patience ran out."""
    monitor, patience = session.monitor, session.run.config.training_params.early_stopping_patience
    if monitor.name not in val_values:
        return False
    if monitor.update(val_values[monitor.name], epoch) and session.saves and session.writes:
        save_best(session.run_dir, session.run.flow.models)
        update_run_info(session.run_dir, best={"epoch": epoch, "metric": monitor.name, "value": monitor.best})
    return patience is not None and monitor.bad >= patience


def _save(session: Session, epoch: int, position: Position | None = None) -> None:
    """A checkpoint after ``epoch`` (or inside the next one, at ``position``). Every rank takes part
    (their RNG states are gathered); rank 0 writes."""
    state = {**session.trainer.state_dict(), "monitor": session.monitor.state_dict()}
    if session.world.distributed:
        state["rng_ranks"] = distributed.gather(rng_state())
    if session.writes:
        saved = None if position is None else {k: v for k, v in vars(position).items() if k != "rng"}
        save_checkpoint(session.run_dir, epoch, session.run.flow.models, state, position=saved)


def _format(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in values.items())


def _hparams(config: Any) -> dict[str, Any]:
    tp, dl = config.training_params, config.dataloading_params
    return {"lrn_rate": tp.lrn_rate, "batch_size": dl.batch_size, "regularization_weight": tp.regularization_weight,
            "seed": tp.seed, "optimizer": tp.optimizer.name if tp.optimizer else "Adam",
            "max_training_epochs": tp.max_training_epochs, "run_notes": config.logging_params.run_notes}


def _summary(echo: Echo, session: Session, epochs: int, last_val: dict[str, float], seconds: float) -> None:
    run_dir, monitor = session.run_dir, session.monitor
    echo(f"Done: {epochs} epochs in {seconds:.1f}s.")
    if last_val:
        echo(f"Final val: {_format(last_val)}")
    if monitor.best is not None:
        echo(f"Best val {monitor.name}: {monitor.best:.6g} at epoch {monitor.best_epoch} "
             f"(last: {last_val.get(monitor.name, float('nan')):.6g} at epoch {epochs})")
    if run_dir is not None:
        echo(f"Run folder: {run_dir}")
        echo("  metrics:     metrics.jsonl (one row per epoch and split)")
        if session.saves:
            echo("  checkpoints: checkpoints/<Model>_<epoch:06d>.pt, best: checkpoints/<Model>_best.pt")
        echo(f"  TensorBoard: tensorboard --logdir {run_dir}")
        echo(f"  evaluate:    dlscaffold evaluate {run_dir}")
