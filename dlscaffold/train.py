"""``dlscaffold train``: a training run, from the config to its end.

:func:`train` is :func:`setup` (check, build, open the run folder) followed by
:func:`dlscaffold.run.loop.fit` (the epoch loop: train, validate every ``val_every`` epochs, keep the
best, log, checkpoint every ``save_every``). What can end a run early is handled here: a signal (a
checkpoint of the exact position, status ``interrupted``), a non-finite step or an error in the
project's code (one line, status ``failed``, the last good checkpoint kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dlscaffold.config import dump_config
from dlscaffold.config.monitor import monitored
from dlscaffold.data import save_idx_dict
from dlscaffold.errors import CodeError, QuietExit, UserError
from dlscaffold.parts import distributed
from dlscaffold.parts.device import frozen_setup, kept_cpu_memory
from dlscaffold.parts.ema import attach as attach_ema
from dlscaffold.parts.hooks import build_hooks
from dlscaffold.parts.init_data import init_from_data
from dlscaffold.prepare import Prepared, prepare
from dlscaffold.project.code import MODULE_NAMES
from dlscaffold.records.checkpoint import has_trainer_state, last_trainer_state, load_trainer_state, set_rng_state
from dlscaffold.records.paced import PacedRecords, write_every_seconds
from dlscaffold.records.rundir import (
    CONFIG_FILE,
    SPLIT_FILE,
    RunLock,
    check_logging_dir,
    create_run_dir,
    is_run_dir,
    read_run_info,
    remove_stale_temporaries,
    update_run_info,
    write_text_atomic,
)
from dlscaffold.records.trackers import Trackers, open_trackers
from dlscaffold.run.builder import Run, build_run, wrap_for_training
from dlscaffold.run.loop import (
    Echo,
    Monitor,
    Position,
    RunResult,
    Session,
    TrainOptions,
    fit,
    record_end,
    save_state,
    utc_now,
)
from dlscaffold.run.stops import RunInterrupted, StopFlag, stop_time
from dlscaffold.run.summary import resume_command
from dlscaffold.run.trainer import NonFiniteStep, Trainer, build_trainer

__all__ = ["RunResult", "TrainOptions", "built_session", "setup", "train"]


def train(
    config_path: Path | None,
    overrides: list[str] = (),
    *,
    project_dir: Path | None = None,
    resume: Path | None = None,
    options: TrainOptions | None = None,
    echo: Echo = print,
) -> RunResult:
    """Train the models of a config; returns the :class:`RunResult` of a completed run (its folder,
    status, best epoch and value, last validation values).

    The caller's ``options`` are not changed, and the process is left as it was found (log level,
    anomaly detection, ``sys.path``, and no module of the project imported, however the run ends):
    two runs in one process give what two processes give.

    Args:
        config_path: the config file (ignored with ``resume``: the run's own config is used).
        overrides: dotted ``key=value`` overrides.
        project_dir: folder with the project's code, taken as is; default: the config's folder, or
            for ``resume`` the project folder recorded in the run's ``run.json``, when the run lies
            inside it and its code is the code the run last ran
            (:func:`dlscaffold.prepare.project_folder`).
        resume: a run folder to continue from its last checkpoint, in place.
        options: the command's flags (:class:`TrainOptions`).
        echo: where the human-readable lines go.

    Raises:
        UserError: a problem found before training (nothing written), or a failure during it
            (status ``failed`` in ``run.json``, the last checkpoint kept).
        RunInterrupted: a stop signal or the job's end time (:mod:`dlscaffold.run.stops`); the position
            was saved (status ``interrupted``).
    """
    with _process_state_kept():
        return _train(config_path, list(overrides), project_dir, resume, options or TrainOptions(), echo)


def _train(
    config_path: Path | None,
    overrides: list[str],
    project_dir: Path | None,
    resume: Path | None,
    options: TrainOptions,
    echo: Echo,
) -> RunResult:
    world = distributed.world_from_env()
    if not world.main:  # other ranks print nothing but errors
        echo = _silent
        logging.getLogger("dlscaffold").setLevel(logging.ERROR)
    # The stop flag is held from the start, so a scheduler's signal during the set-up (a cluster job's
    # can come at any time) stops the run after its first step (Ctrl-C at a terminal aborts the set-up
    # at once), and through the run's end: a late one never kills it half-closed.
    with StopFlag() as stop:
        stop.setting_up = True
        try:
            session = setup(config_path, overrides, project_dir, resume, options, echo, world)
        except UserError:
            if not world.main:  # every rank found the same problem: rank 0 says it
                raise QuietExit(2) from None
            raise
        stop.setting_up = False
        stop.deadline = stop_time(session.run.config.training_params.stop_before_end)  # SLURM_JOB_END_TIME
        with kept_cpu_memory(session.run.config.training_params.keep_cpu_memory), frozen_setup():
            return _fit(session, stop, echo)


def _fit(session: Session, stop: StopFlag, echo: Echo) -> RunResult:
    """The epoch loop, and how a run that ends early is recorded: interrupted (a signal, the job's
    end time), failed (a non-finite step, an error in the project's code)."""
    world = session.world
    try:
        return fit(session, stop, echo)
    except RunInterrupted as exc:
        exc.run_dir = session.run_dir
        record_end(session, "interrupted")
        if session.saves:
            echo(f"Stopped ({exc}); the run's exact position is saved in {session.run_dir}")
            project = read_run_info(session.run_dir).get("project_dir")
            project = project if isinstance(project, str) and project else None
            echo(f"Resume it with: {resume_command(session.run_dir, session.world.world_size, project)}")
        raise
    except NonFiniteStep as exc:
        error = _nonfinite_error(session, exc)
        record_end(session, "failed", error)
        raise UserError(error) from None
    except UserError as exc:
        record_end(session, "failed", exc.problems[0] if exc.problems else str(exc))
        raise
    except Exception as exc:  # the project's model, loss or dataset failed during training
        if world.distributed and _peer_failed(exc):  # another rank failed first and says why
            record_end(session, "failed", "a data-parallel process failed (its error is printed)")
            raise QuietExit(1) from None
        error = _user_code_error(session, exc)
        record_end(session, "failed", error)
        raise UserError(error) from exc
    finally:
        session.log.close(session.status)
        if session.lock is not None:
            session.lock.release()
        session.trainer.flow.unwrap()  # the process group ends with its last holder
        distributed.shutdown()


@contextlib.contextmanager
def built_session(
    config_path: Path,
    overrides: list[str] = (),
    *,
    project_dir: Path | None = None,
    device: str | None = None,
    echo: Echo | None = None,
) -> Iterator[Session]:
    """A run built exactly as ``train`` builds it (every check, the data, models, trainer and EMA)
    but with no run folder: nothing is written. Step it with :func:`dlscaffold.run.loop.train_steps`.
    For tools that train a few steps without keeping them (``dlscaffold profile``, the generated
    project's determinism test); the process is left as it was found, as :func:`train` leaves it."""
    options = TrainOptions(no_folder=True, device=device)
    with _process_state_kept():
        yield setup(config_path, list(overrides), project_dir, None, options, echo or _silent)


def _silent(line: str) -> None:
    pass


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Run with the process as a fresh one would have it, then put back what the run changed.

    The project's ``models``, ``dataloader`` and ``training_utils`` and what was imported from
    their folder (by an earlier ``load_run``, say) are taken out of ``sys.modules`` first, so the
    run imports its project anew (module-level state never carries over), and put back after it.
    However the run ends, no module it imported from its project folder (or from any folder it put
    on ``sys.path``) stays imported. Also put back: the ``dlscaffold`` log level, anomaly detection
    and ``sys.path``.
    """
    logger = logging.getLogger("dlscaffold")
    level, anomaly, path = logger.level, torch.is_anomaly_enabled(), list(sys.path)
    earlier = {name: sys.modules.pop(name) for name in _project_modules(list(sys.modules))}
    modules = set(sys.modules)
    try:
        yield
    finally:
        logger.setLevel(level)
        torch.autograd.set_detect_anomaly(anomaly)
        added = [entry for entry in sys.path if entry and entry not in path]
        for name in _project_modules([name for name in sys.modules if name not in modules], added):
            del sys.modules[name]
        sys.modules.update(earlier)
        sys.path[:] = path


def _project_modules(names: list[str], folders: list[str] = ()) -> list[str]:
    """Which of ``names`` (imported modules) are a project's code: ``models``, ``dataloader``,
    ``training_utils``, and modules imported from their folder or from ``folders`` (one at the top
    of the folder, or a package there: not a module of a virtual environment inside it, nor
    dlscaffold's own)."""
    roots = [os.path.abspath(os.path.dirname(_file_of(name))) for name in MODULE_NAMES if _file_of(name)]
    roots += [os.path.abspath(folder) for folder in folders]
    found = []
    for name in names:
        top, file = name.partition(".")[0], _file_of(name)
        ours = file and top != "dlscaffold" and any(_top_level(file, root, top) for root in roots)
        if name in MODULE_NAMES or ours:
            found.append(name)
    return found


def _file_of(name: str) -> str:
    return str(getattr(sys.modules.get(name), "__file__", None) or "")


def _top_level(file: str, root: str, top: str) -> bool:
    """Whether ``file`` is the module or package ``top`` at the top of folder ``root``."""
    file = os.path.abspath(file)
    if not file.startswith(root.rstrip(os.sep) + os.sep):
        return False
    first = file[len(root.rstrip(os.sep)) + 1 :].split(os.sep)[0]
    return first == top or first.startswith(top + ".")


def _peer_failed(exc: Exception) -> bool:
    """Whether a collective failed because another process is gone (closed connection, timeout)."""
    exc = exc.cause if isinstance(exc, CodeError) else exc  # inside a model's forward (DDP's hooks)
    text = str(exc).lower()
    return type(exc).__name__ in ("DistError", "DistBackendError", "DistNetworkError") or any(
        words in text for words in ("connection closed", "connection reset", "broken pipe", "timed out")
    )


def _nonfinite_error(session: Session, exc: NonFiniteStep) -> str:
    saved = ""
    if session.writes:
        path = session.run_dir / "nonfinite_batch.pt"
        from dlscaffold.records.checkpoint import save_atomic

        save_atomic({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in exc.batch.items()}, path)
        saved = f"; the batch is saved in {path}"
    return (
        f"epoch {session.epoch}, step {session.trainer.step}: {exc.where} is not finite (NaN or inf); the step "
        f"was not applied{_kept(session, ' and ')}{saved}; lower lrn_rate, set grad_clip_norm, or set "
        "training_params.on_nonfinite: skip"
    )


def _kept(session: Session, joined: str = "; ") -> str:
    """``the last checkpoint is intact``, said only when the run saved one (not with --no-save or --debug)."""
    saves = session.saves and has_trainer_state(session.run_dir)
    return f"{joined}the last checkpoint is intact" if saves else ""


def _user_code_error(session: Session, exc: Exception) -> str:
    where, cause = (exc.where, exc.cause) if isinstance(exc, CodeError) else ("the training loop", exc)
    lines = str(cause).strip().splitlines() or [""]
    if type(exc).__name__ == "DatasetItemError":  # from a DataLoader worker, its traceback: the last line says it
        what = lines[-1].partition("DatasetItemError: ")[2] or lines[-1]
    else:
        what = f"{where} failed: {type(cause).__name__}: {lines[0]}"
    if type(cause).__module__.startswith(("torch._dynamo", "torch._inductor")):
        what += "; torch.compile failed here: set training_params.compile: false"
    return (
        f"epoch {session.epoch}, step {session.trainer.step}: {what}{_kept(session)}; "
        "rerun with --debug for the traceback"
    )


# ------------------------------------------------------------------------------------- setup


def setup(
    config_path: Path | None,
    overrides: list[str],
    project_dir: Path | None,
    resume: Path | None,
    options: TrainOptions,
    echo: Echo,
    world: distributed.World | None = None,
) -> Session:
    """Check everything, build data, models and trainer, then create (or reopen) the run folder."""
    world, options = world or distributed.World(), dataclasses.replace(options)  # the caller's stay as they were
    if resume is not None:
        resume = resume.resolve()
        if not is_run_dir(resume):
            raise UserError(f"--resume: {resume} is not a run folder (no config.yml and idx_dict.json in it)")
        config_path = resume / CONFIG_FILE
    if options.dev or options.debug:
        overrides = [*overrides, "training_params.use_dev=true"]
    prepared = prepare(config_path, overrides, project_dir, run_dir=resume)
    tp = prepared.config.training_params
    if resume is None and world.main and not (options.debug or options.no_folder):  # created once all is built
        check_logging_dir(prepared.config.logging_params.logging_dir)
    distributed.check_sync_batchnorm(world, tp.sync_batchnorm, tp.use_GPU)
    options.device = distributed.init(world, tp.use_GPU, tp.backend) or options.device  # cuda:LOCAL_RANK or cpu
    lock = None
    try:
        # one writer per run folder: taken before anything of the run is read or written
        lock = RunLock(resume).acquire() if resume is not None and world.main else None
        session = _build_session(prepared, overrides, resume, options, echo, world)
    except BaseException:
        if lock is not None:
            lock.release()
        distributed.shutdown()  # a run that fails to start leaves the process group, as a run that ends does
        raise
    session.lock = session.lock or lock
    return session


def _build_session(
    prepared: Prepared,
    overrides: list[str],
    resume: Path | None,
    options: TrainOptions,
    echo: Echo,
    world: distributed.World,
) -> Session:
    tp = prepared.config.training_params
    splits = ("dev", "dev") if tp.use_dev else ("train", "val")
    if resume is not None:
        echo(f"Resuming {resume} with the code of the project in {prepared.project.root}")
        if world.main:
            remove_stale_temporaries(resume)
    state = load_trainer_state(last_trainer_state(resume)) if resume is not None else None
    weights = (resume, state["epoch"]) if state is not None and "models" not in state else None
    run = build_run(prepared, {"train": (splits[0], True), "val": (splits[1], False)}, options.device, weights, world)
    if state is None:  # a fresh run: models with init_from_data set their weights from training points
        init_from_data(run, run.idx_dict[splits[0]], echo)
    wrap_for_training(run, world)
    steps_per_epoch = -(-len(run.loaders["train"]) // tp.accumulate)  # a step: accumulate batches
    trainer = build_trainer(run, len(run.loaders["train"]))
    attach_ema(run, trainer, steps_per_epoch)  # EMA models follow their source's optimizer steps
    _warn_batchnorm(run, tp.accumulate)
    from dlscaffold.run.first_batch import check_batch  # two samples through the built run, before anything is written

    check_batch(run, run.idx_dict[splits[0]])
    torch.autograd.set_detect_anomaly(options.debug)  # global: also switch it off after an earlier --debug run
    monitor = Monitor(*monitored(prepared.config))
    hooks = build_hooks(prepared.config, prepared.project, world.main)
    trainer.keep_outputs = bool(tp.hooks)  # the hooks' ctx.outputs
    position = _restore(run, trainer, monitor, state, overrides, world) if state is not None else Position()
    if state is not None:
        hooks.load_state_dict(state.get("hooks") or {})
    start = state["epoch"] + 1 if state else 1
    session = Session(run, trainer, monitor, Trackers(), None, start, options, position, world=world, hooks=hooks)
    _open_run_folder(session, prepared, resume, state)
    echo(
        "Debug run: dev set, anomaly detection on, nothing is written."
        if session.run_dir is None
        else f"Logging and Model Saving Directory: {session.run_dir}"
    )
    echo(
        f"Training {', '.join(run.flow.trained) or 'nothing'} on {run.placement.device} "
        f"({len(run.idx_dict[splits[0]])} train / {len(run.idx_dict[splits[1]])} val points"
        f"{', dev set' if tp.use_dev else ''}); {world.world_size} process(es) x batch "
        f"{run.loaders['train'].batch_size} = global batch {world.world_size * run.loaders['train'].batch_size}"
    )
    if run.placement.cpu_fallback and resume is None:  # said once per run: not again on --resume
        from dlscaffold.parts.device import CPU_FALLBACK

        logging.getLogger("dlscaffold").warning(CPU_FALLBACK)
    _show_models(run, state, options, echo)
    return session


def _open_run_folder(session: Session, prepared: Prepared, resume: Path | None, state: dict[str, Any] | None) -> None:
    """Rank 0 creates (or reopens) the run folder and tells the others; it alone writes there."""
    if session.options.debug or session.options.no_folder:
        return
    every = write_every_seconds()  # a malformed DLSCAFFOLD_WRITE_EVERY_SECONDS is refused before the folder exists
    world, logging_params = session.world, prepared.config.logging_params
    run_dir = resume or (
        create_run_dir(logging_params.logging_dir, _run_notes(logging_params.run_notes, session.options))
        if world.main
        else None
    )
    session.run_dir = distributed.broadcast(run_dir)
    if world.main:
        session.lock = RunLock(run_dir).acquire() if resume is None else None
        session.records = PacedRecords(run_dir, every)
        if resume is not None:  # the training time of its earlier sessions, before run.json is reopened
            from dlscaffold.records.rundir import read_run_info
            from dlscaffold.records.summaries import run_seconds

            session.seconds_before = run_seconds(read_run_info(run_dir)) or 0.0
        session.log = open_run_log(run_dir, prepared, session.run, state, session.options.run_info, world.world_size)
    if state is None and session.saves:  # epoch 0: the initial weights, and a state to resume from
        save_state(session, 0)


def _warn_batchnorm(run: Run, accumulate: int) -> None:
    """Under gradient accumulation, BatchNorm's statistics are of each batch, not of the step's."""
    if accumulate == 1:
        return
    for name in run.flow.trained:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in run.flow.models[name].modules()):
            logging.getLogger("dlscaffold").warning(
                "warning: info_flow.%s has BatchNorm: with training_params.accumulate: %d its statistics are those "
                "of each batch, not of the step's %d batches (use GroupNorm or LayerNorm for exact equality)",
                name,
                accumulate,
                accumulate,
            )


def _run_notes(notes: str, options: TrainOptions) -> str:
    """The run folder's name part: ``run_notes``, then the experiment's suffix (``seed3``, ``trial2``)."""
    suffix = options.run_notes_suffix
    return f"{notes}_{suffix}" if notes and suffix else notes or suffix


def _show_models(run: Run, state: dict[str, Any] | None, options: TrainOptions, echo: Echo) -> None:
    """The models' table: name, class, parameters, trained or frozen, where the weights came from."""
    from dlscaffold.run.summary import model_summary, summary_lines

    resumed = state["epoch"] if state is not None else None
    if options.progress_bar:  # a terminal
        from rich.console import Console

        Console().print(model_summary(run.flow, run.config, resumed_epoch=resumed))
    else:
        for line in summary_lines(run.flow, run.config, resumed_epoch=resumed):
            echo(line)


def _restore(
    run: Run, trainer: Trainer, monitor: Monitor, state: dict[str, Any], overrides: list[str], world: distributed.World
) -> Position:
    """Put a checkpoint's state back: trainer, monitor, mid-epoch weights and position, RNGs (last).

    Each rank takes its own RNG states. Resumed on more processes than saved the checkpoint (with a
    ``global_batch_size``: :func:`_check_world_size`), a new rank's RNGs are seeded from the seed,
    its rank and the steps done: its own streams, the same on every resume of that checkpoint."""
    from dlscaffold.records.checkpoint import load_state_dict

    ranks = state.get("rng_ranks") or [state["rng"]]  # every process's RNG states, by rank
    _check_world_size(run, state.get("world_size") or len(ranks), world)
    trainer.load_state_dict(state)
    if any(item.partition("=")[0].strip() == "training_params.lrn_rate" for item in overrides):
        trainer.set_learning_rate(run.config.training_params.lrn_rate)  # the resumed run trains on at the new rate
    saved = state.get("monitor") or {}
    monitor.best, monitor.best_epoch, monitor.bad = saved.get("best"), saved.get("best_epoch", 0), saved.get("bad", 0)
    for name, weights in (state.get("models") or {}).items():
        load_state_dict(run.flow.models[name], weights, f"info_flow.{name}")
    if world.rank < len(ranks):  # each rank draws its own dropout: restore its own RNGs
        state = {**state, "rng": ranks[world.rank]}
    else:  # a rank the earlier session did not have: its RNGs seeded from (seed, rank, steps done)
        from dlscaffold.parts.seeding import forked_rng, seed_everything
        from dlscaffold.records.checkpoint import rng_state

        with forked_rng():
            seed_everything((run.config.training_params.seed + 1_000_003 * world.rank + state["step"]) % 2**63)
            state = {**state, "rng": rng_state()}
    if not state.get("position"):
        set_rng_state(state["rng"])  # last: building and checking above drew from the RNGs
        return Position()
    # Mid-epoch: the RNGs are restored only after the epoch's loader iterator exists, because making
    # one draws a seed from torch's RNG, which the interrupted run had done before its first step.
    return Position(**{**state["position"], "rng": state["rng"]})


def _check_world_size(run: Run, before: Any, world: distributed.World) -> None:
    """A resume on another number of processes than the run's last session: fine with a global
    batch (each process takes its part of the same global batches), refused with a per-process one."""
    dl = run.config.dataloading_params
    before = before if isinstance(before, int) and before >= 1 else world.world_size  # unknown: not checked
    if before == world.world_size or dl.global_batch_size is not None:
        return
    raise UserError(
        f"--resume: the run trained on {before} process{'es' if before > 1 else ''} with a per-process batch_size; "
        f"resuming on {world.world_size} would change the global batch; set dataloading_params.global_batch_size "
        "in a new run to resume on any number of processes"
    )


def open_run_log(
    run_dir: Path,
    prepared: Prepared,
    run: Run,
    state: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
    world_size: int = 1,
) -> Trackers:
    """Write the run's config, split and run.json (with ``extra`` keys: an experiment's ``sweep`` or
    ``group``; for a new run, its models' weight lineage, :func:`dlscaffold.records.lineage.record`); open
    ``metrics.jsonl`` (trimmed when resuming) and the config's trackers.

    A new run records its provenance (the project folder, its code hashes, versions, git state and
    ``git.diff``); a resume keeps that record of the first session and appends its own to
    ``sessions`` (:func:`dlscaffold.project.provenance.session_record`: with the first epoch it
    trains and the number of processes), so ``run.json`` says which code trained which epochs. A
    resumed run warns when a weights file its lineage records has changed since
    (:func:`dlscaffold.records.lineage.warn_changed`)."""
    from dlscaffold._version import __version__
    from dlscaffold.project.provenance import SESSIONS, code_hashes, collect, session_record, sessions, write_git_diff
    from dlscaffold.records.lineage import KEY, record, warn_changed
    from dlscaffold.records.rundir import read_run_info

    write_text_atomic(run_dir / CONFIG_FILE, dump_config(prepared.config))
    save_idx_dict(run.idx_dict, run_dir / SPLIT_FILE)
    root, device, argv = prepared.project.root, str(run.placement.device), list(sys.argv)
    now = {"status": "running", "error": None, "ended": None}
    if state is None:  # a new run: its provenance, and where its models' weights came from
        extra = {KEY: record(prepared.config, run.flow.models, run.flow.trained), **(extra or {})}
        update_run_info(
            run_dir,
            project_dir=str(root),
            project_files=code_hashes(root),  # evaluate / resume import this folder only while these match
            dlscaffold_version=__version__,
            started=utc_now(),
            provenance=collect(root, argv, device),
            **now,
            **extra,
        )
        write_git_diff(root, run_dir)
    else:  # the first session's record stays; this session's is appended (a resume keeps the lineage too)
        warn_changed(run_dir)
        info = read_run_info(run_dir)
        first = {"first_epoch": state["epoch"] + 1, "first_step": state["step"], "world_size": world_size}
        entry = session_record(root, run_dir, info, argv, device, started=utc_now(), **first)
        started = info.get("started") or entry["started"]
        update_run_info(run_dir, started=started, **now, **(extra or {}), **{SESSIONS: [*sessions(info), entry]})
    return open_trackers(run_dir, prepared.config, (state["epoch"], state["step"]) if state else None)
