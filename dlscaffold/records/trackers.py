"""Where a run's numbers go: ``metrics.jsonl`` always, then the trackers the config names.

Every tracker takes the same five calls (:class:`Tracker`): per-step scalars, per-epoch rows,
hyper-parameters with the final metrics, images, and ``close`` with the run's status. The loop
writes to one :class:`Trackers`, which hands each call to all of them: ``metrics.jsonl`` (the run's
own record, read by ``dlscaffold runs``, ``load_run`` and the tests), then TensorBoard, MLflow and
Weights & Biases as ``logging_params.trackers`` asks. A tracker that fails during a run (a server
down, a database locked) is switched off with one warning and the run goes on; ``metrics.jsonl``
failing is the run's failure. A ``--debug`` run gets an empty :class:`Trackers` and writes nothing.

A new tracker is a class here with the five methods and its entry in :data:`OPENERS`, and its
name in the config schema's :data:`TRACKERS` (what the config check accepts; a test holds the two equal).

The names: ``metrics.jsonl`` rows hold ``<Model>/<logging_name>`` keys with their ``split``;
TensorBoard, MLflow and W&B get the same keys under ``<split>/`` (``val/Classifier/accuracy``), and
the per-step scalars under ``train_step/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from dlscaffold.config import TRACKERS, flatten
from dlscaffold.config.schema import WandbParams
from dlscaffold.errors import first_line
from dlscaffold.records.rundir import METRICS_FILE, read_metrics, read_run_info, update_run_info, write_text_atomic

__all__ = ["TRACKERS", "MLflow", "MetricsFile", "TensorBoard", "Tracker", "Trackers", "WandB", "open_trackers"]

_logger = logging.getLogger("dlscaffold")
FLUSH_SECONDS = 2.0  # TensorBoard: the longest a scalar waits in memory before it is written
# TensorBoard: the events its writer's thread may hold. A flush hands it every waiting scalar at
# once; with its default of 10, each further one would wait for the thread, one by one.
WRITER_QUEUE = 100_000


class Tracker(Protocol):
    """What the loop writes to. ``resume``-aware trackers are opened by :func:`open_trackers`."""

    def step_scalars(self, step: int, values: dict[str, float]) -> None: ...

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None: ...

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None: ...

    def images(self, step: int, grids: dict[str, Any]) -> None: ...

    def close(self, status: str | None) -> None: ...


class MetricsFile:
    """``metrics.jsonl``: one strict-JSON row per epoch and split (a NaN or inf value is ``null``).

    Args:
        run_dir: the run folder.
        resume: the ``(epoch, step)`` of the checkpoint a resumed run starts from: rows after it
            (written before the interruption, past the checkpoint) are dropped; a validation inside
            the next epoch (``val_every: {steps: N}``) at or before the checkpoint's step is kept.
    """

    def __init__(self, run_dir: Path, resume: tuple[int, int] | None = None):
        self.path = run_dir / METRICS_FILE
        self.file: Any = None  # opened at the first row, kept open (each row is flushed), closed at the end
        if resume is not None:
            epoch, step = resume
            kept = [r for r in read_metrics(run_dir) if r["epoch"] <= epoch or _at_or_before(r, step)]
            write_text_atomic(self.path, "".join(_row_json(r) for r in kept))

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        pass  # per-step values go to the trackers only

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        if self.file is None:
            self.file = open(self.path, "a")  # closed by close()
        self.file.write(_row_json({"epoch": epoch, "split": split, "step": step, **values}))
        self.file.flush()  # readers (dlscaffold runs, a sweep) see every row at once

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def images(self, step: int, grids: dict[str, Any]) -> None:
        pass

    def close(self, status: str | None) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class TensorBoard:
    """TensorBoard event files in the run folder: scalars tagged ``<split>/<Model>/<name>``, the
    HPARAMS tab, images. A resumed run purges the events after the checkpoint's step.

    Scalars wait in memory (with the time they were logged) and go to the event file together, then
    flushed, at most every :data:`FLUSH_SECONDS`, before images and hyper-parameters, and at the
    end. Handed to TensorBoard's writer one at a time, each would wake its background thread, which
    then competes with the training loop for Python's interpreter lock between steps. Together, the
    thread does its work (about 12 µs a scalar on a CPU, most of it a checksum in Python) while the
    loop waits, once."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow, so only here

        self.writer = SummaryWriter(str(run_dir), purge_step=resume_step, max_queue=WRITER_QUEUE)
        self.waiting: list[tuple[str, float, int, float]] = []  # (tag, value, step, wall time)
        self.written = -math.inf  # time.monotonic() of the last write

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        self._keep("train_step", step, values)

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        self._keep(split, step, values)

    def _keep(self, prefix: str, step: int, values: dict[str, float]) -> None:
        now = time.time()
        self.waiting += [(f"{prefix}/{name}", value, step, now) for name, value in values.items()]
        if time.monotonic() - self.written >= FLUSH_SECONDS:
            self._add_waiting()
            self.writer.flush()
            self.written = time.monotonic()

    def _add_waiting(self) -> None:
        """The waiting scalars to the writer (written at its next flush)."""
        for tag, value, step, wall_time in self.waiting:
            self.writer.add_scalar(tag, value, step, walltime=wall_time)
        self.waiting = []

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        self._add_waiting()
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        for summary in hparams(clean, metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def images(self, step: int, grids: dict[str, Any]) -> None:
        """``{tag: grid}``, each grid a ``(C, H, W)`` tensor of floats in [0, 1], ``C`` 1 or 3."""
        self._add_waiting()
        for tag, grid in grids.items():
            self.writer.add_image(tag, grid, step, dataformats="CHW")
        self.writer.flush()

    def close(self, status: str | None) -> None:
        self._add_waiting()
        self.writer.close()


_MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class MLflow:
    """One MLflow run per dlscaffold run, in the experiment ``dlscaffold``: the flattened config as
    params, epoch rows as ``<split>/<name>`` metrics at step = epoch, per-step scalars as
    ``train_step/<name>`` at the global step; tags ``dlscaffold.status`` and ``dlscaffold.run_dir``.
    A resumed run continues the same MLflow run (its id is kept in ``run.json``)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], uri: str):
        from mlflow.tracking import MlflowClient  # an optional extra: imported only when named

        self.client = MlflowClient(tracking_uri=uri)
        known = read_run_info(run_dir).get("mlflow") or {}
        if known.get("run_id") and known.get("tracking_uri") == uri:
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = self.client.get_experiment_by_name("dlscaffold")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("dlscaffold")
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            update_run_info(run_dir, mlflow={"run_id": self.run_id, "tracking_uri": uri})
            self._log_params(flatten(config))
        self.client.set_tag(self.run_id, "dlscaffold.run_dir", str(run_dir))
        self.client.set_tag(self.run_id, "dlscaffold.status", "running")

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key[:250], str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, step) for name, value in values.items() if math.isfinite(value)]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        self._log_metrics({f"train_step/{name}": value for name, value in values.items()}, step)

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        self._log_metrics({f"{split}/{name}": value for name, value in values.items()}, epoch)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass  # the whole config is the run's params already

    def images(self, step: int, grids: dict[str, Any]) -> None:
        pass

    def close(self, status: str | None) -> None:
        status = status or "interrupted"
        self.client.set_tag(self.run_id, "dlscaffold.status", status)
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(status, "FAILED"))


WANDB_RUN_ID = "wandb_run_id"  # the W&B run's id in run.json


class WandB:
    """One Weights & Biases run per dlscaffold run, its files in ``<run>/wandb/``: the flattened config
    as its config, per-step scalars as ``train_step/<name>`` and epoch rows as ``<split>/<name>`` with
    ``epoch`` at the trainer's step, images as ``wandb.Image``; ``close`` ends it with exit code 0
    for a completed run, 1 otherwise. Its id is kept in ``run.json`` (``wandb_run_id``), so a resumed
    run continues the same W&B run; values at steps that W&B already holds (the resumed session redoes
    the steps after the checkpoint, with the same values) are left out, as W&B refuses them.

    W&B prints nothing and captures no console output. An offline run (the default) collects no
    system metrics or machine metadata and turns off W&B's error reporting: it touches no network.
    The W&B service process this run starts is stopped when it closes, and the process's exit and
    exception hooks, which W&B replaces, are put back."""

    def __init__(self, run_dir: Path, config: dict[str, Any], settings: WandbParams):
        import wandb  # an optional extra: imported only when named

        known = read_run_info(run_dir).get(WANDB_RUN_ID)
        self._hooks = (sys.exit, sys.excepthook)
        self._owns_service = "WANDB_SERVICE" not in os.environ  # no W&B service in this process yet
        offline = settings.mode == "offline"
        try:
            with _environment({"WANDB_ERROR_REPORTING": "false"} if offline and self._owns_service else {}):
                self.run = wandb.init(
                    project=settings.project,
                    entity=settings.entity,
                    mode=settings.mode,
                    tags=settings.tags or None,
                    dir=run_dir,
                    name=run_dir.name,
                    id=known,
                    resume="allow" if known else None,
                    config=None if known else flatten(config),
                    reinit="create_new",
                    settings=wandb.Settings(
                        silent=True,
                        console="off",
                        x_disable_stats=offline,
                        x_disable_meta=offline,
                        x_disable_machine_info=offline,
                    ),
                )
        except BaseException:
            self._release()
            raise
        if known:  # the config this session runs with (a resume may change some keys)
            self.run.config.update(flatten(config), allow_val_change=True)
        elif settings.mode != "disabled":
            update_run_info(run_dir, **{WANDB_RUN_ID: self.run.id})
        self._first_step = self.run.step if known and settings.mode == "online" else 0  # steps W&B holds

    def _log(self, values: dict[str, Any], step: int) -> None:
        if step >= self._first_step:
            self.run.log(values, step=step)

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        self._log({f"train_step/{name}": value for name, value in values.items()}, step)

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        self._log({**{f"{split}/{name}": value for name, value in values.items()}, "epoch": epoch}, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass  # the whole config is the run's config already, the last values its summary

    def images(self, step: int, grids: dict[str, Any]) -> None:
        """``{tag: grid}``, each grid a ``(C, H, W)`` tensor of floats in [0, 1], ``C`` 1 or 3."""
        import wandb

        self._log({tag: wandb.Image(_height_width_channels(grid)) for tag, grid in grids.items()}, step)

    def close(self, status: str | None) -> None:
        try:
            self.run.finish(exit_code=0 if status == "completed" else 1)
        finally:
            self._release()

    def _release(self) -> None:
        """Stop the W&B service this tracker started, and put back the hooks W&B replaced."""
        if self._owns_service and "WANDB_SERVICE" in os.environ:
            import wandb

            wandb.teardown()
        if self._owns_service:
            sys.exit, sys.excepthook = self._hooks


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the ``with`` block (a variable already set is kept)."""
    added = {key: value for key, value in values.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _height_width_channels(grid: Any) -> Any:
    """A ``(C, H, W)`` image tensor as the ``(H, W, C)`` (``(H, W)`` for one channel) array W&B takes."""
    image = grid.detach().cpu().permute(1, 2, 0).numpy()
    return image[:, :, 0] if image.shape[2] == 1 else image


class Trackers:
    """All of a run's trackers, written to at once. A tracker other than ``metrics.jsonl`` that
    raises is switched off with one warning; the run goes on."""

    def __init__(self, trackers: list[tuple[str, Tracker]] = ()):
        self.trackers = list(trackers)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.trackers):
            if isinstance(tracker, MetricsFile):  # the run's own record: its failure is the run's
                getattr(tracker, method)(*args)
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:
                self.trackers.remove((name, tracker))
                _logger.warning(
                    "warning: the %s tracker failed (%s) and is switched off; the run, metrics.jsonl "
                    "and checkpoints go on",
                    name,
                    first_line(exc),
                )
                if method != "close":  # let it release what it holds (a W&B service, a file); it failed already
                    with contextlib.suppress(Exception):
                        tracker.close("failed")

    def step_scalars(self, step: int, values: dict[str, float]) -> None:
        self._each("step_scalars", step, values)

    def epoch_row(self, epoch: int, split: str, step: int, values: dict[str, float]) -> None:
        self._each("epoch_row", epoch, split, step, values)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self._each("hparams", params, metrics)

    def images(self, step: int, grids: dict[str, Any]) -> None:
        if grids:
            self._each("images", step, grids)

    def close(self, status: str | None = None) -> None:
        self._each("close", status)
        self.trackers = []


def open_trackers(run_dir: Path, config: Any, resume: tuple[int, int] | None = None) -> Trackers:
    """``metrics.jsonl`` and the trackers ``config.logging_params.trackers`` names, for a run folder;
    ``resume``: the ``(epoch, step)`` of the checkpoint a resumed run starts from."""
    opened: list[tuple[str, Tracker]] = [(METRICS_FILE, MetricsFile(run_dir, resume))]
    for name in config.logging_params.trackers:
        try:
            opened.append((name, _open(name, run_dir, config, resume)))
        except Exception as exc:  # a server that cannot be reached: the run goes on without it
            _logger.warning(
                "warning: the %s tracker could not start (%s); the run goes on without it", name, first_line(exc)
            )
    return Trackers(opened)


def _open_tensorboard(run_dir: Path, config: Any, resume: tuple[int, int] | None) -> Tracker:
    return TensorBoard(run_dir, resume[1] + 1 if resume else None)  # events at the checkpoint's step stay


def _at_or_before(row: dict[str, Any], step: int) -> bool:
    return isinstance(row.get("step"), int) and not isinstance(row.get("step"), bool) and row["step"] <= step


def _open_mlflow(run_dir: Path, config: Any, resume: tuple[int, int] | None) -> Tracker:
    lp = config.logging_params
    return MLflow(run_dir, config.to_dict(), lp.mlflow_uri or default_mlflow_uri(lp.logging_dir))


def _open_wandb(run_dir: Path, config: Any, resume: tuple[int, int] | None) -> Tracker:
    return WandB(run_dir, config.to_dict(), config.logging_params.wandb or WandbParams())


# How each tracker that ``logging_params.trackers`` may name is opened: one entry per name of
# :data:`TRACKERS` (the config's check), which a test holds equal to these keys.
OPENERS: dict[str, Callable[[Path, Any, tuple[int, int] | None], Tracker]] = {
    "tensorboard": _open_tensorboard,
    "mlflow": _open_mlflow,
    "wandb": _open_wandb,
}


def _open(name: str, run_dir: Path, config: Any, resume: tuple[int, int] | None) -> Tracker:
    return OPENERS[name](run_dir, config, resume)


def default_mlflow_uri(logging_dir: Path) -> str:
    """``sqlite:///<logging_dir>/mlflow.db``: ``mlflow ui --backend-store-uri <this>`` shows it."""
    return f"sqlite:///{Path(logging_dir).resolve() / 'mlflow.db'}"


def _row_json(row: dict[str, Any]) -> str:
    """One ``metrics.jsonl`` line: strict JSON, a NaN or inf value written as ``null``."""
    return json.dumps({k: _finite(v) for k, v in row.items()}, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
