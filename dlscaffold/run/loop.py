"""The epoch loop of a training run, top to bottom: :func:`fit` trains, validates, keeps the best,
logs and checkpoints, epoch after epoch; :func:`train_epoch` is one pass over the training data.

What the loop works on is a :class:`Session`, set up by :func:`dlscaffold.train.setup`.
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlscaffold.config.monitor import TOTAL_LOSS, logs_total
from dlscaffold.config.schema import every_epochs, every_steps
from dlscaffold.errors import blame
from dlscaffold.parts import distributed
from dlscaffold.parts.flow import batch_size_of
from dlscaffold.parts.hooks import HookContext, Hooks
from dlscaffold.records.checkpoint import rng_state, save_checkpoint, set_rng_state
from dlscaffold.records.images import collect_images, image_grids
from dlscaffold.records.paced import PacedRecords
from dlscaffold.records.rundir import RunLock, read_run_info, update_run_info
from dlscaffold.records.trackers import Trackers
from dlscaffold.run.builder import Run
from dlscaffold.run.epoch import Sums, batch_mover, rank_position, run_epoch
from dlscaffold.run.progress import Progress
from dlscaffold.run.stops import Pruned, StopFlag
from dlscaffold.run.summary import best_epoch_line, duration, epoch_lines, pack, program, values_text
from dlscaffold.run.trainer import Trainer

Echo = Callable[[str], None]


def fit(session: Session, stop: StopFlag, echo: Echo) -> RunResult:
    """The epoch loop: train, validate, keep the best, log, checkpoint; then the summary."""
    run, tp = session.run, session.run.config.training_params
    every = run.config.logging_params.progress_every  # plain progress lines without a terminal
    progress, last_val = Progress(session.options.progress_bar, every=every, echo=echo), {}
    session.started, last_epoch, status = time.perf_counter(), session.start_epoch - 1, "completed"
    best = best_epoch_line(run.config)  # several losses and no training_params.monitor: which value picks
    if best:
        echo(best)
    for epoch in range(session.start_epoch, tp.max_training_epochs + 1):
        session.epoch, epoch_start = epoch, time.perf_counter()
        values = _train_and_validate(session, epoch, stop, progress)
        if values is None:  # a signal: save the exact position inside this epoch, then stop
            if session.saves:
                save_state(session, epoch - 1, session.position)
            end_stopped(session, stop)
        train_values, val_values = values
        last_val, last_epoch = val_values or session.last_val or last_val, epoch
        improved = _after_validation(session, epoch, val_values, epoch)  # may end the run: session.ending
        if session.ending is None:
            _fire(session, "epoch", train_values)  # a hook may ask to stop
        signalled = agreed_stop(session, stop)
        saved = None  # True / False: the epoch's checkpoint was written / refused (non-finite weights)
        if session.saves and (_save_due(session, epoch) or signalled or session.ending):
            saved = save_state(session, epoch)
        # The best weights after the epoch's checkpoint (linked, not written twice); none when it was refused
        # (one warning said why). They and run.json's training time are written when due (records/paced.py).
        if improved and saved is not False:
            _keep_best(session, epoch, at_once=bool(saved))
        if session.writes:  # the run's training time so far, over all its sessions
            session.records.write(session.train_seconds, force=bool(saved) and improved)
        seconds = time.perf_counter() - epoch_start
        for line in epoch_lines(epoch, tp.max_training_epochs, train_values, val_values, seconds):
            echo(line)
        session.position = Position()
        if signalled:  # a signal during validation: the epoch's checkpoint is saved above
            end_stopped(session, stop)
        if session.ending is not None:
            echo(_ending_line(session, epoch))
            status = "pruned" if session.ending == "pruned" else status
            break
    if status == "completed":
        _fire(session, "end", last_val)
    if session.stop_reason and session.writes:
        update_run_info(session.run_dir, stop_reason=session.stop_reason)
    session.log.hparams(_hparams(run.config), {f"val/{k}": v for k, v in last_val.items()})
    record_end(session, status, epoch=last_epoch if status == "completed" else None)
    _summary(echo, session, last_epoch, last_val)
    monitor = session.monitor
    return RunResult(
        session.run_dir, status, last_epoch, monitor.name, monitor.best_epoch or None, monitor.best, dict(last_val)
    )


def _save_due(session: Session, epoch: int) -> bool:
    """Whether an epoch's end saves a checkpoint: every ``save_every`` epochs, and after the last."""
    tp = session.run.config.training_params
    every = every_epochs(tp.save_every)
    return epoch == tp.max_training_epochs or (every is not None and epoch % every == 0)


def _after_validation(session: Session, epoch: int, val_values: dict[str, float], at: int) -> bool:
    """Judge a validation: whether it is the best so far; patience running out or a sweep's pruner
    (told ``at``: the epoch, or the step of a step validation) end the run (``session.ending``)."""
    improved, stopping = _judge(session, epoch, val_values)
    pruned = _pruned(session, at, val_values)
    if stopping or pruned:
        session.ending = "early_stop" if stopping else "pruned"
    return improved


def _ending_line(session: Session, epoch: int) -> str:
    """What the log says when early stopping, a sweep's pruner or a hook ends the run."""
    monitor, step = session.monitor, session.trainer.step
    if session.ending == "early_stop":
        return (
            f"Early stopping: {monitor.name} has not improved for {monitor.bad} validations "
            f"(best {monitor.best:.6g} at epoch {monitor.best_epoch})."
        )
    if session.ending == "pruned":
        return f"Pruned after epoch {epoch}: the sweep's pruner ends this trial; its checkpoints are kept."
    return f"Stopped in epoch {epoch} after step {step}: {session.stop_reason}"


def _pruned(session: Session, epoch: int, val_values: dict[str, float]) -> bool:
    """Report a validation to ``options.on_validation`` (rank 0); whether it pruned the run."""
    report, pruned = session.options.on_validation, False
    if report is None or not val_values or session.monitor.name is None:
        return False
    if session.world.main:
        try:
            report(epoch, val_values.get(session.monitor.name, math.nan))
        except Pruned:
            pruned = True
    return distributed.broadcast(pruned)  # every process of a data-parallel trial ends with rank 0


def _train_and_validate(
    session: Session, epoch: int, stop: StopFlag, progress: Progress
) -> tuple[dict[str, float], dict[str, float]] | None:
    """Train one epoch and validate it when due; log the rows. None: stopped by a signal mid-epoch."""
    trainer, tp = session.trainer, session.run.config.training_params
    begin_epoch(session, epoch)
    skipped_before = trainer.skipped_nonfinite
    train_values = train_epoch(session, stop, progress)
    if train_values is None:
        return None
    train_values = _with_total(session, train_values)
    rates = trainer.learning_rates()  # after the epoch's scheduler step: the rate the next epoch starts with
    if tp.on_nonfinite == "skip":
        rates["skipped_nonfinite_steps"] = float(trainer.skipped_nonfinite - skipped_before)
    if trainer.precision.scaled:
        rates["fp16_skipped_steps"] = float(trainer.precision.skipped_steps)
    session.log.epoch_row(epoch, "train", trainer.step, {**train_values, **rates})
    val_epochs = every_epochs(tp.val_every)
    if val_epochs and (epoch % val_epochs == 0 or epoch == tp.max_training_epochs):
        return train_values, validate(session, epoch, progress)
    return train_values, {}


def begin_epoch(session: Session, epoch: int) -> None:
    """What an epoch's training pass needs first: the sampler's order, the flow's epoch clock and the
    dataset's ``set_epoch`` (e.g. an augmentation schedule)."""
    run = session.run
    run.loaders["train"].sampler.set_epoch(epoch)  # order: (seed, epoch); a resumed epoch's start: _running_sums
    run.flow.clock["epoch"] = epoch  # what {epoch: trainer} inputs read
    set_epoch = getattr(run.dataset, "set_epoch", None)
    if callable(set_epoch):  # before the loader's iterator (and workers) start
        with blame("CustomDataSet.set_epoch"):
            set_epoch(epoch)


def train_steps(session: Session, steps: int) -> None:
    """Train ``steps`` optimizer steps through the epoch loop's own training pass, from the session's
    epoch on into the next ones as needed; no validation, nothing written by the loop itself. For
    tools that step a run without keeping it (``dlscaffold profile``, the determinism fingerprint):
    the session comes from :func:`dlscaffold.train.built_session`."""
    stop = _AfterSteps(session.trainer, steps)
    progress = Progress(False)
    epoch = session.epoch or session.start_epoch
    while not stop.requested:
        session.epoch = epoch
        begin_epoch(session, epoch)
        if train_epoch(session, stop, progress) is None:  # stopped inside the epoch
            break
        session.position, epoch = Position(), epoch + 1
    session.epoch = epoch


class _AfterSteps(StopFlag):
    """A stop flag (never installed for signals) raised once the trainer has taken ``steps`` more steps."""

    def __init__(self, trainer: Trainer, steps: int):
        super().__init__()
        self.trainer, self.until = trainer, trainer.step + steps

    @property
    def requested(self) -> bool:
        return self.trainer.step >= self.until


def validate(session: Session, epoch: int, progress: Progress) -> dict[str, float]:
    """One pass over the validation split: its values (with ``total_loss``), its row, its images;
    then the validation hooks."""
    run, step = session.run, session.trainer.step
    specs, images = run.config.logging_params.log_images, {}
    keep = (lambda batch, outputs: images.update(collect_images(specs, batch, outputs))) if specs else None
    run.flow.clock["step"] = step  # the steps done, as evaluate gives these weights (the row's step)
    val_values, _ = run_epoch(
        run.flow,
        run.loaders["val"],
        run.placement,
        run.precision,
        run.transform,
        progress,
        "val",
        first_batch=keep,
        views=run.views,
    )
    val_values = _with_total(session, val_values)
    session.log.epoch_row(epoch, "val", step, val_values)
    session.log.images(step, image_grids(images))
    session.last_val = val_values
    _fire(session, "validation", val_values)
    return val_values


def _with_total(session: Session, values: dict[str, float]) -> dict[str, float]:
    """``total_loss``, the weighted sum of the losses' epoch means (the objective the steps minimise),
    after the losses and evals, for a run with two or more losses or ``monitor: total``."""
    if not logs_total(session.run.config):
        return values
    return {**values, TOTAL_LOSS: sum(t.weight * values[t.name] for t in session.trainer.flow.losses)}


def train_epoch(session: Session, stop: StopFlag, progress: Progress) -> dict[str, float] | None:
    """One pass over the training loader; returns the epoch's sample means (over every rank's
    samples), or None when a signal stopped it (the caller saves the exact position). A step is one
    batch, or ``accumulate`` batches: what happens between steps (logging, step validations and
    checkpoints, hooks, a signal's stop) happens after a step's last batch only."""
    run, trainer, position = session.run, session.trainer, session.position
    epoch_sums, window = _running_sums(session)
    trainer.flow.set_mode(training=True)
    trainer.begin_epoch(session.epoch)  # parameter groups outside their epochs: no gradient work
    sampler, batches = run.loaders["train"].sampler, iter(run.loaders["train"])
    if position.rng is not None:  # resumed mid-epoch: the iterator has drawn its seed, as it had then
        set_rng_state(position.rng)
        position.rng = None
    done, epochs = position.batches, (session.epoch, run.config.training_params.max_training_epochs)
    last_batch = done + len(run.loaders["train"])  # a stop after it saves the epoch's end instead
    steps = _Steps(sampler, trainer.accumulate, last_batch, session.world.world_size)
    # fixed for the run: looked up once, not at every step
    sizes, log_every = sorted(set(trainer.own_accumulate.values())), run.config.training_params.log_every
    move = batch_mover(run.loaders["train"], run.placement)
    between, alone = _between_steps_due(session), not session.world.distributed
    pending: list[tuple[dict, int]] = []  # the step's batches' values, counted once the step is applied
    for batch in progress.track(batches, "train", last_batch, epoch=epochs, step=trainer.step, done=done):
        # --- the step (or one batch of it)
        batch = run.transform(move(batch), True)
        share, counted, last = steps.of(position.batches)
        groups = {k: steps.of(position.batches, k)[::2] for k in sizes} if sizes else None
        values = trainer.train_step(batch, share=share, last=last, groups=groups)
        position.batches += 1
        if values is not None and counted:  # not counted: a padding batch
            pending.append((values, batch_size_of(batch)))
        if not last:
            continue
        # --- the epoch's sums and the log window (None: a skipped non-finite step, counted nowhere)
        for batch_values, size in pending if values is not None else ():
            totals = epoch_sums.batch_totals(batch_values, size)  # once, for both
            epoch_sums.add_totals(totals, size)
            window.add_totals(totals, size)
        pending = []
        at_log_point = trainer.step % log_every == 0
        if at_log_point:  # a GPU sync: only at log points
            window = _log_step(session, progress, epoch_sums, window)
        if between and _between_steps(session, progress, epoch_sums, window, position.batches < last_batch):
            break  # early stopping, a sweep's pruner or a hook ended the run here
        # --- a signal: a single process stops after any step; data-parallel ranks agree at log points
        stopping = agreed_stop(session, stop) if at_log_point else stop.requested and alone
        if stopping and position.batches < last_batch:
            _keep_position(session, epoch_sums, window)
            return None
    trainer.end_epoch()
    return {**epoch_sums.means(), **trainer.flow.compute_metrics()}


class _Steps:
    """Which step each batch of the epoch belongs to, and its weight in it: ``accumulate``
    consecutive batches from the epoch's first make a step (the last step may have fewer)."""

    def __init__(self, sampler: Any, accumulate: int, batches: int, world_size: int):
        self.sampler, self.accumulate, self.batches, self.world_size = sampler, accumulate, batches, world_size
        self.groups: dict[int, tuple[int, int]] = {}  # size -> (first batch, points of every rank) of the current
        self.alone = accumulate == 1 and world_size == 1  # every batch a whole step of its own points

    def of(self, index: int, size: int | None = None) -> tuple[float, bool, bool]:
        """For the epoch's ``index``-th batch: ``(share, whether it holds points of this rank, whether
        it ends its step)``; share: this rank's points x ranks / the points of the step's batches on
        every rank. ``size``: for groups of that many batches instead (a model's own ``accumulate``)."""
        if size is None and self.alone:  # one process, one batch a step: share 1, never a padding batch
            return 1.0, True, True
        size = size or self.accumulate
        if size == 1:  # a step of one batch: its own points are the step's
            mine, total = self.sampler.share(index)
            return mine * self.world_size / total, mine > 0, True
        first = index - index % size
        end = min(first + size, self.batches)
        if self.groups.get(size, (-1,))[0] != first:
            self.groups[size] = (first, sum(self.sampler.share(i)[1] for i in range(first, end)))
        mine = self.sampler.share(index)[0]
        return mine * self.world_size / self.groups[size][1], mine > 0, index + 1 == end


def _log_step(session: Session, progress: Progress, epoch_sums: Sums, window: Sums) -> Sums:
    """A log point: the window's means to the trackers, the epoch so far to the progress bar; a new window."""
    trainer = session.trainer
    means = window.means(across_ranks=False)  # rank 0's window; epoch values are over every rank
    session.log.step_scalars(trainer.step, {**means, **trainer.learning_rates()})
    running = epoch_sums.means(across_ranks=False)  # the epoch so far (the GPU is in sync already)
    parts = {t.name.partition("/")[2]: running[t.name] for t in trainer.flow.losses}
    total = sum(t.weight * running[t.name] for t in trainer.flow.losses)
    progress.show(loss=total, parts=parts if len(parts) == len(trainer.flow.losses) else None)
    return Sums(trainer.flow.term_names, session.run.placement.device)


def _between_steps_due(session: Session) -> bool:
    """Whether :func:`_between_steps` has anything to do in this run: ``{steps: N}`` intervals or step hooks."""
    tp, hooks = session.run.config.training_params, session.hooks
    return bool(every_steps(tp.val_every) or every_steps(tp.save_every) or (hooks is not None and hooks.wants("step")))


def _between_steps(session: Session, progress: Progress, epoch_sums: Sums, window: Sums, mid_epoch: bool) -> bool:
    """After a step: the step hooks, and with ``{steps: N}`` intervals a validation and a checkpoint.
    Returns whether the run ends here (``session.ending``)."""
    tp, step = session.run.config.training_params, session.trainer.step
    val_steps, save_steps = every_steps(tp.val_every), every_steps(tp.save_every)
    if val_steps and step % val_steps == 0:
        _step_validation(session)
    if session.hooks is not None and session.hooks.wants("step") and session.ending is None:
        _fire(session, "step", {})
    if save_steps and step % save_steps == 0 and session.saves and mid_epoch and session.ending is None:
        _keep_position(session, epoch_sums, window)
        save_state(session, session.epoch - 1, session.position)
        session.position.sums = session.position.window = session.position.metrics = None
    return session.ending is not None


def _step_validation(session: Session) -> None:
    """A validation inside the epoch (``val_every: {steps: N}``): its row, the best weights, early
    stopping and a sweep's pruner, as after an epoch; training then goes on where it was."""
    flow, epoch = session.trainer.flow, session.epoch
    training_metrics = flow.metrics_state_dict()  # the validation pass resets the torchmetrics evals
    quiet = Progress(False, every=0)  # the training bar is still open
    val_values = validate(session, epoch, quiet)
    if _after_validation(session, epoch, val_values, session.trainer.step):
        _keep_best(session, epoch)
        if session.writes:
            session.records.write(session.train_seconds)
    flow.load_metrics_state_dict(training_metrics)
    flow.set_mode(training=True)


def _keep_position(session: Session, epoch_sums: Sums, window: Sums) -> None:
    """What a mid-epoch checkpoint saves beside the batches done: the running sums and metric states."""
    position = session.position
    position.sums, position.window = epoch_sums.state_dict(), window.state_dict()
    position.metrics = session.trainer.flow.metrics_state_dict()


def _fire(session: Session, event: str, values: dict[str, float]) -> None:
    """Run the project's hooks of ``event`` (rank 0 unless a hook asks for every rank); a hook's stop
    request ends the run cleanly (``session.ending``), every rank with rank 0."""
    hooks = session.hooks
    if hooks is None or not hooks.wants(event):
        return
    context = HookContext(
        event=event,
        epoch=session.epoch,
        step=session.trainer.step,
        models=session.run.flow.models,
        outputs=session.trainer.outputs,
        values=dict(values),
        run_dir=session.run_dir,
        trackers=session.log,
    )
    reason = hooks.fire(event, context)
    if session.world.distributed:
        reason = distributed.broadcast(reason)
    if reason is not None and session.ending is None:
        session.ending, session.stop_reason = "hook", reason


def _running_sums(session: Session) -> tuple[Sums, Sums]:
    """The epoch's and the log window's sums: fresh, or as a mid-epoch checkpoint left them (saved by
    this number of processes or another: :func:`~dlscaffold.run.epoch.rank_position`). A resumed
    epoch's sampler starts after the global batches done, the same points for any number of them."""
    names, device, position = session.trainer.flow.term_names, session.run.placement.device, session.position
    epoch_sums, window = Sums(names, device), Sums(names, device)
    session.trainer.flow.reset_metrics()
    session.run.loaders["train"].sampler.skip_batches(position.batches)  # batches: global ones, done by each rank
    saved = position.ranks  # a data-parallel checkpoint's, by rank; a single process's are the top-level ones
    if saved is None and position.sums is not None:
        saved = [{"sums": position.sums, "window": position.window, "metrics": position.metrics}]
    if saved is not None:
        world = session.world
        mine = rank_position(saved, world.rank, world.world_size, session.trainer.flow)
        position.sums, position.window, position.metrics = mine["sums"], mine["window"], mine["metrics"]
    position.ranks = None
    if position.sums is not None:
        epoch_sums.load_state_dict(position.sums)
        window.load_state_dict(position.window)
        session.trainer.flow.load_metrics_state_dict(position.metrics or {})
    return epoch_sums, window


def agreed_stop(session: Session, stop: StopFlag) -> bool:
    """Whether to stop now. Data-parallel ranks decide together: a signal (or the job's end time)
    seen by any rank stops every rank at the same point, for the same reason (one small collective,
    at log points and epoch ends only)."""
    if not session.world.distributed:
        return stop.requested
    votes = distributed.all_reduce_sum(torch.tensor(stop.votes(), device=session.run.placement.device))
    return stop.agree(votes.tolist())


def end_stopped(session: Session, stop: StopFlag) -> None:
    """End a stopped run once its position is saved. Data-parallel ranks first wait for rank 0's
    writes: once one process has ended, torchrun stops the others, and none may be writing then.
    From here on a signal changes nothing (the run is ending: nothing is left to wait for)."""
    distributed.barrier()
    stop.ending = True
    stop.raise_if_requested()


def _judge(session: Session, epoch: int, val_values: dict[str, float]) -> tuple[bool, bool]:
    """Record a validation with the monitor: whether it is the best so far, whether patience ran out."""
    monitor, patience = session.monitor, session.run.config.training_params.early_stopping_patience
    if monitor.name is None or monitor.name not in val_values:  # monitor: none, or no validation
        return False, False
    improved = monitor.update(val_values[monitor.name], epoch)
    return improved, patience is not None and monitor.bad >= patience


def _keep_best(session: Session, epoch: int, at_once: bool = False) -> None:
    """The best validation's weights as ``<Model>_best.pt`` and its record in ``run.json``, written
    with the next records (``session.records.write``), or ``at_once`` when its checkpoint was saved."""
    if not (session.saves and session.writes):
        return
    monitor, by_steps = session.monitor, every_steps(session.run.config.training_params.val_every)
    step = {"step": session.trainer.step} if by_steps else {}  # validations by steps: which one
    record = {"epoch": epoch, **step, "metric": monitor.name, "value": monitor.best}
    session.records.keep_best(epoch, session.run.flow.models, record, at_once)


def save_state(session: Session, epoch: int, position: Position | None = None) -> bool:
    """A checkpoint after ``epoch`` (or inside the next one, at ``position``). Every rank takes part
    (their RNG states are gathered); rank 0 writes. False: refused, a model holds NaN or inf (one
    warning line; the checkpoints saved before are kept). It records the number of processes: a
    resume on another number continues the same global batches, or is refused without a global batch."""
    state = {**session.trainer.state_dict(), "monitor": session.monitor.state_dict()}
    state["world_size"] = session.world.world_size
    if session.hooks is not None:
        state["hooks"] = session.hooks.state_dict()
    saved = None if position is None else {k: v for k, v in vars(position).items() if k not in ("rng", "ranks")}
    if session.world.distributed:
        state["rng_ranks"] = distributed.gather(rng_state())
        if saved is not None:  # each rank's own running sums and metric states (rank 0's are the top-level ones)
            saved["ranks"] = distributed.gather({k: saved[k] for k in ("sums", "window", "metrics")})
    if not session.writes:
        return True
    if not save_checkpoint(session.run_dir, epoch, session.run.flow.models, state, position=saved):
        return False
    session.records.write(session.train_seconds, force=True)  # the records a resume from here expects
    return True


def record_end(session: Session, status: str, error: str | None = None, epoch: int | None = None) -> None:
    """Write how the run ended into ``run.json`` (rank 0 of a run that keeps a record).

    ``completed`` also records ``completed_epoch`` (``epoch``, the last one trained). A run that
    completed once keeps status ``completed``: a continuation of it (``--resume`` with more epochs)
    that fails or is interrupted is recorded as ``continuation: {"status", "error", "ended"}``.
    """
    session.status = status
    if not session.writes:
        return
    session.records.write(session.train_seconds, force=True)  # the best weights waiting, the training time
    info, now = read_run_info(session.run_dir), utc_now()
    if status == "completed":
        cleared = {"continuation": None} if "continuation" in info else {}
        update_run_info(session.run_dir, status=status, error=error, ended=now, completed_epoch=epoch, **cleared)
    elif isinstance(info.get("completed_epoch"), int):  # it completed before: never downgraded
        continuation = {"status": status, "error": error, "ended": now}
        update_run_info(session.run_dir, status="completed", error=None, ended=now, continuation=continuation)
    else:
        update_run_info(session.run_dir, status=status, error=error, ended=now)


def utc_now() -> str:
    """The time, as run.json records it (ISO 8601, UTC)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _hparams(config: Any) -> dict[str, Any]:
    tp, dl = config.training_params, config.dataloading_params
    return {
        "lrn_rate": tp.lrn_rate,
        "batch_size": dl.batch_size,
        **({"global_batch_size": dl.global_batch_size} if dl.global_batch_size else {}),
        "regularization_weight": tp.regularization_weight,
        "seed": tp.seed,
        "optimizer": tp.optimizer.name if tp.optimizer else "Adam",
        "max_training_epochs": tp.max_training_epochs,
        "run_notes": config.logging_params.run_notes,
    }


def _summary(echo: Echo, session: Session, epochs: int, last_val: dict[str, float]) -> None:
    """The end of a completed run: every epoch of the run, and its training time over all its sessions."""
    run_dir, monitor, first = session.run_dir, session.monitor, session.start_epoch
    done = f"Done: {epochs} epochs in {duration(session.train_seconds)}"
    if first > 1:  # resumed: this session trained epochs first..epochs
        this = f"epochs {first}-{epochs}" if epochs > first else f"epoch {first}" if epochs == first else "no epoch"
        done += f" (resumed at epoch {first}; this session: {this}, {duration(session.session_seconds)})"
    echo(done + ".")
    if session.trainer.skipped_nonfinite:
        echo(f"Skipped {session.trainer.skipped_nonfinite} non-finite step(s) (training_params.on_nonfinite: skip).")
    if last_val:
        for line in pack("Final val: ", values_text(last_val)):
            echo(line)
    if monitor.best is not None:
        echo(
            f"Best val {monitor.name}: {monitor.best:.6g} at epoch {monitor.best_epoch} "
            f"(last: {last_val.get(monitor.name, float('nan')):.6g} at epoch {epochs})"
        )
    if run_dir is not None:
        echo(f"Run folder: {run_dir}")
        echo("  metrics:     metrics.jsonl (one row per epoch and split)")
        if session.saves:
            best = ", best: checkpoints/<Model>_best.pt" if monitor.name is not None else " (monitor: none: no best)"
            echo(f"  checkpoints: checkpoints/<Model>_<epoch:06d>.pt{best}")
        echo(f"  TensorBoard: tensorboard --logdir {run_dir}")
        echo(f"  evaluate:    {program('evaluate')} {shlex.quote(str(run_dir))}")


# ------------------------------------------------------------------- what the loop works on


@dataclass
class TrainOptions:
    """How to run, beside the config: the ``dlscaffold train`` flags."""

    dev: bool = False  # train and validate on the dev set
    no_save: bool = False  # log, but keep no checkpoints
    debug: bool = False  # dev set, anomaly detection, nothing written
    no_folder: bool = False  # build the run as training does, but create no run folder: nothing written
    device: str | None = None  # force a device (cpu, cuda, cuda:1)
    progress_bar: bool = False  # show a progress bar (on a terminal)
    # For experiments (a sweep's trials, seed groups):
    run_info: dict[str, Any] = field(default_factory=dict)  # more keys for run.json ("sweep", "group")
    run_notes_suffix: str = ""  # appended to the run folder's name: <YYYYMMDD>_<N>_<run_notes>_<suffix>
    # Called on rank 0 after each validation with (epoch, the monitored value); raising
    # dlscaffold.run.stops.Pruned ends the run there with status "pruned", its checkpoints kept.
    on_validation: Callable[[int, float], None] | None = None


@dataclass
class Monitor:
    """The best validation value so far of ``training_params.monitor``, and early stopping."""

    name: str | None  # None: training_params.monitor: none, no best epoch
    mode: str  # "min" or "max"
    best: float | None = None
    best_epoch: int = 0
    bad: int = 0  # validations since the last improvement

    def update(self, value: float, epoch: int) -> bool:
        """Record a validation; returns whether it improved on the best. A NaN or inf never does."""
        better = math.isfinite(value) and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        )
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
    ranks: list[dict[str, Any]] | None = None  # data-parallel: each rank's sums, window and metrics, by rank
    rng: dict[str, Any] | None = None  # resuming mid-epoch: RNG states to restore once the loader iterates


@dataclass
class Session:
    """A training run, set up: what :func:`fit` loops over."""

    run: Run
    trainer: Trainer
    monitor: Monitor
    log: Trackers  # metrics.jsonl and the trackers; none for a --debug run
    run_dir: Path | None  # None: a --debug run writes nothing
    start_epoch: int
    options: TrainOptions
    position: Position = field(default_factory=Position)  # where a resumed run continues inside start_epoch
    lock: RunLock | None = None
    epoch: int = 0  # the epoch in progress (for messages)
    world: distributed.World = field(default_factory=distributed.World)
    status: str | None = None  # how the run ended: completed, failed, interrupted
    seconds_before: float = 0.0  # the training time of the run's earlier sessions (a resumed run)
    hooks: Hooks | None = None  # the project's hooks (training_params.hooks)
    ending: str | None = None  # the run ends after this step or epoch: "early_stop", "pruned" or "hook"
    stop_reason: str | None = None  # a hook's stop request (run.json's stop_reason)
    last_val: dict[str, float] = field(default_factory=dict)  # the last validation's values
    started: float | None = None  # time.perf_counter() when this session's epoch loop began
    records: PacedRecords | None = None  # the best weights and run.json's training time, when ``writes``

    @property
    def session_seconds(self) -> float:
        """How long this session's epoch loop has run."""
        return 0.0 if self.started is None else time.perf_counter() - self.started

    @property
    def train_seconds(self) -> float:
        """The run's training time so far: its earlier sessions' and this one's."""
        return self.seconds_before + self.session_seconds

    @property
    def saves(self) -> bool:
        """Whether checkpoints are taken (every rank takes part; rank 0 alone writes)."""
        return self.run_dir is not None and not self.options.no_save

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder: rank 0 of a run that keeps a record."""
        return self.run_dir is not None and self.world.main


@dataclass(frozen=True)
class RunResult:
    """What :func:`dlscaffold.train.train` returns for a run that ended ``completed``."""

    run_dir: Path | None  # None: a --debug run wrote nothing
    status: str
    epochs: int  # the last epoch trained
    monitor: str | None  # training_params.monitor: the value "best" is judged by (None: monitor: none)
    best_epoch: int | None  # None: never validated
    best_value: float | None
    last_val: dict[str, float]  # the last validation's values, ``<Model>/<logging_name>`` keys
