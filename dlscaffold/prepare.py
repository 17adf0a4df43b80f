"""The pre-run phase: every check a config and its project get before anything is built or written.

:func:`prepare` reads the config (paths resolved once, in :func:`~dlscaffold.config.load_raw`),
imports the project, reads earlier runs' configs once, and checks the one against the other:
schema, model / loss / eval names, ``init_args`` and ``forward`` signatures, tensor sources, loss
arity, optimizer and scheduler settings, duplicate logging names, ``model_dir`` / ``epoch`` and
the splits the command will use. It raises one :class:`~dlscaffold.errors.ConfigError` holding
every problem, one line each. :func:`check_batch` is the last check, once models exist: two
samples through every model, loss and eval, before the run folder is created.

Nothing here writes a file.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold.config import DATASET, TRAINER, TRAINER_TENSORS, Config, load_raw, read_yaml, validate_raw
from dlscaffold.errors import ConfigError, UserError, available, did_you_mean
from dlscaffold.project import MODULE_NAMES, Project, load_project
from dlscaffold.registry import Registry, build_registries
from dlscaffold.rundir import read_run_info


@dataclass
class Prepared:
    """A checked config with its project: everything the run builder needs."""

    config: Config  # validated; paths absolute; loaded models' init_args filled in from their runs
    project: Project
    losses: Registry
    evals: Registry
    config_path: Path
    saved_split: dict[str, Any] | None = None  # the idx_dict of the run folder or idx_dict_path
    run_dir: Path | None = None  # resume / evaluate: the run folder


@dataclass
class _EarlierRuns:
    """Configs of earlier runs named by ``model_dir``, each read once."""

    configs: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def init_args(self, model_dir: Path, name: str) -> dict[str, Any]:
        """``init_args`` of ``name`` in the config saved with that run (empty if none)."""
        if model_dir not in self.configs:
            self.configs[model_dir] = {}
            for folder in (model_dir, model_dir.parent):  # the run, or its checkpoints folder
                try:
                    self.configs[model_dir] = read_yaml(folder / "config.yml")
                    break
                except UserError:
                    continue
        entry = (self.configs[model_dir].get("info_flow") or {}).get(name) or {}
        return dict(entry.get("init_args") or {}) if isinstance(entry, dict) else {}


def prepare(config_path: Path, overrides: list[str] = (), project_dir: Path | None = None, *,
            run_dir: Path | None = None, splits: tuple[str, ...] | None = None) -> Prepared:
    """Check a config against its project; raise one :class:`ConfigError` listing every problem.

    Args:
        config_path: the YAML file.
        overrides: dotted ``key=value`` overrides.
        project_dir: folder with ``models.py`` etc.; default: the config file's folder, or for a
            run folder's config the project recorded at training time (see :func:`project_folder`).
        run_dir: the run folder a command continues or evaluates; its saved split is used.
        splits: the splits the command reads; each must be non-empty. None: the command trains
            (``train`` and ``val``, or ``dev`` with ``training_params.use_dev``), which also checks
            that there is something to optimise and the ``monitor``; with ``run_dir``, it resumes,
            and overrides may only change what is safe to change mid-run.
    """
    config_path = Path(config_path)
    folder = project_folder(config_path, project_dir, run_dir)
    check_conflict_blocks([config_path, *(folder / f"{name}.py" for name in MODULE_NAMES)])
    raw = load_raw(config_path, overrides)
    project = load_project(folder)
    losses, evals = build_registries(project.losses, project.evals)
    config, problems = validate_raw(raw)
    earlier = _EarlierRuns()
    problems += _check_paths(raw)
    problems += _check_info_flow(raw, project, losses, evals, earlier)
    saved_split, split_problems = _load_split(raw, run_dir)
    problems += split_problems
    if config is not None:
        problems += _check_optim(config.training_params)
        problems += _check_logging_names(config)
        from dlscaffold.images import parse_image_specs  # imports torch

        problems += parse_image_specs(config.logging_params.log_images, list(config.info_flow))
        used = splits or (("dev",) if config.training_params.use_dev else ("train", "val"))
        problems += _check_splits(config, saved_split, used)
        if splits is None:  # training
            problems += _check_training(config)
            problems += _check_resume_overrides(config_path, raw, overrides, config) if run_dir is not None else []
    if problems:
        raise ConfigError(*problems)
    for name, spec in config.info_flow.items():  # a loaded model's init_args default to its run's
        if spec.model_dir is not None:
            spec.init_args = {**earlier.init_args(spec.model_dir, name), **spec.init_args}
    return Prepared(config, project, losses, evals, config_path, saved_split, run_dir)


def project_folder(config_path: Path, project_dir: Path | None, run_dir: Path | None) -> Path:
    """The folder whose code a command imports, never a run folder itself.

    ``--project`` when given; for a run folder (evaluate, resume) the project it recorded at
    training time, when that is an absolute path that still holds ``models.py``; otherwise the
    config file's folder.
    """
    if project_dir is not None:
        return Path(project_dir)
    if run_dir is None:
        return Path(config_path).resolve().parent
    value = read_run_info(run_dir).get("project_dir")
    recorded = Path(value) if isinstance(value, str) and value else None
    # the run folder itself, or a folder inside it, is never a project (a run folder is data)
    inside = recorded is not None and run_dir.resolve() in (recorded.resolve(), *recorded.resolve().parents)
    if recorded is not None and recorded.is_absolute() and (recorded / "models.py").is_file() and not inside:
        return recorded
    if recorded is None:
        found = "it records no project folder"
    elif not recorded.is_absolute():
        found = f"it records the relative project path '{recorded}', which is not followed"
    elif inside:
        found = f"it records its own folder '{recorded}' as the project"
    else:
        found = f"the project folder it records, '{recorded}', holds no models.py"
    raise UserError(f"{run_dir}: {found}; code is never imported from a run folder: "
                    "pass the project folder with --project DIR")


_CONFLICT = re.compile(r"^(<{7}|>{7})( |$)")


def check_conflict_blocks(paths: list[Path]) -> None:
    """Refuse files that still hold ``<<<<<<<`` / ``>>>>>>>`` blocks from a template update."""
    problems = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue  # a missing file is reported where it is read
        line = next((i for i, text in enumerate(lines, 1) if _CONFLICT.match(text)), None)
        if line is not None:
            problems.append(f"{path}:{line}: holds a merge conflict block (<<<<<<< ... >>>>>>>) left by "
                            "`dlscaffold update`; keep the lines you want, delete the markers, then commit")
    if problems:
        raise UserError(*problems)


# ------------------------------------------------------------------------------ signatures


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: accept anything
        return None


def kwargs_problem(fn: Callable[..., Any], kwargs: dict, what: str, skip_first: bool = False) -> str | None:
    """Unexpected and missing keyword arguments of ``fn``, in one line (None if they fit)."""
    sig = _signature(fn)
    if sig is None:
        return None
    params = list(sig.parameters.values())[1 if skip_first else 0 :]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
    names = [p.name for p in named]
    unexpected = [] if takes_any else [k for k in kwargs if k not in names]
    missing = [p.name for p in named if p.default is p.empty and p.name not in kwargs]
    parts = [f"unexpected '{k}' ({did_you_mean(k, names).strip() or 'not an argument'})" for k in unexpected]
    parts += [f"missing required '{m}'" for m in missing]
    return f"{'; '.join(parts)}; {what} takes ({', '.join(names)})" if parts else None


def _arity_problem(fn: Callable[..., Any], count: int, what: str) -> str | None:
    """Whether ``fn`` accepts ``count`` positional arguments (None if it does)."""
    sig = _signature(fn)
    if sig is None:
        return None
    try:
        sig.bind(*range(count))
    except TypeError:
        params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        low = sum(p.default is p.empty for p in params)
        expected = str(low) if low == len(params) else f"{low} to {len(params)}"
        return f"found {count} input(s); expected {expected}: {what}({', '.join(p.name for p in params)})"
    return None


# -------------------------------------------------------------------------------- info_flow


def _check_sources(path: str, inputs: Any, allowed: list[str], later: list[str]) -> list[str]:
    problems = []
    if not isinstance(inputs, dict):
        return problems  # the structural check reports it
    choices = ", ".join([DATASET, *allowed])
    for tensor, source in inputs.items():
        if source == TRAINER and tensor not in TRAINER_TENSORS:
            problems.append(f"{path}.{tensor}: the trainer gives only {' and '.join(TRAINER_TENSORS)}; "
                            f"expected one of them, e.g. {{epoch: {TRAINER}}}")
        if source in (DATASET, TRAINER) or source in allowed:
            continue
        if source in later:
            problems.append(f"{path}.{tensor}: source '{source}' is built after this model; "
                            f"expected '{DATASET}' or a model listed earlier: {choices}")
        else:
            problems.append(f"{path}.{tensor}: unknown source '{source}'; "
                            f"{did_you_mean(source, [DATASET, TRAINER, *allowed])}"
                            f"expected '{DATASET}' or a model in info_flow: {choices} "
                            f"(or '{TRAINER}' for the epoch and step)")
    return problems


def _check_terms(path: str, terms: Any, registry: Registry, models: list[str]) -> list[str]:
    problems = []
    if not isinstance(terms, dict):
        return problems
    for key, spec in terms.items():
        spec = spec if isinstance(spec, dict) else {}
        name = spec.get("function") or key
        where = f"{path}.{key}"
        if isinstance(name, str) and name.startswith(_TORCHMETRICS) and registry.kind == "eval":
            problems += _check_torchmetric(where, name, spec, models)
            continue
        if name not in registry:
            hint = ("; torchmetrics metrics are epoch-level evals: list it under evals"
                    if isinstance(name, str) and name.startswith(_TORCHMETRICS) else "")
            problems.append(f"{where}: {registry.unknown(name)}{hint}")
            continue
        if spec.get("init_args"):
            problems.append(f"{where}.init_args: only a torchmetrics.<Class> eval takes init_args; "
                            f"'{name}' is a function: remove them")
        inputs = spec.get("inputs")
        problems += _check_sources(f"{where}.inputs", inputs, models, [])
        if isinstance(inputs, dict) and inputs:
            problem = _arity_problem(registry.get(name), len(inputs), name)
            if problem:
                problems.append(f"{where}.inputs: {problem}")
    return problems


_TORCHMETRICS = "torchmetrics."  # dlscaffold.flow.TORCHMETRICS, without importing torch here


def _check_torchmetric(where: str, name: str, spec: dict, models: list[str]) -> list[str]:
    """A ``torchmetrics.<Class>`` eval: a Metric class torchmetrics exports, ``init_args`` its
    constructor accepts (built once on the CPU) and as many inputs as its ``update`` takes."""
    from dlscaffold.flow import build_metric  # imports torch and torchmetrics: only when one is used

    inputs = spec.get("inputs")
    problems = _check_sources(f"{where}.inputs", inputs, models, [])
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        return problems  # the schema reports it
    try:
        metric = build_metric(name, init_args, where)
    except UserError as exc:
        return [*(f"{where}: {p}" if p.startswith("unknown") else p for p in exc.problems), *problems]
    if isinstance(inputs, dict) and inputs:
        problem = _arity_problem(metric.update, len(inputs), f"{name}.update")
        if problem:
            problems.append(f"{where}.inputs: {problem}")
    return problems


def _check_model_dir(path: str, name: str, spec: dict) -> list[str]:
    from dlscaffold.checkpoint import saved_epochs, weights_path  # imports torch

    model_dir, epoch = Path(spec["model_dir"]), spec.get("epoch", 0)
    if not model_dir.is_dir():
        return [f"{path}.model_dir: found '{model_dir}', which does not exist; expected an earlier run's folder"]
    if isinstance(epoch, int) and not weights_path(model_dir, name, epoch).is_file():
        saved = ", ".join(map(str, saved_epochs(model_dir, name))) or "none"
        return [f"{path}.epoch: found {epoch}; {model_dir} holds {name} weights for epochs: {saved}"]
    return []


def _check_model(name: str, spec: dict, project: Project, earlier: _EarlierRuns) -> list[str]:
    path = f"info_flow.{name}"
    cls = project.model_classes.get(name)
    if cls is None:
        choices = project.model_classes
        return [f"{path}: unknown model '{name}'; {did_you_mean(name, choices)}{available(choices)} "
                "(from get_ref_model_dict() in models.py)"]
    problems = []
    init_args = spec.get("init_args") or {}
    if isinstance(spec.get("model_dir"), str):
        problems += _check_model_dir(path, name, spec)
        if isinstance(init_args, dict) and Path(spec["model_dir"]).is_dir():
            init_args = {**earlier.init_args(Path(spec["model_dir"]), name), **init_args}
    if isinstance(init_args, dict):
        problem = kwargs_problem(cls, init_args, f"{name}()")
        problems += [f"{path}.init_args: {problem}"] if problem else []
    inputs = spec.get("inputs")
    forward = getattr(cls, "forward", None)
    if isinstance(inputs, dict) and forward is not None:
        problem = kwargs_problem(forward, dict.fromkeys(inputs), f"{name}.forward()", skip_first=True)
        problems += [f"{path}.inputs: {problem}"] if problem else []
    return problems


def _check_info_flow(raw: dict[str, Any], project: Project, losses: Registry, evals: Registry,
                     earlier: _EarlierRuns) -> list[str]:
    """Model names, ``init_args``, ``forward`` arguments, tensor sources, loss/eval names and arity."""
    flow = raw.get("info_flow")
    if not isinstance(flow, dict):
        return []
    names = list(flow)
    problems = []
    for i, (name, spec) in enumerate(flow.items()):
        if not isinstance(spec, dict):
            continue
        problems += _check_model(name, spec, project, earlier)
        problems += _check_sources(f"info_flow.{name}.inputs", spec.get("inputs"), names[:i], names[i:])
        problems += _check_terms(f"info_flow.{name}.losses", spec.get("losses"), losses, names)
        problems += _check_terms(f"info_flow.{name}.evals", spec.get("evals"), evals, names)
    return problems


def _check_logging_names(config: Config) -> list[str]:
    """Two losses (or two evals) logged under one ``<Model>/<logging_name>`` would overwrite each other."""
    names = {kind: [f"{m}/{t.logging_name or key}" for m, spec in config.info_flow.items()
                    for key, t in getattr(spec, kind).items()] for kind in ("losses", "evals")}
    problems = []
    for kind, listed in names.items():
        duplicates = sorted({n for n in listed if listed.count(n) > 1})
        if duplicates:
            problems.append(f"info_flow: {kind} logged twice as {', '.join(duplicates)}; "
                            "give each a distinct logging_name")
    both = sorted(set(names["losses"]) & set(names["evals"]))
    if both:
        problems.append(f"info_flow: a loss and an eval are both logged as {', '.join(both)}; "
                        "give each a distinct logging_name")
    return problems


# ------------------------------------------------------------------------- optimizer, scheduler


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_optimizer(tp: Any) -> tuple[Any | None, list[str]]:
    """The optimizer built on a dummy parameter (None when it cannot be), and its problems."""
    import torch

    from dlscaffold import optim

    spec, where = tp.optimizer, "training_params.optimizer"
    if spec is not None:
        if spec.name in optim.UNSUPPORTED_OPTIMIZERS:
            return None, [f"{where}.name: found '{spec.name}', which the training loop cannot step (it needs a "
                          f"closure, sparse gradients or is a base class); {available(optim.optimizer_names())}"]
        if spec.name not in optim.optimizer_names():
            names = optim.optimizer_names()
            return None, [f"{where}.name: unknown optimizer '{spec.name}'; "
                          f"{did_you_mean(spec.name, names)}{available(names)}"]
        problem = kwargs_problem(getattr(torch.optim, spec.name), spec.kwargs, spec.name, skip_first=True)
        if problem:
            return None, [f"{where}.kwargs: {problem}"]
    try:
        return optim.build_optimizer([torch.nn.Parameter(torch.zeros(2))], tp), []
    except Exception as exc:  # the class's own check of its values, e.g. lr < 0
        key = where if spec else "training_params"
        return None, [f"{key}: the optimizer rejects its settings ({_first_line(exc)})"]


def _check_optim(tp: Any) -> list[str]:
    """Build the optimizer and scheduler on a dummy parameter and take two steps: every setting
    torch rejects is found before anything is built or written."""
    import warnings

    import torch

    from dlscaffold import optim

    optimizer, problems = _check_optimizer(tp)
    spec, where = tp.lr_scheduler, "training_params.lr_scheduler"
    if spec is None:
        return problems
    names = optim.scheduler_names()
    if spec.name not in names:
        return [*problems, f"{where}.name: unsupported scheduler '{spec.name}'; "
                           f"{did_you_mean(spec.name, names)}{available(names)}"]
    milestones = spec.kwargs.get("milestones")
    if milestones is not None and not (isinstance(milestones, list) and all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones)):
        return [*problems, f"{where}.kwargs.milestones: found {milestones!r}; expected a list of positive integers"]
    kwargs = dict(spec.kwargs, **({"total_steps": 1} if spec.name == "OneCycleLR" else {}))
    problem = kwargs_problem(getattr(torch.optim.lr_scheduler, spec.name), kwargs, spec.name, skip_first=True)
    if problem or optimizer is None:
        return [*problems, *([f"{where}.kwargs: {problem}"] if problem else [])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            scheduler = optim.build_scheduler(optimizer, tp, steps_per_epoch=2)
            for _ in range(2):
                optimizer.step()
                scheduler.step()
    except Exception as exc:
        return [f"{where}: the scheduler rejects its settings ({_first_line(exc)})"]
    return []


# ---------------------------------------------------------------------------------- training

# Overrides a resumed run accepts: they change only what happens from now on.
RESUMABLE = ("training_params.max_training_epochs", "training_params.val_every", "training_params.save_every",
             "training_params.log_every", "dataloading_params.num_workers", "training_params.lrn_rate")


def monitored(config: Config) -> tuple[str, str]:
    """``(name, mode)`` of the value that picks the best epoch: ``training_params.monitor``, or the
    first loss of the first trained model; ``min`` for a loss, ``max`` for an eval by default."""
    tp = config.training_params
    losses = [f"{m}/{t.logging_name or k}" for m, spec in config.info_flow.items() for k, t in spec.losses.items()]
    trained_first = [f"{m}/{t.logging_name or k}" for m, spec in config.info_flow.items() if spec.train
                     for k, t in spec.losses.items()]
    name = tp.monitor or (trained_first + losses + [""])[0]
    return name, tp.monitor_mode or ("min" if name in losses else "max")


def _check_training(config: Config) -> list[str]:
    """Something to optimise, and a monitor that names a logged value."""
    problems = []
    if not any(spec.train for spec in config.info_flow.values()):
        problems.append("info_flow: no model has train: 1, so there is nothing to optimise; set train: 1 on a model")
    if not any(spec.losses for spec in config.info_flow.values()):
        problems.append("info_flow: no losses, so there is nothing to optimise; add a loss to a model's losses")
    names = [f"{m}/{t.logging_name or k}" for m, spec in config.info_flow.items()
             for kind in ("losses", "evals") for k, t in getattr(spec, kind).items()]
    monitor = config.training_params.monitor
    if monitor is not None and monitor not in names:
        problems.append(f"training_params.monitor: found '{monitor}'; {did_you_mean(monitor, names)}expected "
                        f"<Model>/<logging_name> of a loss or eval: {', '.join(names)}")
    return problems


def _check_resume_overrides(config_path: Path, raw: dict[str, Any], overrides: list[str],
                            config: Config) -> list[str]:
    """A resumed run's config.yml must keep describing what ran: only future-only keys may change.

    ``raw`` is the config with the overrides applied; the run's saved config is read once to compare.
    """
    saved = load_raw(config_path, [])
    problems = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        new, old = _lookup(raw, key), _lookup(saved, key)
        if new == old:
            continue
        tp = config.training_params
        if key == "training_params.lrn_rate" and (tp.lr_scheduler or tp.optimizer and "lr" in tp.optimizer.kwargs):
            problems.append(f"override '{item}': --resume cannot set lrn_rate while the run's lr_scheduler (or "
                            "optimizer.kwargs.lr) sets the rate; start a new run instead")
        elif key not in RESUMABLE:
            problems.append(f"override '{item}': {key} cannot change on --resume (the run's config.yml would no "
                            f"longer describe what ran); keys that can: {', '.join(RESUMABLE)}")
    return problems


def _lookup(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# ------------------------------------------------------------------------------ files, splits


def _check_paths(raw: dict[str, Any]) -> list[str]:
    dl = raw.get("dataloading_params")
    problems = []
    for key in ("dataset_path", "idx_dict_path"):
        value = dl.get(key) if isinstance(dl, dict) else None
        if isinstance(value, str) and not Path(value).exists():
            problems.append(f"dataloading_params.{key}: found '{value}', which does not exist; "
                            "expected an existing path")
    return problems


def _load_split(raw: dict[str, Any], run_dir: Path | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The saved ``idx_dict`` a command will use (the run's, or ``idx_dict_path``), checked."""
    dl = raw.get("dataloading_params") if isinstance(raw.get("dataloading_params"), dict) else {}
    source = run_dir if run_dir is not None else dl.get("idx_dict_path")
    if not isinstance(source, (str, Path)) or not Path(source).exists():
        return None, []  # none, or reported by _check_paths
    path = Path(source) / "idx_dict.json" if Path(source).is_dir() else Path(source)
    key = "dataloading_params.idx_dict_path" if run_dir is None else str(path)
    try:
        idx_dict = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, not JSON, nested too deep
        return None, [f"{key}: '{path}' is not a readable JSON split ({exc}); expected a saved idx_dict.json"]
    if not isinstance(idx_dict, dict):
        idx_dict = {}
    missing = [s for s in ("train", "val") if not isinstance(idx_dict.get(s), list)]
    if missing:
        return None, [f"{key}: '{path}' has no {' or '.join(missing)} list; expected a saved idx_dict.json"]
    idx_dict.setdefault("dev", idx_dict["train"][:20])
    from dlscaffold.data import split_problem  # imports torch

    recorded = idx_dict.get("num_points")
    problem = split_problem(idx_dict, recorded if isinstance(recorded, int) else None)
    return (None, [f"{key}: {problem}"]) if problem else (idx_dict, [])


def _check_splits(config: Config, saved: dict[str, Any] | None, splits: tuple[str, ...]) -> list[str]:
    """Every split the command reads holds points (an empty one would report metrics of nothing)."""
    if saved is None:  # made from the seed: only val_ratio can leave one empty
        if "val" in splits and config.dataloading_params.val_ratio == 0:
            return ["dataloading_params.val_ratio: found 0, so the validation split would be empty; "
                    "expected a value above 0 (e.g. 0.1), or train with --dev"]
        return []
    names = ", ".join(k for k, v in saved.items() if isinstance(v, list))
    problems = []
    for split in dict.fromkeys(splits):
        if not isinstance(saved.get(split), list):
            problems.append(f"--split: found '{split}'; this run has splits: {names}")
        elif not saved[split]:
            problems.append(f"split '{split}': the saved idx_dict holds no points in it; an empty split has no "
                            "metrics: use another split")
    return problems


# ------------------------------------------------------------------------------- one batch


def check_batch(run: Any, indices: list[int]) -> None:
    """Forward, losses and evals on two samples, so a wrong tensor name or shape fails in seconds.

    The last check before the run folder is created, once models exist: the inputs of every
    built-in loss and eval must have the shapes it declares (built-ins never broadcast), and every
    loss or eval must give one value per sample or a scalar. It runs in eval mode without gradients
    and with every RNG forked, so it changes no state a resumed run would have to reproduce.

    Args:
        run: the built run (:class:`dlscaffold.builder.Run`).
        indices: dataset indices to take the two samples from.
    """
    import warnings

    import torch

    from dlscaffold.data import collate
    from dlscaffold.epoch import evaluate_batch
    from dlscaffold.images import image_problems
    from dlscaffold.seeding import forked_rng

    with forked_rng(), torch.no_grad():
        batch = run.transform(run.placement.move(collate([run.dataset[i] for i in indices[:2]])), True)
        run.flow.set_mode(training=False)
        try:
            with run.precision.forward_context():
                outputs = run.flow.forward(batch)
                terms = run.flow.losses + run.flow.evals
                problems = [p for t in terms if (p := _term_problem(run.flow, t, batch, outputs))]
                problems += image_problems(run.config.logging_params.log_images, batch, outputs)
            if problems:
                raise ConfigError(*problems)
            evaluate_batch(run.flow, batch, run.precision)  # also learns the ensembles' member counts
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. classes absent from 2 samples
                run.flow.compute_metrics()  # a torchmetrics result that is not a number fails here, in seconds
            run.flow.reset_metrics()
        except UserError:
            raise
        except Exception as exc:  # e.g. init_args that do not fit the data's shapes
            where = getattr(exc, "dlscaffold_where", None)
            if where is None:
                raise
            raise UserError(f"{where} failed on a batch of 2 before training: {_first_line(exc)}") from exc


def _term_problem(flow: Any, term: Any, batch: dict[str, Any], outputs: dict[str, Any]) -> str | None:
    """What is wrong with one loss or eval on the check's batch (None if nothing)."""
    from dlscaffold.flow import batch_size_of
    from dlscaffold.losses import check_inputs

    args = flow.term_args(term, batch, outputs)
    problem = check_inputs(term.fn, args)
    if problem:
        return f"{term.path}: {problem}"
    try:
        value = term.fn(*args)
    except Exception as exc:
        exc.dlscaffold_where = term.path
        raise
    size = batch_size_of(batch)
    if not hasattr(value, "shape") or (len(value.shape) > 0 and value.shape[0] != size):
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        return (f"{term.path}: returned {shape} for a batch of {size}; expected one value per sample, "
                f"({size},) or ({size}, ...), or a scalar batch mean")
    return None
