"""The pre-run phase: every check a config and its project get before anything is built or written.

:func:`prepare` reads the config (paths resolved once, in :func:`~dlscaffold.config.load_raw`),
imports the project, reads earlier runs' configs once, and checks the one against the other:
schema, model / loss / eval names, ``init_args`` and ``forward`` signatures, tensor sources, loss
inputs bound to arguments by name, duplicate logging names, hook names and options, ``model_dir`` /
``epoch``, the splits the command will use and, when the command trains, the optimizer and scheduler
settings (:func:`dlscaffold.parts.optim.check_settings`). It raises one :class:`~dlscaffold.errors.ConfigError`
holding every problem, one line each. The last check, once models exist, is
:func:`dlscaffold.run.first_batch.check_batch`.

Nothing here writes a file or builds a model, a flow or a trainer; evaluating a run builds no
optimizer.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold.config import (
    DATASET,
    EMA_KEYS,
    MAX_CONFIG_BYTES,
    TRAINER,
    TRAINER_TENSORS,
    Config,
    load_raw,
    metric_name,
    not_regular_file,
    read_yaml,
    saved_epoch,
    split_source,
    validate_raw,
)
from dlscaffold.config.monitor import NONE, TOTAL
from dlscaffold.config.phases import accumulate_problems, phase_problems
from dlscaffold.errors import ConfigError, UserError, available, did_you_mean
from dlscaffold.parts.signatures import input_order, kwargs_problem, options_problem
from dlscaffold.parts.tm_metrics import TORCHMETRICS, build_metric
from dlscaffold.project.code import MODULE_NAMES, Project, load_project
from dlscaffold.project.provenance import code_hashes, latest_code
from dlscaffold.project.registry import Registry, build_registries
from dlscaffold.records.rundir import CONFIG_FILE, SPLIT_FILE, read_run_info
from dlscaffold.records.runfiles import model_epoch


@dataclass
class Prepared:
    """A checked config with its project: everything the run builder needs."""

    config: Config  # validated; paths absolute; loaded models' init_args filled in, epoch a number
    project: Project
    losses: Registry
    evals: Registry
    config_path: Path
    saved_split: dict[str, Any] | None = None  # the idx_dict of the run folder or idx_dict_path
    run_dir: Path | None = None  # resume / evaluate: the run folder


@dataclass
class _EarlierRuns:
    """Configs of earlier runs named by ``model_dir``, each read once, and the saved epoch number
    each loaded model's ``epoch`` (``best``, ``last`` or a number) resolved to."""

    configs: dict[Path, dict[str, Any]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)

    def init_args(self, model_dir: Path, name: str) -> dict[str, Any]:
        """``init_args`` of ``name`` in the config saved with that run (empty if none)."""
        if model_dir not in self.configs:
            self.configs[model_dir] = {}
            for folder in (model_dir, model_dir.parent):  # the run, or its checkpoints folder
                try:
                    self.configs[model_dir] = read_yaml(folder / CONFIG_FILE)
                    break
                except UserError:
                    continue
        entry = (self.configs[model_dir].get("info_flow") or {}).get(name) or {}
        return dict(entry.get("init_args") or {}) if isinstance(entry, dict) else {}


def prepare(
    config_path: Path,
    overrides: list[str] = (),
    project_dir: Path | None = None,
    *,
    run_dir: Path | None = None,
    splits: tuple[str, ...] | None = None,
    training: bool = True,
) -> Prepared:
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
        training: the command trains (``train``, ``--resume``): also build the optimizer and
            scheduler on a dummy parameter to check their settings. ``evaluate`` and ``load_run``
            pass False: they construct no optimizer.
    """
    config_path = Path(config_path)
    folder = project_folder(config_path, project_dir, run_dir)
    check_conflict_blocks([config_path, *(folder / f"{name}.py" for name in MODULE_NAMES)])
    raw = load_raw(config_path, overrides)
    project = load_project(folder)
    losses, evals = build_registries(project.losses, project.evals)
    config, problems = validate_raw(raw)
    earlier = _EarlierRuns()
    problems += _check_paths(raw) + (_check_batch_sizes(raw) if run_dir is None else [])  # not a run's own config
    problems += _check_info_flow(raw, project, losses, evals, earlier)
    from dlscaffold.parts.hooks import hook_problems  # imports torch

    problems += hook_problems(raw, project.hooks)
    saved_split, split_problems = _load_split(raw, run_dir)
    problems += split_problems
    if config is not None:
        if training:
            from dlscaffold.parts import optim  # imports torch

            problems += optim.check_settings(config)
        problems += _check_logging_names(config)
        from dlscaffold.records.images import parse_image_specs  # imports torch

        problems += parse_image_specs(config.logging_params.log_images, list(config.info_flow))
        used = splits or (("dev",) if config.training_params.use_dev else ("train", "val"))
        problems += _check_splits(config, saved_split, used)
        if splits is None:  # training
            problems += _check_run(config, project, raw, overrides, config_path, run_dir)
    if problems:
        raise ConfigError(*problems)
    _complete_specs(config, earlier)
    return Prepared(config, project, losses, evals, config_path, saved_split, run_dir)


def _check_run(
    config: Config, project: Project, raw: dict[str, Any], overrides: list[str], config_path: Path, run_dir: Path | None
) -> list[str]:
    """What only training checks: something to optimise and the monitor, what gradients can reach,
    a new run's loading options, and a resumed run's overrides."""
    problems = _check_training(config)
    unknown = {n for n, s in config.info_flow.items() if not s.ema_of and n not in project.model_classes}
    problems += _unreached(config, unknown)
    if run_dir is None:
        problems += _check_loading(config, project)  # a new run's options
    else:
        problems += _check_resume_overrides(config_path, raw, overrides, config)
    return problems


def _complete_specs(config: Config, earlier: _EarlierRuns) -> None:
    """What a checked config leaves implicit, filled in for config.yml: a loaded model's ``init_args``
    default to its run's and its ``epoch`` becomes the number loaded; an EMA copy takes its
    source's ``init_args`` and ``inputs``."""
    for name, spec in config.info_flow.items():
        if spec.model_dir is not None:
            spec.init_args = {**earlier.init_args(spec.model_dir, name), **spec.init_args}
            spec.epoch = earlier.epochs.get(name, spec.epoch)  # best / last as a number, for config.yml
        if spec.ema_of is not None:  # a copy of its source: config.yml records what it is
            source = config.info_flow[spec.ema_of]
            spec.init_args, spec.inputs = dict(source.init_args), dict(spec.inputs or source.inputs)


def project_folder(config_path: Path, project_dir: Path | None, run_dir: Path | None) -> Path:
    """The folder whose code a command imports: never a run folder itself, nor code a run folder chose.

    ``--project`` when given, taken as is. For a run folder (evaluate, ``load_run``, resume): the
    project folder its ``run.json`` records for its latest session (an absolute path, or one
    relative to the run folder, as a run shipped inside its project records: ``".."``), only when
    the run folder lies inside that folder (real paths, symlinks resolved: a run under the
    project's logging folder, or shipped in it) and the folder still holds the code that session
    ran (:func:`check_project_code`). Any other recorded folder is refused, hashes or not: whoever
    hands over a run folder writes its ``run.json`` too. Without a run folder: the config file's
    folder.
    """
    if project_dir is not None:
        return Path(project_dir)
    if run_dir is None:
        return Path(config_path).resolve().parent
    value = latest_code(read_run_info(run_dir))[0]
    recorded = Path(value) if isinstance(value, str) and value else None
    real_run = run_dir.resolve()
    if recorded is not None and not recorded.is_absolute():  # a shipped run inside its project (project_dir: "..")
        recorded = Path(os.path.normpath(real_run / recorded))
    real = recorded.resolve() if recorded is not None else None
    if real is None:
        found = "it records no project folder"
    elif real.is_relative_to(real_run):  # the run folder itself, or a folder inside it (a run folder is data)
        found = f"it records its own folder '{recorded}' as the project; code is never imported from a run folder"
    elif not (recorded / "models.py").is_file():  # moved or gone: nothing of it is read
        found = f"the project folder it records, '{recorded}', holds no models.py"
    elif not real_run.is_relative_to(real):
        found = (
            f"the project folder it records, '{recorded}', does not hold the run folder, and a run folder "
            "never chooses the code that loads it"
        )
    else:
        return check_project_code(recorded, run_dir)
    raise UserError(
        f"{run_dir}: {found}: pass the project folder with --project DIR (load_run: project=) to use its code"
    )


# what to do when a project folder no longer holds the code a run last ran
_RECORDED_HINT = (
    "the recorded project's code is imported only while it is the code the run last ran: pass the project "
    "folder with --project DIR (load_run: project=) to use its code as it is now, for evaluate and train "
    "--resume alike"
)


def check_project_code(project: Path, run_dir: Path, script: bool = False) -> Path:
    """``project``, when it holds the code the run's latest session ran: each code file's SHA-256
    equals the one ``run.json`` records for that session (the first session's ``project_files``,
    or those of the last entry of ``sessions``; a run without them is refused).

    The check a recorded project folder gets, and a project's own ``train.py`` / ``evaluate.py``
    (``script``: the folder passed to :func:`dlscaffold.cli.main`) for the run folder it resumes or
    evaluates; ``--project DIR`` is taken as is instead.

    Raises:
        UserError: one line naming the files that changed, and ``--project``.
    """
    changed = _changed_code(project, latest_code(read_run_info(run_dir))[1])
    if changed is None:
        return project
    hint = _RECORDED_HINT
    if script:
        hint = (
            "a project's own train.py and evaluate.py import its code only while it is the code the run last "
            f"ran, as dlscaffold evaluate and train --resume do: pass --project DIR (here: --project {project}) "
            "to use its code as it is now"
        )
    raise UserError(f"{run_dir}: {changed}; {hint}")


def _changed_code(project: Path, recorded: Any) -> str | None:
    """What differs between the project's code files and the SHA-256 hashes a run recorded for its
    latest session (``project_files``), in words; None when every one matches."""
    if not isinstance(recorded, dict) or not recorded:
        return (
            f"it records no hashes of the project's code (an older dlscaffold made it), "
            f"so the code in '{project}' cannot be checked"
        )
    now = code_hashes(project)
    changed = [name for name in (f"{n}.py" for n in MODULE_NAMES) if recorded.get(name) != now.get(name)]
    if not changed:
        return None
    files = ", ".join(changed)
    return (
        f"{files} in '{project}' changed since the run last trained "
        "(SHA-256 differs from the project_files run.json records for its latest session)"
    )


_CONFLICT = re.compile(r"^(<{7}|>{7})( |$)")


def check_conflict_blocks(paths: list[Path]) -> None:
    """Refuse files that still hold ``<<<<<<<`` / ``>>>>>>>`` blocks from a template update."""
    problems = []
    for path in paths:
        try:
            if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:  # never open a FIFO or a device
                continue  # reported where it is read
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue  # a missing file is reported where it is read
        line = next((i for i, text in enumerate(lines, 1) if _CONFLICT.match(text)), None)
        if line is not None:
            problems.append(
                f"{path}:{line}: holds a merge conflict block (<<<<<<< ... >>>>>>>) left by "
                "`dlscaffold update`; keep the lines you want, delete the markers, then commit"
            )
    if problems:
        raise UserError(*problems)


# -------------------------------------------------------------------------------- info_flow


def _check_sources(path: str, inputs: Any, allowed: list[str], later: list[str]) -> list[str]:
    """Each input's source: ``dataset``, ``trainer`` or a model in ``allowed``, alone (the tensor
    named like the argument) or with a tensor name (``Encoder.latent``, ``dataset.image``). Whether
    a model or the dataset has that tensor is checked on a batch (:func:`dlscaffold.run.first_batch.check_batch`)."""
    problems = []
    if not isinstance(inputs, dict):
        return problems  # the structural check reports it
    choices = ", ".join([DATASET, *allowed])
    for arg, text in inputs.items():
        if not isinstance(text, str):
            continue  # the structural check reports it
        source, tensor = split_source(text, [*allowed, *later])
        if not source or tensor == "":
            problems.append(
                f"{path}.{arg}: found '{text}'; expected a source ({choices} or {TRAINER}), or "
                f"<source>.<tensor name> for a tensor of another name, e.g. {DATASET}.{arg}"
            )
            continue
        if source == TRAINER and (tensor or arg) not in TRAINER_TENSORS:
            problems.append(
                f"{path}.{arg}: the trainer gives only {' and '.join(TRAINER_TENSORS)}; "
                f"expected one of them, e.g. {{epoch: {TRAINER}}}"
            )
        if source in (DATASET, TRAINER) or source in allowed:
            continue
        if source in later:
            problems.append(
                f"{path}.{arg}: source '{source}' is built after this model; "
                f"expected '{DATASET}' or a model listed earlier: {choices}"
            )
        else:
            problems.append(
                f"{path}.{arg}: unknown source '{source}'; "
                f"{did_you_mean(source, [DATASET, TRAINER, *allowed])}"
                f"expected '{DATASET}' or a model in info_flow: {choices} "
                f"(or '{TRAINER}' for the epoch and step)"
            )
    return problems


def _check_terms(path: str, terms: Any, registry: Registry, models: list[str]) -> list[str]:
    problems = []
    if not isinstance(terms, dict):
        return problems
    for key, spec in terms.items():
        spec = spec if isinstance(spec, dict) else {}
        name = spec.get("function") or key
        where = f"{path}.{key}"
        if isinstance(name, str) and name.startswith(TORCHMETRICS) and registry.kind == "eval":
            problems += _check_torchmetric(where, name, spec, models)
            continue
        if name not in registry:
            hint = (
                "; torchmetrics metrics are epoch-level evals: list it under evals"
                if isinstance(name, str) and name.startswith(TORCHMETRICS)
                else ""
            )
            problems.append(f"{where}: {registry.unknown(name)}{hint}")
            continue
        if spec.get("init_args"):
            problems.append(
                f"{where}.init_args: only a torchmetrics.<Class> eval takes init_args; "
                f"'{name}' is a function: remove them"
            )
        inputs = spec.get("inputs")
        problems += _check_sources(f"{where}.inputs", inputs, models, [])
        if isinstance(inputs, dict) and inputs:
            _, problem = input_order(registry.get(name), list(inputs), name)  # bound by name (parts.flow)
            if problem:
                problems.append(f"{where}.inputs: {problem}")
        options = spec.get("options")
        if isinstance(options, dict) and options:  # not a mapping: the schema reports it
            problem = options_problem(registry.get(name), options, len(inputs) if isinstance(inputs, dict) else 0, name)
            if problem:
                problems.append(f"{where}.options: {problem}")
    return problems


def _check_torchmetric(where: str, name: str, spec: dict, models: list[str]) -> list[str]:
    """A ``torchmetrics.<Class>`` eval: a Metric class torchmetrics exports, ``init_args`` its
    constructor accepts (built once on the CPU) and as many inputs as its ``update`` takes."""
    inputs = spec.get("inputs")
    problems = _check_sources(f"{where}.inputs", inputs, models, [])
    if spec.get("options"):
        problems.append(
            f"{where}.options: a torchmetrics.<Class> eval takes its settings as init_args: move them there"
        )
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        return problems  # the schema reports it
    try:
        metric = build_metric(name, init_args, where)  # imports torch and torchmetrics: only when one is used
    except UserError as exc:
        return [*(f"{where}: {p}" if p.startswith("unknown") else p for p in exc.problems), *problems]
    if isinstance(inputs, dict) and inputs:
        _, problem = input_order(metric.update, list(inputs), f"{name}.update")
        if problem:
            problems.append(f"{where}.inputs: {problem}")
    return problems


def _check_model_dir(path: str, name: str, spec: dict, earlier: _EarlierRuns) -> list[str]:
    """The earlier run exists and holds ``name``'s weights for ``epoch``, resolved to a number."""
    model_dir = Path(spec["model_dir"])
    if not model_dir.is_dir():
        return [f"{path}.model_dir: found '{model_dir}', which does not exist; expected an earlier run's folder"]
    try:
        epoch = saved_epoch(spec.get("epoch", 0))
    except ValueError:
        return []  # the structural check reports it
    try:
        earlier.epochs[name] = model_epoch(model_dir, name, epoch, f"{path}.epoch")
    except UserError as exc:
        return exc.problems
    return []


def _check_ema(name: str, spec: dict, flow: dict[str, Any], project: Project, earlier: _EarlierRuns) -> list[str]:
    """An EMA model (``ema_of``): it averages a trained model listed earlier, takes that model's class
    and ``init_args`` and has no losses and no ``train: 1``; its ``inputs`` default to the source's."""
    path, source, names = f"info_flow.{name}", spec["ema_of"], list(flow)
    earlier_names = names[: names.index(name)]
    if source not in names:
        trained = [n for n in earlier_names if isinstance(flow[n], dict) and "ema_of" not in flow[n]]
        return [
            f"{path}.ema_of: unknown model '{source}'; {did_you_mean(source, trained)}"
            f"expected a trained model listed earlier in info_flow: {', '.join(trained) or 'none'}"
        ]
    if source not in earlier_names:
        return [f"{path}.ema_of: '{source}' is listed after {name}; list the model an EMA model averages before it"]
    source_spec = flow[source] if isinstance(flow[source], dict) else {}
    problems = []
    if "ema_of" in source_spec or source_spec.get("train", 1) not in (1, True):
        why = "is an EMA model itself" if "ema_of" in source_spec else "is not trained (train: 0)"
        problems.append(
            f"{path}.ema_of: '{source}' {why}, so it has no optimizer steps to average; name a model with train: 1"
        )
    if spec.get("train") in (1, True):
        problems.append(f"{path}.train: an EMA model is never trained by gradients; remove train: 1")
    if spec.get("losses"):
        problems.append(
            f"{path}.losses: an EMA model is never trained by gradients, so it takes no losses; put them on "
            f"'{source}' (its evals may read {name})"
        )
    own = spec.get("init_args")
    if own and isinstance(own, dict) and own != _init_args(source, source_spec, earlier):
        problems.append(f"{path}.init_args: an EMA model is a copy of '{source}' and takes its init_args; remove them")
    cls = project.model_classes.get(source)
    inputs = spec.get("inputs")
    if cls is not None and isinstance(inputs, dict) and getattr(cls, "forward", None) is not None:
        problem = kwargs_problem(cls.forward, dict.fromkeys(inputs), f"{source}.forward()", skip_first=True)
        problems += [f"{path}.inputs: {problem}"] if problem else []
    if isinstance(spec.get("model_dir"), str):
        problems += _check_model_dir(path, name, spec, earlier)
    return problems


def _init_args(name: str, spec: dict, earlier: _EarlierRuns) -> Any:
    """A model's ``init_args``, with a loaded model's defaulting to its run's."""
    init_args = spec.get("init_args") or {}
    if isinstance(spec.get("model_dir"), str) and isinstance(init_args, dict) and Path(spec["model_dir"]).is_dir():
        init_args = {**earlier.init_args(Path(spec["model_dir"]), name), **init_args}
    return init_args


def _check_model(name: str, spec: dict, project: Project, earlier: _EarlierRuns) -> list[str]:
    path = f"info_flow.{name}"
    ema_keys = [key for key in EMA_KEYS if key in spec and key != "ema_of"]
    if ema_keys:
        return [
            f"{path}.{ema_keys[0]}: only an EMA model takes {', '.join(ema_keys)}; "
            f"add ema_of: <the trained model it averages>, or remove {'them' if len(ema_keys) > 1 else 'it'}"
        ]
    cls = project.model_classes.get(name)
    if cls is None:
        choices = project.model_classes
        return [
            f"{path}: unknown model '{name}'; {did_you_mean(name, choices)}{available(choices)} "
            "(from get_ref_model_dict() in models.py)"
        ]
    problems = []
    init_args = spec.get("init_args") or {}
    if isinstance(spec.get("model_dir"), str):
        problems += _check_model_dir(path, name, spec, earlier)
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


def _check_info_flow(
    raw: dict[str, Any], project: Project, losses: Registry, evals: Registry, earlier: _EarlierRuns
) -> list[str]:
    """Model names, ``init_args``, ``forward`` arguments, tensor sources, loss/eval names and arity."""
    flow = raw.get("info_flow")
    if not isinstance(flow, dict):
        return []
    names = list(flow)
    problems = []
    for i, (name, spec) in enumerate(flow.items()):
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("ema_of"), str):
            problems += _check_ema(name, spec, flow, project, earlier)
        elif spec.get("ema_of") is None:  # otherwise the schema reports it
            problems += _check_model(name, spec, project, earlier)
        problems += _check_sources(f"info_flow.{name}.inputs", spec.get("inputs"), names[:i], names[i:])
        problems += _check_terms(f"info_flow.{name}.losses", spec.get("losses"), losses, names)
        problems += _check_terms(f"info_flow.{name}.evals", spec.get("evals"), evals, names)
    return problems


def _check_logging_names(config: Config) -> list[str]:
    """Two losses (or two evals) logged under one ``<Model>/<logging_name>`` would overwrite each other."""
    names = {
        kind: [metric_name(m, key, t) for m, spec in config.info_flow.items() for key, t in getattr(spec, kind).items()]
        for kind in ("losses", "evals")
    }
    problems = []
    for kind, listed in names.items():
        duplicates = sorted({n for n in listed if listed.count(n) > 1})
        if duplicates:
            problems.append(
                f"info_flow: {kind} logged twice as {', '.join(duplicates)}; give each a distinct logging_name"
            )
    both = sorted(set(names["losses"]) & set(names["evals"]))
    if both:
        problems.append(
            f"info_flow: a loss and an eval are both logged as {', '.join(both)}; give each a distinct logging_name"
        )
    return problems


# ---------------------------------------------------------------------------------- training

# Overrides a resumed run accepts: they change only what happens from now on.
RESUMABLE = (
    "training_params.max_training_epochs",
    "training_params.val_every",
    "training_params.save_every",
    "training_params.log_every",
    "dataloading_params.num_workers",
    "training_params.lrn_rate",
    "logging_params.progress_every",
)


def _check_training(config: Config) -> list[str]:
    """Something to optimise, and a monitor that names a logged value."""
    problems = []
    if not any(spec.train for spec in config.info_flow.values()):
        problems.append("info_flow: no model has train: 1, so there is nothing to optimise; set train: 1 on a model")
    if not any(spec.losses for spec in config.info_flow.values()):
        problems.append("info_flow: no losses, so there is nothing to optimise; add a loss to a model's losses")
    names = [
        metric_name(m, k, t)
        for m, spec in config.info_flow.items()
        for kind in ("losses", "evals")
        for k, t in getattr(spec, kind).items()
    ]
    for model, spec in config.info_flow.items():  # whether they are trained and reached: trial.check_batch
        for key, loss in spec.losses.items():
            if loss.trains is None:
                continue
            where = f"info_flow.{model}.losses.{key}.trains"
            if not loss.trains:
                problems.append(
                    f"{where}: empty; name the models this loss updates, or leave trains out (all it reaches)"
                )
            for name in loss.trains:
                if name not in config.info_flow:
                    choices = list(config.info_flow)
                    problems.append(
                        f"{where}: unknown model '{name}'; {did_you_mean(name, choices)}expected models of info_flow: "
                        f"{', '.join(choices)}"
                    )
    tp = config.training_params
    monitor = tp.monitor
    if monitor is not None and monitor not in (*names, TOTAL, NONE):
        problems.append(
            f"training_params.monitor: found '{monitor}'; {did_you_mean(monitor, [*names, TOTAL, NONE])}expected "
            f"<Model>/<logging_name> of a loss or eval, {TOTAL} (the weighted sum of the losses) or {NONE} "
            f"(no best epoch): {', '.join(names)}"
        )
    if monitor == NONE and tp.early_stopping_patience is not None:
        problems.append(
            f"training_params.early_stopping_patience: found {tp.early_stopping_patience}, but "
            f"training_params.monitor is {NONE}, so no value is watched for improvement; "
            "leave early_stopping_patience out, or set monitor to a loss or eval"
        )
    if monitor == NONE and tp.monitor_mode is not None:
        problems.append(
            f"training_params.monitor_mode: found {tp.monitor_mode}, but training_params.monitor is {NONE}, "
            "so there is no best epoch to pick; leave monitor_mode out, or set monitor to a loss or eval"
        )
    return problems


def _unreached(config: Config, unknown: set[str]) -> list[str]:
    """What the info_flow graph alone shows no gradient can do, so that these lines come together
    with every other problem of the config (the two-sample check, :mod:`dlscaffold.run.first_batch`, then
    back-propagates for real and finds the rest, such as a detached output): a trained model that
    no loss's inputs come from, a ``trains`` naming a frozen model or one its loss does not read
    from, a trained model every loss reading from it excludes. Same lines as that check."""
    flow = config.info_flow

    def sources(inputs: dict[str, Any] | None) -> set[str]:
        return {where for s in (inputs or {}).values() if (where := split_source(str(s), flow)[0]) in flow}

    def inputs_of(name: str) -> dict[str, Any]:
        spec = flow[name]
        source = getattr(spec, "ema_of", None)
        return spec.inputs or (flow[source].inputs if source in flow else {})

    def upstream(names: set[str]) -> set[str]:
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += sources(inputs_of(name))
        return seen

    trained = [name for name, spec in flow.items() if spec.train and name not in unknown]  # unknown: said
    reaches = [
        (f"info_flow.{model}.losses.{key}", upstream(sources(loss.inputs)) & set(trained), loss.trains)
        for model, spec in flow.items()
        for key, loss in spec.losses.items()
    ]
    return [
        *gradient_path_problems(reaches, trained, known=set(flow)),
        *phase_problems(config, reaches, trained),
        *accumulate_problems(config, reaches, trained),
    ]


def gradient_path_problems(
    reaches: list[tuple[str, set[str], list[str] | None]], trained: list[str], known: set[str] | None = None
) -> list[str]:
    """The lines for what gradients do not do, from each loss's ``(key path, trained models it
    reaches, its trains)``: a ``trains`` naming a frozen model or one the loss does not reach, a
    trained model no loss trains. ``known``: only these names of ``trains`` are judged (an unknown
    one has its own line). Shared by the graph check here and the two-sample check
    (:mod:`dlscaffold.run.first_batch`), which back-propagates."""
    problems, trained_by, reached_any = [], set(), set()
    for where, reached, trains in reaches:
        reached_any |= reached
        for name in [n for n in trains or () if known is None or n in known]:
            if name not in trained:
                problems.append(
                    f"{where}.trains: names {name}, which is not trained (train: 0); "
                    f"remove it or set info_flow.{name}.train: 1"
                )
            elif name not in reached:
                problems.append(
                    f"{where}.trains: names {name}, but this loss does not reach {name}'s parameters; "
                    "remove it from trains"
                )
        trained_by |= reached & set(trained if trains is None else trains)
    for name in trained:
        if name not in trained_by:
            why = (
                "every loss that reaches it names other models in trains"
                if name in reached_any
                else "no loss reaches its parameters"
            )
            problems.append(
                f"info_flow.{name}: trained (train: 1) but {why}; add a loss that trains it or set train: 0"
            )
    return problems


def _check_resume_overrides(config_path: Path, raw: dict[str, Any], overrides: list[str], config: Config) -> list[str]:
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
            problems.append(
                f"override '{item}': --resume cannot set lrn_rate while the run's lr_scheduler (or "
                "optimizer.kwargs.lr) sets the rate; start a new run instead"
            )
        elif key == "training_params.max_training_epochs" and tp.lr_scheduler and tp.lr_scheduler.name == "OneCycleLR":
            problems.append(
                f"override '{item}': OneCycleLR's length is fixed when a run starts, so --resume cannot "
                "extend or shorten the run; start a new run, or use a scheduler without a fixed length"
            )
        elif key not in RESUMABLE:
            problems.append(
                f"override '{item}': {key} cannot change on --resume (the run's config.yml would no "
                f"longer describe what ran); keys that can: {', '.join(RESUMABLE)}"
            )
    return problems


def _lookup(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# ------------------------------------------------------------------------------ files, splits


def _check_loading(config: Config, project: Project) -> list[str]:
    """A new run's DataLoader options each have something to act on: worker processes
    (``prefetch_factor``, ``persistent_workers``), a CUDA device (``pin_memory``), a DataLoader at all
    (not with ``device_data``). Where they have not, the loader leaves them out; a resume that sets
    ``num_workers`` to 0, or an evaluation, is not refused for them."""
    dl, key = config.dataloading_params, "dataloading_params"
    asked = {  # the options set, each as the message shows it
        name: shown
        for name, on, shown in (
            ("persistent_workers", dl.persistent_workers, "true"),
            ("pin_memory", dl.pin_memory, "true"),
            ("prefetch_factor", dl.prefetch_factor is not None, f"found {dl.prefetch_factor}"),
        )
        if on
    }
    if dl.device_data:
        return [
            f"{key}.{name}: {found}, but device_data: true stacks each split on the device once and loads no batch "
            f"through a DataLoader, so {name} does not apply; remove it or set device_data: false"
            for name, found in asked.items()
        ]
    problems = []
    if dl.num_workers == 0:
        problems += [
            f"{key}.{name}: {asked[name]}, but num_workers is 0 (batches are loaded in the main process), so there "
            f"are no worker processes for it to act on; set num_workers above 0 or remove {name}"
            for name in ("persistent_workers", "prefetch_factor")
            if name in asked
        ]
    elif dl.persistent_workers and callable(getattr(project.dataset_class, "set_epoch", None)):
        problems.append(
            f"{key}.persistent_workers: CustomDataSet defines set_epoch, whose changes to the dataset would not "
            "reach workers kept from the first epoch (each holds its own copy); set persistent_workers: false"
        )
    if dl.pin_memory:
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"{key}.pin_memory: true, but CUDA is not available here; pin_memory only helps copies of "
                "batches to a CUDA device: set pin_memory: false"
            )
    return problems


def _check_paths(raw: dict[str, Any]) -> list[str]:
    dl = raw.get("dataloading_params")
    problems = []
    for key in ("dataset_path", "idx_dict_path"):
        value = dl.get(key) if isinstance(dl, dict) else None
        if isinstance(value, str) and not Path(value).exists():
            problems.append(
                f"dataloading_params.{key}: found '{value}', which does not exist; expected an existing path"
            )
    return problems


def _check_batch_sizes(raw: dict[str, Any]) -> list[str]:
    """``batch_size`` (per process) and ``global_batch_size`` (over every process) say the same
    thing two ways: a config sets one. Read from the YAML and overrides as written, where the
    schema's default ``batch_size`` is not there yet (a run's config.yml, which records the resolved
    config, holds both: it is not checked here)."""
    dl = raw.get("dataloading_params")
    if not isinstance(dl, dict) or dl.get("batch_size") is None or dl.get("global_batch_size") is None:
        return []
    found = f"batch_size: {dl['batch_size']} (per process) and global_batch_size: {dl['global_batch_size']}"
    return [
        f"dataloading_params: found {found} (over every process); set only one: global_batch_size keeps the "
        "global batch on any number of processes (remove batch_size), batch_size is per process"
    ]


def _load_split(raw: dict[str, Any], run_dir: Path | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The saved ``idx_dict`` a command will use (the run's, or ``idx_dict_path``), checked."""
    dl = raw.get("dataloading_params") if isinstance(raw.get("dataloading_params"), dict) else {}
    source = run_dir if run_dir is not None else dl.get("idx_dict_path")
    if not isinstance(source, (str, Path)) or not Path(source).exists():
        return None, []  # none, or reported by _check_paths
    path = Path(source) / SPLIT_FILE if Path(source).is_dir() else Path(source)
    key = "dataloading_params.idx_dict_path" if run_dir is None else str(path)
    kind = not_regular_file(path)
    if kind is not None:
        return None, [f"{key}: '{path}' is {kind}, not a regular file; expected a saved idx_dict.json"]
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
    from dlscaffold.parts.point_ids import ids_problem

    recorded = idx_dict.get("num_points")
    problem = split_problem(idx_dict, recorded if isinstance(recorded, int) else None) or ids_problem(idx_dict)
    return (None, [f"{key}: {problem}"]) if problem else (idx_dict, [])


def _check_splits(config: Config, saved: dict[str, Any] | None, splits: tuple[str, ...]) -> list[str]:
    """Every split the command reads holds points (an empty one would report metrics of nothing)."""
    if saved is None:  # made from the seed: only val_ratio can leave one empty
        if "val" in splits and config.dataloading_params.val_ratio == 0:
            return [
                "dataloading_params.val_ratio: found 0, so the validation split would be empty; "
                "expected a value above 0 (e.g. 0.1), or train with --dev"
            ]
        return []
    from dlscaffold.data import chosen_split_problem  # imports torch

    problems = [chosen_split_problem(saved, split) for split in dict.fromkeys(splits)]
    return [problem for problem in problems if problem]
