"""``dlscaffold sweep``: a hyperparameter search on Optuna whose trials are ordinary run folders.

A sweep folder, ``<logging_dir>/sweeps/<YYYYMMDD>_<N>_<name>/``, holds everything::

    sweep.yml       the resolved sweep file (its base config is the copy beside it; ``study``: the study's name)
    config.yml      the base config as it was when the sweep started, paths made absolute
    study.journal   Optuna's JournalStorage (``optuna-dashboard study.journal`` opens it)
    sweep.json      status, metric, direction, every trial and the best, rewritten after each trial
    trials/         one lock file per trial, held by the process running it
    <run folders>   the trials' runs (one per seed), as ``dlscaffold train`` makes them

A worker (:func:`work`) repeats: claim a trial that no live process runs (one a stop or a crash
left ``RUNNING``: its interrupted runs resume from their checkpoints exactly), or ask the study for
a new one while fewer than ``trials`` exist; run it; tell the study. Claims happen under an
exclusive lock on the sweep folder, so several workers, also ``--resume`` processes on several
machines sharing the folder, never take the same trial. A trial's value is the best monitor value of
its run, the mean over its seeds; each validation reports the monitor to the pruner (with seeds:
the mean over the seeds, reported while the last seed runs). A trial that fails is told ``FAIL``
with its error line, and the worker goes on.

Nothing of the folder is trusted by its path: the study is found by what the folder holds
(:meth:`Sweep.study_name`) and the trials' runs by their ``run.json``, so a copied or renamed
sweep folder resumes. Before a worker starts, :meth:`Sweep.check` refuses a damaged folder in one
line (what is damaged, what to do) or heals what can be healed without losing anything.

Workers are tasks of :mod:`dlscaffold.experiments.engine` (:class:`SweepWorkerTask`): one in this
process, several in worker processes, or cluster jobs; a data-parallel trial run (``--nproc K``) is
a :class:`TrialTask`, whose K processes torchrun starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import yaml

from dlscaffold.config import not_regular_file
from dlscaffold.errors import CodeError, ConfigError, QuietExit, UserError, first_line
from dlscaffold.experiments.engine import Task, optional_path
from dlscaffold.experiments.sweep_file import (
    SweepSpec,
    _param,
    folder_spec_problem,
    make_pruner,
    make_sampler,
    read_mapping,
    read_sweep,
    trial_overrides,
)
from dlscaffold.records.rundir import CONFIG_FILE, RUN_INFO_FILE, SPLIT_FILE

SWEEP_FILE = "sweep.yml"
JOURNAL = "study.journal"
JOURNAL_LOCK = JOURNAL + ".lock"  # Optuna's lock beside the journal, held while a record is written
STATE_FILE = "sweep.json"
TRIALS_DIR = "trials"  # the trials' lock files
CLAIM_LOCK = ".claim.lock"
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
Echo = Callable[[str], None]
# a trial's own lines worth showing (not "Resume it with: ... train --resume": the sweep is what resumes)
_TRIAL_LINES = ("Logging and Model Saving Directory", "Resuming", "Stopped", "Early stopping", "Pruned")
_TRIAL_FOLDER = re.compile(r"_trial(\d+)(?:_seed\d+)?$")  # a trial run's folder name (run_notes_suffix)
_RECORD_START = b'{"op_code":'  # how every record of an Optuna journal begins
MAX_RECORD_BYTES = 64 * 2**20  # a journal line longer than this is not a record
MAX_STATE_BYTES = 256 * 2**20
STALE_LOCK_S = 30  # a journal lock older than this was left by a process that died while writing
_NEW_SWEEP = "start a new sweep with dlscaffold sweep SWEEP.yml"


# ---------------------------------------------------------------------------------- starting


def check_against_config(spec: SweepSpec, project_dir: Path | None) -> tuple[Any, str, str]:
    """Check the params, overrides, seeds and metric against the base config through ``train``'s
    own checks (every problem at once): with each param's first value, then with its last (the other
    end of its range, its last choice); returns ``(prepared, monitor name, direction)``."""
    from dlscaffold.config.monitor import monitored
    from dlscaffold.prepare import prepare

    base = [*spec.overrides, *_metric_override(spec)]
    base += [f"training_params.seed={max(spec.seeds)}"] if spec.seeds else []
    ends = [{p.key: p.first() for p in spec.params}, {p.key: p.last() for p in spec.params}]
    checked = []
    for values in ends if ends[0] != ends[1] else ends[:1]:
        try:
            checked.append(prepare(spec.config, [*base, *trial_overrides(values)], project_dir))
        except ConfigError as exc:
            raise ConfigError(*(f"{spec.path}: {problem}" for problem in exc.problems)) from None
    prepared = checked[0]
    name, mode = monitored(prepared.config)
    if name is None:  # training_params.monitor: none, from the config or the sweep's metric
        why = "found none" if spec.metric else "not set, and the config's training_params.monitor is none"
        raise ConfigError(
            f"{spec.path}: metric: {why}, so the trials have no value to optimise; set metric to "
            "<Model>/<logging_name> of a loss or eval, or total"
        )
    direction = spec.direction or ("minimize" if mode == "min" else "maximize")
    return prepared, name, direction


def _metric_override(spec: SweepSpec) -> list[str]:
    return [f"training_params.monitor={spec.metric}"] if spec.metric else []


def open_storage(url: str, where: str) -> Any:
    """The RDB storage at ``url``, opened (a sqlite file is made); one line when it cannot be, such as
    an unknown kind of database or a sqlite file in a folder that does not exist."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with _quiet_optuna():
            return optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy's errors: no such dialect or driver, cannot connect, no folder
        raise UserError(
            f"{where}: storage: cannot open '{url}' ({first_line(exc)}); expected the URL of a database this "
            "machine can open, such as sqlite:///study.db (whose folder exists)"
        ) from None


def start(sweep_file: Path, workers: int, project_dir: Path | None, echo: Echo, nproc: int = 1) -> int:
    """Check the sweep file, make the sweep folder and run the sweep; returns the exit code."""
    sweep = create(sweep_file, project_dir, echo, nproc)
    echo(
        f"{sweep.total} trials of {', '.join(sweep.spec['params'])}; {sweep.spec['direction']} {sweep.spec['metric']}"
        f"{f' over seeds {sweep.seeds}' if sweep.spec.get('seeds') else ''}; {workers} worker(s)"
    )
    return run(sweep, workers, echo)


def create(sweep_file: Path, project_dir: Path | None, echo: Echo, nproc: int = 1) -> Sweep:
    """Check the sweep file against its base config (every problem at once) and open its storage,
    then make the sweep folder and its study; its workers (:func:`work`) run the trials."""
    spec = read_sweep(sweep_file)
    prepared, metric, direction = check_against_config(spec, project_dir)
    storage = open_storage(spec.storage, str(spec.path)) if spec.storage else None
    from dlscaffold.config import load_raw
    from dlscaffold.records.rundir import create_run_dir, write_text_atomic

    logging_dir = prepared.config.logging_params.logging_dir
    folder = create_run_dir(Path(logging_dir) / "sweeps", spec.name)
    base = load_raw(spec.config)  # paths made absolute: the copy trains as the original does
    write_text_atomic(folder / CONFIG_FILE, yaml.safe_dump(base, sort_keys=False))
    resolved = {
        **spec.as_dict(CONFIG_FILE),
        "metric": metric,
        "direction": direction,
        "project": str(prepared.project.root),
        "nproc": nproc,  # processes per trial run (data-parallel through torchrun)
        "source": str(spec.path),
        "study": folder.name if storage is None else _free_study_name(storage, folder.name),
    }
    write_text_atomic(folder / SWEEP_FILE, yaml.safe_dump(resolved, sort_keys=False))
    sweep = Sweep.open(folder)
    sweep.study(create=True)
    sweep.write_state("running")
    echo(f"Sweep folder: {folder}")
    return sweep


def _free_study_name(storage: Any, name: str) -> str:
    """``name``, or ``name_2``, ``name_3``, ... where a database shared by several sweeps has it."""
    import optuna

    taken = set(optuna.study.get_all_study_names(storage))
    return next(n for n in itertools.chain([name], (f"{name}_{i}" for i in itertools.count(2))) if n not in taken)


def resume(folder: Path, workers: int, echo: Echo) -> int:
    """Continue a sweep after a stop or a crash (once :meth:`Sweep.check` found its folder sound, or
    healed it); returns the exit code."""
    sweep = Sweep.open(folder)
    sweep.check(echo)
    done = sweep.finished_count()
    echo(f"Resuming the sweep {sweep.folder}: {done} of {sweep.total} trials finished")
    return run(sweep, workers, echo)


def run(sweep: Sweep, workers: int, echo: Echo) -> int:
    """Run ``workers`` workers to the sweep's end (in this process for one); the exit code: a
    worker that failed (its process crashed, not a trial that failed) makes it that worker's."""
    from dlscaffold.experiments import engine
    from dlscaffold.run.stops import EXIT_CODES, RunInterrupted

    failed: list[int] = []
    try:
        ended = engine.run([SweepWorkerTask(folder=sweep.folder) for _ in range(workers)], workers, echo)
        if ended.signum is not None:
            raise RunInterrupted(ended.signum)
        failed = [code for code in ended.codes if code != 0]
        if failed:
            echo(f"{len(failed)} worker(s) ended with exit code {failed[0]}; resume the sweep to finish their trials")
    except RunInterrupted as exc:
        sweep.write_state("interrupted")
        echo(f"Stopped; resume the sweep with: {resume_command(sweep.folder)}")
        return exc.exit_code if exc.signum in EXIT_CODES else 130
    report(sweep, echo)
    return failed[0] if failed else 0


def report(sweep: Sweep, echo: Echo) -> dict[str, Any]:
    """Write sweep.json (its status from the trials) and say how the sweep stands; returns the state."""
    state = sweep.write_state()
    best = state.get("best")
    finished = sum(1 for t in state["trials"] if t["state"] in FINISHED)
    failed = sum(1 for t in state["trials"] if t["state"] == "FAIL")
    echo(
        f"Sweep {state['status']}: {finished} trials"
        + (f" ({failed} failed: their error lines are in {STATE_FILE})" if failed else "")
        + (
            f"; best trial {best['number']}: {best['value']:.6g} with {best['params']}"
            if best
            else "; no trial completed"
        )
    )
    echo(f"Results: {sweep.folder / STATE_FILE}")
    return state


def resume_command(folder: Path) -> str:
    from dlscaffold.run.summary import program

    return f"{program('sweep')} --resume {shlex.quote(str(folder))}"


# -------------------------------------------------------------------------------- the folder


class _NoStudy(UserError):
    """The sweep's storage holds no study at all (its journal is empty or missing)."""


@dataclasses.dataclass
class _Runs:
    """What the sweep folder's run folders say: ``runs`` ``{trial: {seed: run folder}}``, each run's
    recorded ``params``, and the folders named as a trial's run whose run.json is damaged
    (``(folder, trial, why)``)."""

    runs: dict[int, dict[Any, Path]] = dataclasses.field(default_factory=dict)
    params: dict[Path, Any] = dataclasses.field(default_factory=dict)
    damaged: list[tuple[Path, int, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Sweep:
    """An open sweep folder."""

    folder: Path
    spec: dict[str, Any]
    run_info: dict[str, Any] = dataclasses.field(default_factory=dict)  # more run.json keys (a job's "job")
    name: str | None = None  # the study's name, once found

    @classmethod
    def open(cls, folder: Path) -> Sweep:
        """The sweep folder ``folder``, its resolved sweep file read and checked (one line when it is
        missing or damaged)."""
        folder = Path(folder).expanduser().resolve()
        path, show = folder / SWEEP_FILE, "pass the sweep folder `dlscaffold sweep` printed"
        if not folder.is_dir():
            found = (
                "a file, not a sweep folder (dlscaffold sweep FILE starts a sweep)" if folder.exists() else "not found"
            )
            raise UserError(f"{folder}: {found}; {show}")
        held = [name for name in (JOURNAL, STATE_FILE, TRIALS_DIR) if os.path.lexists(folder / name)]
        if not os.path.lexists(path) and held:
            raise UserError(
                f"{path}: missing, though the folder holds {', '.join(held)}: put back the sweep file the sweep "
                f"wrote there (a copy from a backup) to resume it, or {_NEW_SWEEP}"
            )
        if not os.path.lexists(path):
            raise UserError(f"{folder}: not a sweep folder (no {SWEEP_FILE}); {show}")
        fix = f"the sweep folder's resolved sweep file is damaged: put back a sound copy, or {_NEW_SWEEP}"
        spec = read_mapping(path, f"expected the sweep file `dlscaffold sweep` wrote; {fix}")
        if not held and "project" not in spec:  # a project folder, say, with its sweep file
            raise UserError(
                f"{folder}: not a sweep folder (its {SWEEP_FILE} is a sweep file: dlscaffold sweep {path} starts "
                f"a sweep); {show}"
            )
        problem = folder_spec_problem(spec)
        if problem is not None:
            raise UserError(f"{path}: {problem}; {fix}")
        return cls(folder, spec)

    @property
    def total(self) -> int:
        return int(self.spec["trials"])

    @property
    def seeds(self) -> list[int | None]:
        return list(self.spec.get("seeds") or []) or [None]

    def where(self) -> str:
        """Where the study is kept, for messages."""
        return f"the storage {self.spec['storage']}" if self.spec.get("storage") else str(self.folder / JOURNAL)

    def storage(self) -> Any:
        import optuna

        if self.spec.get("storage"):
            return open_storage(self.spec["storage"], str(self.folder / SWEEP_FILE))
        from optuna.storages.journal import JournalFileBackend

        path = self.folder / JOURNAL
        _refuse_not_regular(path)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))

    def study_name(self, storage: Any) -> str | None:
        """The study of this sweep in ``storage``: the one sweep.yml names; for a sweep made before
        sweep.yml named it, the one named after the folder, else the only one. None when the
        storage holds no study at all."""
        import optuna

        if self.name is not None:
            return self.name
        names, recorded = optuna.study.get_all_study_names(storage), self.spec.get("study")
        listed = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        if not names:
            return None
        if recorded and recorded not in names:
            raise UserError(
                f"{self.where()}: holds no study named '{recorded}' (the study {SWEEP_FILE} names), only {listed}: "
                f"put back this sweep's own study, or {_NEW_SWEEP}"
            )
        if not recorded and self.folder.name not in names and len(names) > 1:
            raise UserError(
                f"{self.where()}: holds {len(names)} studies ({listed}), none named after this folder: add "
                f"'study: NAME' to {self.folder / SWEEP_FILE}, naming this sweep's study"
            )
        found = recorded or (self.folder.name if self.folder.name in names else names[0])
        self.name = found
        return found

    def study(self, create: bool = False) -> Any:
        """This sweep's Optuna study (``create``: made, with a grid's combinations enqueued). One line
        when the storage cannot be read, holds no study (:class:`_NoStudy`) or not this one."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = make_sampler(self.spec["sampler"], self.spec.get("sampler_seed"))
        pruner = make_pruner(self.spec["pruner"])
        with self._reading():
            storage = self.storage()
            name = (self.spec.get("study") or self.folder.name) if create else self.study_name(storage)
            if name is None:
                raise _NoStudy(f"{self.where()}: holds no study")
            kwargs = {"study_name": name, "storage": storage, "sampler": sampler, "pruner": pruner}
            if not create:
                return optuna.load_study(**kwargs)
            study = optuna.create_study(direction=self.spec["direction"], **kwargs)
        if self.spec["sampler"] == "grid":
            space = _grid(self.spec)
            for values in itertools.islice(itertools.product(*space.values()), self.total):
                study.enqueue_trial(dict(zip(space, values, strict=True)))
        return study

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Optuna failing to read the study (a damaged journal or database) is one line."""
        try:
            yield
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"{self.where()}: Optuna cannot read this sweep's study ({first_line(exc)}): it is damaged; "
                f"put back a sound copy, or {_NEW_SWEEP}"
            ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The sweep folder's claim lock: who takes which trial, and who writes sweep.json."""
        import fcntl

        path = self.folder / CLAIM_LOCK
        try:
            fh = open(path, "a+")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UserError(_unusable(path, exc, "the sweep's claim lock")) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def trial_lock(self, number: int) -> IO | None:
        """Hold trial ``number``'s lock (the file stays open); None when a live process holds it."""
        import fcntl

        folder = self.folder / TRIALS_DIR
        try:
            folder.mkdir(exist_ok=True)
            fh = open(folder / f"{number}.lock", "a+")  # noqa: SIM115 - held while the trial runs
        except OSError as exc:
            raise UserError(_unusable(folder, exc, "the folder of the trials' locks")) from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
        return fh

    def _held(self, number: int) -> bool:
        """Whether a live process (another worker, another machine's --resume) runs trial ``number``."""
        lock = self.trial_lock(number)
        if lock is None:
            return True
        lock.close()
        return False

    def runs_of(self) -> dict[int, dict[Any, Path]]:
        """``{trial number: {seed: run folder}}`` from the runs' ``run.json``."""
        return self.scan_runs().runs

    def scan_runs(self) -> _Runs:
        """The run folders in the sweep folder, found by their ``run.json`` (wherever the folder is
        now), and those named as a trial's run whose run.json is damaged."""
        from dlscaffold.records.rundir import read_run_info

        found = _Runs()
        for path in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            why: list[str] = []
            record = read_run_info(path, warn=why.append).get("sweep")
            if isinstance(record, dict) and type(record.get("trial")) is int:
                found.runs.setdefault(record["trial"], {})[record.get("seed")] = path
                found.params[path] = record.get("params")
                continue
            named, info = _TRIAL_FOLDER.search(path.name), path / RUN_INFO_FILE
            if named and os.path.lexists(info):
                kind = not_regular_file(info)
                why.append(f"{info}: found {kind}, not a regular file" if kind else f"{info}: it has no sweep record")
                found.damaged.append((path, int(named.group(1)), why[0].split("; ")[0]))
        return found

    def finished_count(self) -> int:
        return sum(1 for t in self.study().get_trials(deepcopy=False) if t.state.name in FINISHED)

    def write_state(self, status: str | None = None) -> dict[str, Any]:
        """Rewrite sweep.json from the study and the run folders (atomically); returns it."""
        from dlscaffold.records.rundir import write_text_atomic

        with self.locked():
            study = self.study()
            runs = self.runs_of()
            trials = [_trial_row(t, runs.get(t.number, {})) for t in study.get_trials(deepcopy=False)]
            complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
            pick = max if self.spec["direction"] == "maximize" else min
            best = pick(complete, key=lambda t: t["value"]) if complete else None
            if status is None:
                finished = sum(1 for t in trials if t["state"] in FINISHED)
                running = any(t["state"] == "RUNNING" and self._held(t["number"]) for t in trials)
                status = "completed" if finished >= self.total else "running" if running else "interrupted"
            state = {
                "status": status,
                "metric": self.spec["metric"],
                "direction": self.spec["direction"],
                "sampler": self.spec["sampler"],
                "total_trials": self.total,
                "trials": trials,
                "best": None if best is None else {k: best[k] for k in ("number", "params", "value", "runs")},
            }
            write_text_atomic(self.folder / STATE_FILE, json.dumps(state, indent=2, allow_nan=False))
            return state

    def check(self, echo: Echo) -> None:
        """Refuse a damaged sweep folder in one line (what is damaged, what to do), or heal what can
        be healed without losing anything, saying so: a journal's last record cut off (a crash while
        it was written; the bytes are kept beside it), a journal lock a dead process left, a study
        never written because the sweep stopped before any trial ran. What sweep.json said is not
        needed: it is written again from the study."""
        _check_entries(self.folder)
        config = "the copy of the base config the sweep started from"
        read_mapping(self.folder / CONFIG_FILE, f"expected {config}: put back a copy of that config to resume")
        journal = None if self.spec.get("storage") else _check_journal(self.folder / JOURNAL, echo)
        with self.locked():
            scan = self.scan_runs()
            try:
                if journal == "missing":  # not made by opening it (Optuna would) before it is known to be lost
                    raise _NoStudy(f"{self.where()} is missing")
                study = self.study()
            except _NoStudy:
                study = self._remake_study(scan, journal, echo)
            _check_runs(self, study, scan)

    def _remake_study(self, scan: _Runs, journal: str | None, echo: Echo) -> Any:
        """Make the study again where the storage holds none and no trial ever ran (the sweep stopped
        between making its folder and its study); else refuse: the trials' records are lost."""
        what = f"{self.where()} is {journal}" if journal in ("missing", "empty") else f"{self.where()} holds no study"
        ran = sum(len(seeds) for seeds in scan.runs.values()) + len(scan.damaged)
        listed = _listed_trials(self.folder / STATE_FILE)
        if ran or listed:
            found = f"{ran} trial run folder(s)" if ran else f"{listed} trial(s) in {STATE_FILE}"
            raise UserError(
                f"{what}, but the sweep ran trials ({found}): the study's records are lost; put back a sound "
                f"copy of it, or {_NEW_SWEEP} (the run folders here stay as they are)"
            )
        study = self.study(create=True)
        echo(f"{what} and no trial has run: the sweep stopped before its study was written; the study is made now")
        return study


def _trial_row(t: Any, runs: dict[Any, Path]) -> dict[str, Any]:
    """A trial as sweep.json lists it."""
    value = t.value if t.state.name == "COMPLETE" else t.user_attrs.get("value")
    row = {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),
        "value": _finite(value),
        "runs": [p.name for _, p in sorted(runs.items(), key=lambda kv: str(kv[0]))],
    }
    if t.state.name == "FAIL" and t.user_attrs.get("error"):
        row["error"] = t.user_attrs["error"]
    return row


def _grid(spec: dict[str, Any]) -> dict[str, list[Any]]:
    space = {}
    for key, raw in spec["params"].items():
        param, _ = _param(key, raw, key)
        space[key] = param.grid()
    return space


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ------------------------------------------------------------------------- a damaged folder


def _unusable(path: Path, exc: OSError, what: str) -> str:
    return (
        f"{path}: cannot use {what} ({exc.strerror or exc}); it must be something this user can write, as the "
        "sweep made it: move what is there out of the sweep folder (the sweep makes it again)"
    )


def _refuse_not_regular(path: Path) -> None:
    """A journal that is not a regular file (a device, a FIFO, a folder, a link to nothing) is never
    opened: reading /dev/zero would never end."""
    kind = not_regular_file(path)
    if kind is None and os.path.lexists(path) and not path.exists():
        kind = "a link to nothing"
    if kind is not None:
        raise UserError(
            f"{path}: found {kind}, not a regular file; the sweep's study journal must be the file the sweep "
            f"wrote: put back a sound copy of it, or {_NEW_SWEEP}"
        )


def _check_entries(folder: Path) -> None:
    """The sweep's own files and folders are of the kind it made: one line naming what is in the way."""
    expected = {
        TRIALS_DIR: (True, "the folder of the trials' locks"),
        STATE_FILE: (False, "the sweep's state file"),
        CLAIM_LOCK: (False, "the sweep's claim lock, a file"),
    }
    for name, (folder_kind, what) in expected.items():
        path = folder / name
        if os.path.lexists(path) and path.is_dir() != folder_kind:
            found = "a folder" if path.is_dir() else not_regular_file(path) or "a file"
            raise UserError(
                f"{path}: found {found}; expected {what}: move it out of the sweep folder (the sweep makes it again)"
            )


def _check_journal(path: Path, echo: Echo) -> str:
    """The journal's state, ``missing``, ``empty`` or ``sound``, once a lock a dead process left is
    removed and a last record cut off is healed; one line for a journal that is damaged elsewhere."""
    _refuse_not_regular(path)
    if not path.exists():
        return "missing"
    _clear_stale_lock(path, echo)
    if _scan_journal(path)[1] is not None:
        _heal_last_record(path, echo)
    return "empty" if path.stat().st_size == 0 else "sound"


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and type(record.get("op_code")) is int


def _scan_journal(path: Path) -> tuple[int, int | None]:
    """``(complete records, offset of a last record without its line end or None)``, reading one
    line at a time (at most ``MAX_RECORD_BYTES`` each); one line for a journal holding what is not
    a record."""
    records = offset = 0
    with open(path, "rb") as fh:
        while line := fh.readline(MAX_RECORD_BYTES):
            if not line.endswith(b"\n"):
                at_end = len(line) < MAX_RECORD_BYTES or not fh.read(1)
                if at_end and (line.startswith(_RECORD_START) or _RECORD_START.startswith(line)):
                    return records, offset
            elif _is_record(line):
                records, offset = records + 1, offset + len(line)
                continue
            if records == 0:
                raise UserError(
                    f"{path}: not an Optuna journal (its first line is no journal record); put back a sound "
                    f"copy of the sweep's study journal, or {_NEW_SWEEP}"
                )
            raise UserError(
                f"{path}: damaged after its {records} record(s): what begins at byte {offset} is no journal "
                f"record; keep the records before it (cut the file to its first {offset} bytes) or put back a "
                "sound copy, then resume"
            )
    return records, None


def _heal_last_record(path: Path, echo: Echo) -> None:
    """A journal whose last record was cut off (a crash while it was written, an incomplete copy):
    under Optuna's lock, the record is completed when only its line end is missing, else its bytes
    are moved to ``study.journal.partial`` (the next record would be written onto them)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        records, cut = _scan_journal(path)  # again under the lock: a record being written is whole now
        if cut is None:
            return
        with open(path, "rb+") as fh:
            fh.seek(cut)
            tail = fh.read()
            if _is_record(tail):
                fh.write(b"\n")
                done = "its last record had no line end; the line end is added"
            else:
                kept = _unused(path.with_name(path.name + ".partial"))
                kept.write_bytes(tail)
                fh.truncate(cut)
                done = f"its last record was cut off; its {len(tail)} bytes are moved to {kept.name}"
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        lock.release()
    echo(f"{path}: {done}; the sweep goes on from its {records} complete record(s)")


def _unused(path: Path) -> Path:
    candidates = itertools.chain([path], (Path(f"{path}.{i}") for i in itertools.count(2)))
    return next(p for p in candidates if not os.path.lexists(p))


def _clear_stale_lock(path: Path, echo: Echo) -> None:
    """Remove Optuna's lock beside the journal when a process that died while writing left it: a
    record is written in milliseconds, so one older than ``STALE_LOCK_S`` is held by no one."""
    lock = path.with_name(JOURNAL_LOCK)
    try:
        age = time.time() - os.lstat(lock).st_mtime
    except OSError:
        return
    if age > STALE_LOCK_S and not lock.is_dir():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        echo(f"{lock}: removed, a lock left {age:.0f} s ago by a process that ended while writing the study")


def _listed_trials(path: Path) -> int:
    """How many trials sweep.json lists (0 when it cannot be read: it is written again from the study)."""
    if not_regular_file(path) is not None or not path.is_file() or path.stat().st_size > MAX_STATE_BYTES:
        return 0
    try:
        trials = json.loads(path.read_bytes()).get("trials")
    except (OSError, ValueError, AttributeError):
        return 0
    return len(trials) if isinstance(trials, list) else 0


def _check_runs(sweep: Sweep, study: Any, scan: _Runs) -> None:
    """Every run folder agrees with the study: its trial is in the study with the params it
    recorded, and a run whose run.json is damaged belongs to a finished trial (none is resumed)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for path, number, why in scan.damaged:
        if number not in trials or trials[number].state.name not in FINISHED:
            raise UserError(
                f"{why}; it is the run of trial {number}, which has not finished: put back a sound run.json "
                f"to resume the run in its folder, or move {path.name} out of the sweep folder to run trial "
                f"{number} again from its start"
            )
    for number, seeds in sorted(scan.runs.items()):
        for path in seeds.values():
            trial, recorded = trials.get(number), scan.params.get(path)
            if trial is not None and dict(trial.params) == recorded:
                continue
            found = "has no such trial" if trial is None else f"has {dict(trial.params)} for it"
            raise UserError(
                f"{path}: its run.json records trial {number} with {recorded}, but {sweep.where()} {found}: the "
                f"study and the run folders disagree (a study that lost records, a run copied in from another "
                f"sweep); put back the sweep's own study, or move {path.name} out of the sweep folder"
            )


@dataclasses.dataclass(kw_only=True)
class SweepWorkerTask(Task):
    """One worker of the sweep in ``folder``: claim and run trials until the sweep has them all."""

    kind: ClassVar[str] = "sweep_worker"
    folder: Path
    run_info: dict[str, Any] = dataclasses.field(default_factory=dict)  # more keys for run.json (a job's "job")

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    def run(self, echo: Echo) -> None:
        work(self.folder, echo, self.run_info)


@dataclasses.dataclass(kw_only=True)
class TrialTask(Task):
    """Seed ``index`` of trial ``number`` of the sweep in ``folder``, trained data-parallel in
    ``nproc`` processes: from ``config`` with ``overrides``, or resuming the run folder ``resume``.
    Each process makes the trial's run options; rank 0 alone reports to the study."""

    kind: ClassVar[str] = "sweep_trial"
    folder: Path
    number: int
    index: int
    config: Path | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    resume: Path | None = None
    nproc: int = 1

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.config, self.resume = optional_path(self.config), optional_path(self.resume)

    def run(self, echo: Echo) -> Any:
        """This process's part of the run (rank 0 writes and reports); its ``RunResult``."""
        from dlscaffold.train import train

        sweep = Sweep.open(self.folder)
        options = trial_options(sweep, self.number, self.index, echo)
        options.progress_bar = sys.stdout.isatty()
        project = Path(sweep.spec["project"])
        return train(self.config, self.overrides, project_dir=project, resume=self.resume, options=options, echo=echo)


@dataclasses.dataclass
class _Claim:
    number: int
    trial_id: int
    lock: IO


def work(folder: Path, echo: Echo = print, run_info: dict[str, Any] | None = None) -> None:
    """One worker: claim and run trials until the sweep has its number of trials; ``run_info``:
    more keys for their runs' run.json (a cluster job's ``job``).

    Raises:
        RunInterrupted: a signal stopped the running trial (its position is saved).
    """
    sweep = Sweep.open(folder)
    sweep.check(echo)
    sweep.run_info = dict(run_info or {})
    while True:
        claim = _claim(sweep)
        if claim is None:
            return
        try:
            _run_trial(sweep, claim, echo)
        finally:
            claim.lock.close()
        sweep.write_state("running")


def _claim(sweep: Sweep) -> _Claim | None:
    """A trial that was left running (no live process holds its lock), or a new one; None when the
    sweep has all its trials."""
    import optuna

    with sweep.locked():
        study = sweep.study()
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == optuna.trial.TrialState.RUNNING:
                lock = sweep.trial_lock(t.number)
                if lock is not None:
                    return _Claim(t.number, t._trial_id, lock)
        if sum(t.state != optuna.trial.TrialState.WAITING for t in trials) >= sweep.total:  # grid: enqueued
            return None
        trial = study.ask()
        for key, raw in sweep.spec["params"].items():
            _suggest(trial, key, raw)
        lock = sweep.trial_lock(trial.number)
        return _Claim(trial.number, trial._trial_id, lock)


def _suggest(trial: Any, key: str, raw: dict[str, Any]) -> Any:
    if "choice" in raw:
        return trial.suggest_categorical(key, raw["choice"])
    kind = "float" if "float" in raw else "int"
    low, high = raw[kind]
    kwargs = {"log": bool(raw.get("log", False))}
    if raw.get("step") is not None:
        kwargs["step"] = raw["step"]
    suggest = trial.suggest_float if kind == "float" else trial.suggest_int
    return suggest(key, low, high, **kwargs)


def _run_trial(sweep: Sweep, claim: _Claim, echo: Echo) -> None:
    """Run (or resume) every seed of a trial, then tell the study its value or state. A trial that
    fails (the project's code, a non-finite step, a config error from its params) is told ``FAIL``
    with its error line, and the worker goes on; an error of this program is told ``FAIL`` too (a
    resume goes on past it), then raised."""
    import optuna

    from dlscaffold.run.stops import Pruned, RunInterrupted

    study = sweep.study()
    trial = optuna.trial.Trial(study, claim.trial_id)
    params = {key: _suggest(trial, key, raw) for key, raw in sweep.spec["params"].items()}  # recorded: the same
    echo(f"Trial {claim.number}: {params}")
    try:
        values = _run_seeds(sweep, claim.number, trial, params, echo)
    except Pruned:
        return _end_trial(study, trial, optuna.trial.TrialState.PRUNED, None, echo)
    except (UserError, QuietExit, CodeError) as exc:
        error = (exc.problems[0] if isinstance(exc, UserError) and exc.problems else str(exc)) or type(exc).__name__
    except RunInterrupted:
        raise  # its position is saved: the trial stays RUNNING, and a resume continues it
    except Exception as exc:
        _end_trial(study, trial, optuna.trial.TrialState.FAIL, first_line(exc), echo)
        raise
    else:
        if all(v is not None for v in values):
            value = sum(values) / len(values)
            study.tell(claim.number, value)
            echo(f"Trial {claim.number}: {sweep.spec['metric']} = {value:.6g}")
            return None
        error = "no finite value of the monitor was recorded"
    return _end_trial(study, trial, optuna.trial.TrialState.FAIL, error, echo)


def _end_trial(study: Any, trial: Any, state: Any, error: str | None, echo: Echo) -> None:
    """Tell the study that ``trial`` was pruned or failed (its error line kept as the user attribute
    ``error``: ``Trial.set_user_attr``, there in every Optuna the project allows)."""
    if error is not None:
        trial.set_user_attr("error", error)
    study.tell(trial.number, state=state)
    echo(f"Trial {trial.number}: {'pruned' if error is None else f'failed: {error}'}")


def _run_seeds(sweep: Sweep, number: int, trial: Any, params: dict[str, Any], echo: Echo) -> list[float | None]:
    """Each seed's run of a trial (resumed where one was stopped; skipped where one completed): the
    best monitor values. Raises :class:`~dlscaffold.run.stops.Pruned` when the pruner ends the trial."""
    from dlscaffold.records.rundir import read_run_info
    from dlscaffold.run.stops import Pruned
    from dlscaffold.train import train

    seeds, runs, project = sweep.seeds, sweep.runs_of().get(number, {}), Path(sweep.spec["project"])

    def quiet(line: str) -> None:  # a trial's own lines: where it runs and how it ended, not its tables
        if line.startswith(_TRIAL_LINES):
            echo(f"Trial {number}: {line}")

    values = []
    for index, seed in enumerate(seeds):
        existing = runs.get(seed)
        info = read_run_info(existing) if existing is not None else {}
        if info.get("status") == "failed":  # it failed before a crash kept the study from hearing so
            raise UserError(str(info.get("error") or f"its run {existing.name} failed"))
        if info.get("status") not in ("completed", "pruned"):
            overrides = _trial_overrides(sweep, params, seed, runs.get(seeds[0]) if index else None)
            config = None if existing is not None else sweep.folder / CONFIG_FILE  # stopped or killed: resumed
            if int(sweep.spec.get("nproc") or 1) > 1:
                info = _run_in_processes(sweep, number, index, config, overrides, existing, echo)
            else:
                options = trial_options(sweep, number, index, echo, trial=trial, runs=runs)
                options.run_info.update(sweep.run_info)
                result = train(config, [] if existing else overrides, project_dir=project, resume=existing,
                               options=options, echo=quiet)  # fmt: skip
                info = read_run_info(result.run_dir)
            runs[seed] = sweep.runs_of().get(number, {}).get(seed)
        if info.get("status") == "pruned":
            raise Pruned()
        values.append(_best_value(info))
    return values


def trial_options(
    sweep: Sweep | Path, number: int, index: int, echo: Echo, trial: Any = None, runs: dict | None = None
) -> Any:
    """The :class:`~dlscaffold.train.TrainOptions` of seed ``index`` of trial ``number``: its
    run.json keys, its folder name and its pruning reporter (used on rank 0 only). Each process of a
    data-parallel trial makes them (:class:`TrialTask`)."""
    import optuna

    from dlscaffold.train import TrainOptions

    sweep = sweep if isinstance(sweep, Sweep) else Sweep.open(sweep)
    if trial is None:
        study = sweep.study()
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        trial = optuna.trial.Trial(study, frozen._trial_id)
    runs = runs if runs is not None else sweep.runs_of().get(number, {})
    seeds, params = sweep.seeds, {key: _suggest(trial, key, raw) for key, raw in sweep.spec["params"].items()}
    seed, group = seeds[index], f"{sweep.folder.name}-trial{number}"
    return TrainOptions(
        on_validation=_reporter(trial, seeds, index, runs, sweep.spec["metric"], echo, number),
        run_info={"sweep": {"dir": str(sweep.folder), "trial": number, "params": params, "seed": seed}}
        | ({"group": {"id": group, "seed": seed, "size": len(seeds)}} if seed is not None else {}),
        run_notes_suffix=f"trial{number}" + (f"_seed{seed}" if seed is not None else ""),
    )


def _run_in_processes(
    sweep: Sweep, number: int, index: int, config: Path | None, overrides: list[str], run: Path | None, echo: Echo
) -> dict[str, Any]:
    """A data-parallel trial run (:class:`TrialTask`): a worker process that starts the run's
    processes through torchrun, whose rank 0 reports to the study; returns its run.json. A signal
    to this worker is passed on; the run then saves its position."""
    from dlscaffold.experiments import engine
    from dlscaffold.records.rundir import read_run_info
    from dlscaffold.run.stops import EXIT_CODES, RunInterrupted

    task = TrialTask(
        folder=sweep.folder,
        number=number,
        index=index,
        config=config,
        overrides=[] if run else overrides,
        resume=run,
        nproc=int(sweep.spec["nproc"]),
    )
    ended = engine.in_processes([task], 1, echo, share=False)  # this worker's share of the machine
    code = ended.codes[0] if ended.codes else 130
    if ended.signum is not None or code in EXIT_CODES.values():
        raise RunInterrupted(ended.signum or next(s for s, c in EXIT_CODES.items() if c == code))
    found = sweep.runs_of().get(number, {}).get(sweep.seeds[index])
    info = read_run_info(found) if found is not None else {}
    if code != 0 or info.get("status") not in ("completed", "pruned"):
        raise UserError(info.get("error") or f"the data-parallel run of trial {number} ended with exit code {code}")
    return info


def _trial_overrides(sweep: Sweep, params: dict[str, Any], seed: int | None, first_run: Path | None) -> list[str]:
    """The sweep's fixed overrides, the monitor, the trial's params, its seed; later seeds of a
    trial use the first seed's split."""
    spec = sweep.spec
    overrides = [*spec.get("overrides", []), f"training_params.monitor={spec['metric']}"]
    overrides += trial_overrides(params)
    overrides.append(f"logging_params.logging_dir={sweep.folder}")
    if seed is not None:
        overrides.append(f"training_params.seed={seed}")
    if first_run is not None:
        overrides.append(f"dataloading_params.idx_dict_path={first_run / SPLIT_FILE}")
    return overrides


def _best_value(info: dict[str, Any]) -> float | None:
    best = info.get("best")
    return _finite(best.get("value")) if isinstance(best, dict) else None


def _reporter(
    trial: Any, seeds: list[Any], index: int, runs: dict[Any, Path], metric: str, echo: Echo, number: int
) -> Callable[[int, float], None]:
    """What a trial's run calls after each validation: report the monitor (with seeds: the mean over
    them, from the last seed's run) and raise :class:`~dlscaffold.run.stops.Pruned` where the pruner says so."""
    from dlscaffold.run.stops import Pruned

    def report(epoch: int, value: float) -> None:
        seed = f", seed {seeds[index]}" if seeds[index] is not None else ""
        echo(f"Trial {number}{seed}, epoch {epoch}: {metric} = {value:.6g}")
        if index != len(seeds) - 1:
            return
        earlier = [_val_at(runs.get(seed), epoch, metric) for seed in seeds[:index]]
        reported = [v for v in [*earlier, value] if v is not None and math.isfinite(v)]
        if not reported:
            return
        with _quiet_optuna():
            trial.report(sum(reported) / len(reported), epoch)
        if trial.should_prune():
            raise Pruned()

    return report


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """A resumed run reports epochs again that its trial already has: optuna warns and keeps the first."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _val_at(run_dir: Path | None, epoch: int, metric: str) -> float | None:
    from dlscaffold.records.rundir import read_metrics

    if run_dir is None:
        return None
    for row in read_metrics(run_dir, warn=lambda _: None):
        if row.get("split") == "val" and row.get("epoch") == epoch and isinstance(row.get(metric), (int, float)):
            return float(row[metric])
    return None
