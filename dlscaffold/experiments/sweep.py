"""``dlscaffold sweep``: a hyperparameter search on Optuna whose trials are ordinary run folders.

A sweep folder, ``<logging_dir>/sweeps/<YYYYMMDD>_<N>_<name>/``, holds everything::

    sweep.yml       the resolved sweep file (its base config is the copy beside it)
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
the mean over the seeds, reported while the last seed runs).

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
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import yaml

from dlscaffold.errors import ConfigError, UserError, first_line
from dlscaffold.experiments.engine import Task, optional_path
from dlscaffold.experiments.sweep_file import SweepSpec, make_pruner, make_sampler, read_sweep, trial_overrides
from dlscaffold.records.rundir import CONFIG_FILE, SPLIT_FILE

SWEEP_FILE = "sweep.yml"
JOURNAL = "study.journal"
STATE_FILE = "sweep.json"
Echo = Callable[[str], None]
# a trial's own lines worth showing (not "Resume it with: ... train --resume": the sweep is what resumes)
_TRIAL_LINES = ("Logging and Model Saving Directory", "Resuming", "Stopped", "Early stopping", "Pruned")


# ---------------------------------------------------------------------------------- starting


def check_against_config(spec: SweepSpec, project_dir: Path | None) -> tuple[Any, str, str]:
    """Check the params, overrides and metric against the base config through ``train``'s own
    checks (every problem at once); returns ``(prepared, monitor name, direction)``."""
    from dlscaffold.config.monitor import monitored
    from dlscaffold.prepare import prepare

    overrides = [*spec.overrides, *_metric_override(spec), *trial_overrides({p.key: p.first() for p in spec.params})]
    try:
        prepared = prepare(spec.config, overrides, project_dir)
    except ConfigError as exc:
        raise ConfigError(*(f"{spec.path}: {problem}" for problem in exc.problems)) from None
    name, mode = monitored(prepared.config)
    direction = spec.direction or ("minimize" if mode == "min" else "maximize")
    return prepared, name, direction


def _metric_override(spec: SweepSpec) -> list[str]:
    return [f"training_params.monitor={spec.metric}"] if spec.metric else []


def start(sweep_file: Path, workers: int, project_dir: Path | None, echo: Echo, nproc: int = 1) -> int:
    """Check the sweep file, make the sweep folder and run the sweep; returns the exit code."""
    sweep = create(sweep_file, project_dir, echo, nproc)
    echo(
        f"{sweep.total} trials of {', '.join(sweep.spec['params'])}; {sweep.spec['direction']} {sweep.spec['metric']}"
        f"{f' over seeds {sweep.seeds}' if sweep.spec.get('seeds') else ''}; {workers} worker(s)"
    )
    return run(sweep, workers, echo)


def create(sweep_file: Path, project_dir: Path | None, echo: Echo, nproc: int = 1) -> Sweep:
    """Check the sweep file against its base config (every problem at once), then make the sweep
    folder and its study; its workers (:func:`work`) run the trials."""
    spec = read_sweep(sweep_file)
    prepared, metric, direction = check_against_config(spec, project_dir)
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
    }
    write_text_atomic(folder / SWEEP_FILE, yaml.safe_dump(resolved, sort_keys=False))
    sweep = Sweep.open(folder)
    sweep.study(create=True)
    sweep.write_state("running")
    echo(f"Sweep folder: {folder}")
    return sweep


def resume(folder: Path, workers: int, echo: Echo) -> int:
    """Continue a sweep after a stop or a crash; returns the exit code."""
    sweep = Sweep.open(folder)
    done = sweep.finished_count()
    echo(f"Resuming the sweep {sweep.folder}: {done} of {sweep.total} trials finished")
    return run(sweep, workers, echo)


def run(sweep: Sweep, workers: int, echo: Echo) -> int:
    """Run ``workers`` workers to the sweep's end (in this process for one); the exit code."""
    from dlscaffold.experiments import engine
    from dlscaffold.run.stops import EXIT_CODES, RunInterrupted

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
    return 0


def report(sweep: Sweep, echo: Echo) -> dict[str, Any]:
    """Write sweep.json (its status from the trials) and say how the sweep stands; returns the state."""
    state = sweep.write_state()
    best = state.get("best")
    echo(
        f"Sweep {state['status']}: {sweep.finished_count()} trials"
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


@dataclasses.dataclass
class Sweep:
    """An open sweep folder."""

    folder: Path
    spec: dict[str, Any]
    run_info: dict[str, Any] = dataclasses.field(default_factory=dict)  # more run.json keys (a job's "job")

    @classmethod
    def open(cls, folder: Path) -> Sweep:
        folder = Path(folder).expanduser().resolve()
        path = folder / SWEEP_FILE
        if not path.is_file():
            raise UserError(
                f"{folder}: not a sweep folder (no {SWEEP_FILE}); pass the folder `dlscaffold sweep` printed"
            )
        try:
            spec = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: cannot read it ({first_line(exc, with_type=False)})") from None
        return cls(folder, spec)

    @property
    def total(self) -> int:
        return int(self.spec["trials"])

    @property
    def seeds(self) -> list[int | None]:
        return list(self.spec.get("seeds") or []) or [None]

    def storage(self) -> Any:
        import optuna

        if self.spec.get("storage"):
            return optuna.storages.RDBStorage(self.spec["storage"])
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(self.folder / JOURNAL)))

    def study(self, create: bool = False) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = make_sampler(self.spec["sampler"], self.spec.get("sampler_seed"))
        pruner = make_pruner(self.spec["pruner"])
        kwargs = {"study_name": self.folder.name, "storage": self.storage(), "sampler": sampler, "pruner": pruner}
        if not create:
            return optuna.load_study(**kwargs)
        study = optuna.create_study(direction=self.spec["direction"], **kwargs)
        if self.spec["sampler"] == "grid":
            space = _grid(self.spec)
            for values in itertools.islice(itertools.product(*space.values()), self.total):
                study.enqueue_trial(dict(zip(space, values, strict=True)))
        return study

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The sweep folder's claim lock: who takes which trial, and who writes sweep.json."""
        import fcntl

        with open(self.folder / ".claim.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def trial_lock(self, number: int) -> IO | None:
        """Hold trial ``number``'s lock (the file stays open); None when a live process holds it."""
        import fcntl

        folder = self.folder / "trials"
        folder.mkdir(exist_ok=True)
        fh = open(folder / f"{number}.lock", "a+")  # noqa: SIM115 - held while the trial runs
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
        from dlscaffold.records.rundir import read_run_info

        found: dict[int, dict[Any, Path]] = {}
        for path in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            info = read_run_info(path).get("sweep")
            if isinstance(info, dict) and isinstance(info.get("trial"), int):
                found.setdefault(info["trial"], {})[info.get("seed")] = path
        return found

    def finished_count(self) -> int:
        state = _read_json(self.folder / STATE_FILE)
        return sum(1 for t in state.get("trials", []) if t.get("state") in ("COMPLETE", "PRUNED", "FAIL"))

    def write_state(self, status: str | None = None) -> dict[str, Any]:
        """Rewrite sweep.json from the study and the run folders (atomically); returns it."""
        from dlscaffold.records.rundir import write_text_atomic

        with self.locked():
            study = self.study()
            runs = self.runs_of()
            trials = []
            for t in study.get_trials(deepcopy=False):
                value = t.value if t.state.name == "COMPLETE" else t.user_attrs.get("value")
                row = {
                    "number": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "value": _finite(value),
                    "runs": [p.name for _, p in sorted(runs.get(t.number, {}).items(), key=lambda kv: str(kv[0]))],
                }
                if t.user_attrs.get("error"):
                    row["error"] = t.user_attrs["error"]
                trials.append(row)
            complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
            pick = max if self.spec["direction"] == "maximize" else min
            best = pick(complete, key=lambda t: t["value"]) if complete else None
            if status is None:
                finished = sum(1 for t in trials if t["state"] in ("COMPLETE", "PRUNED", "FAIL"))
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


def _grid(spec: dict[str, Any]) -> dict[str, list[Any]]:
    from dlscaffold.experiments.sweep_file import _param

    space = {}
    for key, raw in spec["params"].items():
        param, _ = _param(key, raw, key)
        space[key] = param.grid()
    return space


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -------------------------------------------------------------------------------- the worker


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
    """Run (or resume) every seed of a trial, then tell the study its value or state."""
    import optuna

    from dlscaffold.errors import QuietExit
    from dlscaffold.run.stops import Pruned

    study = sweep.study()
    trial = optuna.trial.Trial(study, claim.trial_id)
    params = {key: _suggest(trial, key, raw) for key, raw in sweep.spec["params"].items()}  # recorded: the same
    echo(f"Trial {claim.number}: {params}")
    state, error = optuna.trial.TrialState.FAIL, None
    try:
        values = _run_seeds(sweep, claim.number, trial, params, echo)
    except Pruned:
        state = optuna.trial.TrialState.PRUNED
    except (UserError, QuietExit) as exc:
        error = (exc.problems[0] if isinstance(exc, UserError) and exc.problems else str(exc)) or type(exc).__name__
    else:
        if all(v is not None for v in values):
            value = sum(values) / len(values)
            study.tell(claim.number, value)
            echo(f"Trial {claim.number}: {sweep.spec['metric']} = {value:.6g}")
            return
        error = "no finite value of the monitor was recorded"
    if error is not None:
        study.set_trial_user_attr(claim.trial_id, "error", error)
    study.tell(claim.number, state=state)
    echo(f"Trial {claim.number}: {'pruned' if error is None else f'failed: {error}'}")


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
