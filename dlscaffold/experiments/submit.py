"""``dlscaffold submit``: a run, a seed group or a sweep's workers as cluster jobs, through submitit.

Everything a user can get wrong is said before anything is submitted, one line each: the flags,
submitit missing, no ``sbatch`` for ``--cluster slurm``, and every config problem ``train`` would
report (:func:`dlscaffold.prepare.prepare`; a sweep file's through :func:`dlscaffold.experiments.sweep.create`).
Then submitit writes the batch script (SLURM) or starts a local controller (``--cluster local``,
this machine), each job's logs in ``<logging_dir>/jobs/<job_id>/``. What runs inside a job is
:mod:`dlscaffold.experiments.jobs`: one task of :mod:`dlscaffold.experiments.engine` each.
``--seeds`` submits one array task per seed, a seed group whose split is made here, once
(:mod:`dlscaffold.experiments.groups`); ``--sweep`` makes the sweep folder here and submits
``--workers`` array tasks, each a worker.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold.errors import UserError, did_you_mean

Echo = Callable[[str], None]
CLUSTERS = ("slurm", "local")
SIGNALS = ("USR2", "USR1", "HUP", "TERM")  # what the scheduler sends before the time limit
INSTALL = "pip install 'dlscaffold[cluster]'"
MAX_SIGNAL_DELAY_S = 90  # how long before the limit the signal comes, at most (a fifth of a short limit)
_FOLDER_LINE = re.compile(r"Logging and Model Saving Directory: (.+)$", re.MULTILINE)


@dataclass
class Request:
    """The ``submit`` command's arguments."""

    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    project: Path | None = None
    seeds: str | None = None
    sweep: Path | None = None
    workers: int = 1
    cluster: str = "slurm"
    partition: str | None = None
    time: float = 60.0  # minutes
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    max_requeues: int = 3
    signal: str = "USR2"
    wait: bool = False
    slurm: list[str] = field(default_factory=list)  # KEY=VALUE for sbatch (through submitit)

    @classmethod
    def from_args(cls, args: list[str], **options: Any) -> Request:
        """The request of ``submit [CONFIG] [KEY=VALUE ...]``: the first argument is the config unless
        it is an override; ``options`` are the other fields by name. A config that is a FIFO or a
        device is refused at once, before torch is imported."""
        from dlscaffold.config import check_config_path

        items = list(args)
        config = Path(items.pop(0)) if items and "=" not in items[0] else None
        if config is not None:
            check_config_path(config)
        return cls(config, items, **options)


def submit(request: Request, echo: Echo) -> int:
    """Check everything, submit the jobs, say how to follow them; with ``wait``, wait for them.

    Returns:
        The exit code: 0, or with ``wait`` the first job's that did not complete.

    Raises:
        UserError: anything wrong with the flags, the environment or the config; nothing was submitted.
    """
    request.signal = request.signal.upper().removeprefix("SIG")
    check_flags(request)
    slurm = _slurm_parameters(request.slurm)
    _check_environment(request.cluster)
    jobs, labels, logging_dir = _jobs(request, echo)
    executor = _executor(request, logging_dir / "jobs" / "%j", slurm)
    submitted = _submitted(executor, jobs, request.signal)
    _announce(request, submitted, labels, logging_dir, echo)
    return wait(submitted, echo) if request.wait else 0


def check_flags(request: Request) -> None:
    """Every problem with the flags at once, before anything is imported or submitted.

    Raises:
        UserError: one line per problem.
    """
    problems = []
    if request.cluster not in CLUSTERS:
        problems.append(
            f"--cluster: unknown cluster '{request.cluster}'; {did_you_mean(request.cluster, CLUSTERS)}"
            f"expected {' or '.join(CLUSTERS)}"
        )
    if request.signal not in SIGNALS:
        problems.append(f"--signal: unknown signal '{request.signal}'; expected one of {', '.join(SIGNALS)}")
    for flag, value, unit in (("--time", request.time, "minutes"), ("--mem-gb", request.mem_gb, "GB")):
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"{flag}: found {value:g}; expected a number of {unit} > 0")
    for flag, value, low in (
        ("--nodes", request.nodes, 1),
        ("--gpus-per-node", request.gpus_per_node, 0),
        ("--cpus-per-task", request.cpus_per_task, 1),
        ("--max-requeues", request.max_requeues, 0),
        ("--workers", request.workers, 1),
    ):
        if value is not None and value < low:
            problems.append(f"{flag}: found {value}; expected a whole number >= {low}")
    problems += _what_problems(request)
    if request.seeds is not None:
        from dlscaffold.experiments.groups import parse_seeds

        try:
            parse_seeds(request.seeds)
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(*problems)


def _what_problems(request: Request) -> list[str]:
    """What to submit: a config (with --seeds) or a sweep file (with --workers), and what fits it."""
    if request.sweep is not None:
        if request.config is not None or request.overrides:
            return ["--sweep: the sweep file names the config and its overrides; leave out CONFIG and overrides"]
        if request.seeds is not None:
            return ["--seeds goes in the sweep file (seeds: [1, 2, 3]) with --sweep"]
        if request.nodes > 1 or request.gpus_per_node > 1:
            return ["--sweep: each worker is one process on one GPU at most; use --workers N for more of them"]
    elif request.config is None:
        return ["submit: expected a config file, e.g. dlscaffold submit config.yml, or --sweep SWEEP.yml"]
    elif request.workers != 1:
        return ["--workers: the number of sweep workers, with --sweep; --seeds submits one job per seed"]
    if request.cluster == "local" and request.nodes > 1:
        return ["--nodes: --cluster local runs on this one machine; use --nodes 1, or --cluster slurm"]
    return []


def _slurm_parameters(items: list[str]) -> dict[str, Any]:
    """``--slurm KEY=VALUE`` as submitit parameters (values read as YAML: numbers, booleans)."""
    import yaml

    parameters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm '{item}': expected KEY=VALUE, e.g. --slurm qos=high or --slurm account=lab")
        try:
            parameters[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            parameters[key.strip()] = value
    return parameters


def _check_environment(cluster: str) -> None:
    """submitit importable; for SLURM, its commands on PATH."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError(f"submit needs submitit, which is not installed: {INSTALL}") from None
    if cluster == "slurm":
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if missing:
            raise UserError(
                f"--cluster slurm: {' and '.join(missing)} not found on PATH (no SLURM here); "
                "--cluster local runs the job on this machine"
            )


# ---------------------------------------------------------------------------------- the jobs


def _jobs(request: Request, echo: Echo) -> tuple[list[Any], list[str], Path]:
    """The jobs to submit, a label for each, and the logging folder; the config is checked first.
    Each job runs one task of :mod:`dlscaffold.experiments.engine`, as ``train`` and ``sweep`` run
    them in one process or in worker processes."""
    from dlscaffold.experiments.engine import TrainTask
    from dlscaffold.experiments.jobs import SweepWorkerJob, TrainJob
    from dlscaffold.experiments.sweep import SweepWorkerTask

    project = request.project.resolve() if request.project is not None else None
    if request.sweep is not None:
        from dlscaffold.experiments import sweep

        folder = sweep.create(request.sweep, project, echo).folder
        jobs = [SweepWorkerJob(SweepWorkerTask(folder=folder)) for _ in range(request.workers)]
        return jobs, [f"sweep worker {i + 1}" for i in range(request.workers)], folder.parent.parent
    config = request.config.resolve()
    if request.seeds is None:
        from dlscaffold.prepare import prepare
        from dlscaffold.records.rundir import check_logging_dir

        logging_dir = prepare(config, request.overrides, project).config.logging_params.logging_dir
        check_logging_dir(logging_dir)
        task = TrainTask(config=config, overrides=request.overrides, project=project)
        return [TrainJob(task, logging_dir)], [config.name], logging_dir
    from dlscaffold.experiments import groups

    # a seed group: one job per seed, every run on the group's split, made here once
    group = groups.plan(config, request.overrides, groups.parse_seeds(request.seeds), project_dir=project, echo=echo)
    jobs = [TrainJob(task, group.logging_dir) for task in group.tasks]
    return jobs, [task.label for task in group.tasks], group.logging_dir


# ------------------------------------------------------------------------------ submitting


def signal_delay(seconds: float) -> int:
    """How many seconds before the time limit the scheduler signals: 90, or a fifth of a short limit
    (at least 2), leaving the run time to save its position and end."""
    return int(max(2, min(MAX_SIGNAL_DELAY_S, seconds / 5)))


def _executor(request: Request, folder: Path, slurm: dict[str, Any]) -> Any:
    """submitit's executor for the cluster, with the job's resources, time limit and signal."""
    import submitit

    tasks = max(1, request.gpus_per_node)  # one process per GPU
    delay = int(slurm.pop("signal_delay_s", signal_delay(request.time * 60)))
    if request.cluster == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=request.max_requeues)
        executor.update_parameters(
            timeout_min=request.time, gpus_per_node=request.gpus_per_node, tasks_per_node=tasks, signal_delay_s=delay
        )
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=request.max_requeues)
    known = submitit.SlurmExecutor._valid_parameters()
    parameters = {
        "job_name": "dlscaffold",
        "time": math.ceil(request.time),  # SLURM counts whole minutes
        "nodes": request.nodes,
        "ntasks_per_node": tasks,
        "gpus_per_node": request.gpus_per_node or None,
        "cpus_per_task": request.cpus_per_task,
        "mem": _memory(request.mem_gb),
        "partition": request.partition,
        "signal_delay_s": delay,
        "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={request.signal}"],  # the signal submitit's handler takes
        **{key: value for key, value in slurm.items() if key in known},
    }
    extra = {key: value for key, value in slurm.items() if key not in known}  # plain sbatch options
    parameters["additional_parameters"] = {"signal": f"{request.signal}@{delay}", **extra}
    try:
        executor.update_parameters(**{key: value for key, value in parameters.items() if value is not None})
    except (ValueError, TypeError) as exc:
        raise UserError(f"--slurm: {str(exc).strip().splitlines()[0]}") from None
    return executor


def _memory(mem_gb: float | None) -> str | None:
    if mem_gb is None:
        return None
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{math.ceil(mem_gb * 1024)}MB"


def _submitted(executor: Any, jobs: list[Any], signal_name: str) -> list[Any]:
    """Submit the jobs (one array where there are several); a submission the scheduler refuses
    (an unknown partition, a limit) is one line with its reason."""
    import io

    from submitit.core.utils import FailedJobError, FailedSubmissionError

    local = executor.__class__.__name__ == "LocalExecutor"
    try:
        with _job_environment(signal_name), contextlib.redirect_stderr(io.StringIO()):
            with _streams_detached() if local else contextlib.nullcontext():
                return executor.submit_array(jobs)
    except (FailedJobError, FailedSubmissionError) as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"the scheduler refused the job(s): {reason}") from None


@contextlib.contextmanager
def _streams_detached() -> Iterator[None]:
    """Standard input, output and error on the null device while local jobs start: their controller
    processes (which write nothing there) then hold no pipe of this command's, so a caller reading
    its output is not kept waiting for the jobs to end."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        yield
    finally:
        for fd, copy in zip((0, 1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


@contextlib.contextmanager
def _job_environment(signal_name: str) -> Iterator[None]:
    """The environment the jobs inherit: without this process's own SLURM and process-group
    variables (a job submitted from inside a job is a job of its own), and with the chosen signal
    for submitit (``SUBMITIT_PREEMPT_SIGNAL``)."""
    from submitit.helpers import clean_env

    with clean_env():
        os.environ["SUBMITIT_PREEMPT_SIGNAL"] = signal_name
        try:
            yield
        finally:
            os.environ.pop("SUBMITIT_PREEMPT_SIGNAL", None)


# ------------------------------------------------------------------------------ following


def _announce(request: Request, submitted: list[Any], labels: list[str], logging_dir: Path, echo: Echo) -> None:
    """The job ids, their logs, and how to follow them."""
    limit = f"{request.time:g} min, {request.signal} {signal_delay(request.time * 60)} s before the limit"
    echo(f"Submitted {len(submitted)} job(s) to {request.cluster} ({limit}, up to {request.max_requeues} requeues):")
    for job, label in zip(submitted, labels, strict=True):
        echo(f"  job {job.job_id} ({label}): log {job.paths.stdout}")
    echo(f"Each job prints its run folder in its log (Logging and Model Saving Directory); runs: {logging_dir}")
    echo(f"Follow: tail -f {submitted[0].paths.stdout}   or   dlscaffold runs {logging_dir}")
    if request.cluster == "local":
        ignored = [flag for flag, value in _slurm_only(request) if value]
        if ignored:
            echo(f"Note: {', '.join(ignored)} apply to SLURM jobs only; --cluster local leaves them out.")
        if not request.wait:
            echo("The jobs run on this machine, on after this command returns.")


def _slurm_only(request: Request) -> list[tuple[str, Any]]:
    return [
        ("--partition", request.partition),
        ("--cpus-per-task", request.cpus_per_task),
        ("--mem-gb", request.mem_gb),
        ("--slurm", request.slurm),
    ]


def wait(submitted: list[Any], echo: Echo) -> int:
    """Wait for the jobs, printing each run folder once it is known, then how each ended (and the
    sweep's result); returns the exit code: 0 when every job's work completed, else the first
    other job's."""
    seen: set[str] = set()
    while True:
        for job in submitted:
            _new_folders(job, seen, echo)
        if all(job.done() for job in submitted):
            break
        time.sleep(1)
    outcomes = [_report(job, echo) for job in submitted]
    for folder in dict.fromkeys(outcome["sweep"] for outcome in outcomes if outcome.get("sweep")):
        from dlscaffold.experiments import sweep

        sweep.report(sweep.Sweep.open(Path(folder)), echo)  # once every worker has ended
    return next((outcome["exit_code"] for outcome in outcomes if outcome["exit_code"]), 0)


def _new_folders(job: Any, seen: set[str], echo: Echo) -> None:
    try:
        text = job.task(0).paths.stdout.read_text(errors="replace")
    except OSError:
        return
    for folder in _FOLDER_LINE.findall(text):
        if folder not in seen:
            seen.add(folder)
            echo(f"Job {job.job_id}: run folder {folder}")


def _report(job: Any, echo: Echo) -> dict[str, Any]:
    """How a finished job ended, in one line; its outcome (:meth:`dlscaffold.experiments.jobs._Job.__call__`)."""
    try:
        outcome = job.task(0).result()
    except Exception as exc:  # submitit's UncompletedJobError: no result (killed, or never started)
        lines = [line for line in str(exc).splitlines() if line.strip()]
        echo(f"Job {job.job_id}: ended without a result ({lines[1] if len(lines) > 1 else lines[0]}); see its log")
        return {"exit_code": 1}
    where = outcome.get("run_dir") or outcome.get("sweep") or ""
    requeues = outcome.get("requeues", 0)
    echo(
        f"Job {job.job_id}: {outcome['status']}"
        + (f" after {requeues} requeue(s)" if requeues else "")
        + (f": {where}" if where else "")
        + (f" ({outcome['error']})" if outcome.get("error") else "")
    )
    return outcome
