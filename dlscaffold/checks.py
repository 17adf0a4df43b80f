"""Checks of a config against the project's code, before anything is built or written.

:func:`check_info_flow` reads the raw (override-applied) config dict, so that it can report its
problems together with the structural ones from :mod:`dlscaffold.config`, however broken the rest
of the file is. Each problem is one line: key path, what was found, what is expected.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from dlscaffold.config import read_yaml
from dlscaffold.errors import UserError, available, did_you_mean
from dlscaffold.project import Project
from dlscaffold.registry import Registry

DATASET = "dataset"


def checkpoint_folder(model_dir: Path) -> Path:
    """Where a run keeps its weights: ``<run>/checkpoints``, or ``model_dir`` itself when it is
    that folder (or a seed-style folder holding the ``.pt`` files directly)."""
    nested = model_dir / "checkpoints"
    return nested if nested.is_dir() else model_dir


def checkpoint_path(model_dir: Path, name: str, epoch: int) -> Path:
    """The file with ``name``'s weights after ``epoch``: ``<name>_<epoch:06d>.pt``."""
    return checkpoint_folder(model_dir) / f"{name}_{epoch:06d}.pt"


def saved_epochs(model_dir: Path, name: str) -> list[int]:
    """The epochs for which ``model_dir`` holds weights of ``name``."""
    epochs = []
    for path in checkpoint_folder(model_dir).glob(f"{name}_*.pt"):
        suffix = path.stem[len(name) + 1 :]
        if suffix.isdigit():
            epochs.append(int(suffix))
    return sorted(epochs)


def saved_init_args(model_dir: Path, name: str) -> dict[str, Any]:
    """``init_args`` of ``name`` in the config saved with an earlier run (empty if none)."""
    for folder in (model_dir, model_dir.parent):
        try:
            raw = read_yaml(folder / "config.yml")
        except UserError:
            continue
        entry = (raw.get("info_flow") or {}).get(name) or {}
        return dict(entry.get("init_args") or {})
    return {}


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


def _check_sources(path: str, inputs: Any, allowed: list[str], later: list[str]) -> list[str]:
    problems = []
    if not isinstance(inputs, dict):
        return problems  # the structural check reports it
    for tensor, source in inputs.items():
        if source == DATASET or source in allowed:
            continue
        if source in later:
            problems.append(
                f"{path}.{tensor}: source '{source}' is built after this model; "
                f"expected '{DATASET}' or a model listed earlier: {', '.join([DATASET, *allowed])}"
            )
        else:
            problems.append(
                f"{path}.{tensor}: unknown source '{source}'; {did_you_mean(source, [DATASET, *allowed])}"
                f"expected '{DATASET}' or a model in info_flow: {', '.join([DATASET, *allowed])}"
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
        if name not in registry:
            problems.append(f"{where}: {registry.unknown(name)}")
            continue
        inputs = spec.get("inputs")
        problems += _check_sources(f"{where}.inputs", inputs, models, [])
        if isinstance(inputs, dict) and inputs:
            problem = _arity_problem(registry.get(name), len(inputs), name)
            if problem:
                problems.append(f"{where}.inputs: {problem}")
    return problems


def _check_model(name: str, spec: dict, project: Project, base: Path) -> list[str]:
    path = f"info_flow.{name}"
    cls = project.model_classes.get(name)
    if cls is None:
        choices = project.model_classes
        return [f"{path}: unknown model '{name}'; {did_you_mean(name, choices)}{available(choices)} (from get_ref_model_dict() in models.py)"]
    problems = []
    init_args = spec.get("init_args") or {}
    model_dir = spec.get("model_dir")
    if model_dir:
        model_dir = Path(model_dir).expanduser()
        model_dir = model_dir if model_dir.is_absolute() else (base / model_dir).resolve()
        epoch = spec.get("epoch", 0)
        if not model_dir.is_dir():
            problems.append(f"{path}.model_dir: found '{model_dir}', which does not exist; expected an earlier run's folder")
        elif isinstance(epoch, int) and not checkpoint_path(model_dir, name, epoch).is_file():
            epochs = saved_epochs(model_dir, name)
            saved = ", ".join(map(str, epochs)) if epochs else "none"
            problems.append(f"{path}.epoch: found {epoch}; {model_dir} holds {name} weights for epochs: {saved}")
        if isinstance(init_args, dict) and model_dir.is_dir():
            init_args = {**saved_init_args(model_dir, name), **init_args}
    if isinstance(init_args, dict):
        problem = kwargs_problem(cls, init_args, f"{name}()")
        if problem:
            problems.append(f"{path}.init_args: {problem}")
    inputs = spec.get("inputs")
    forward = getattr(cls, "forward", None)
    if isinstance(inputs, dict) and forward is not None:
        problem = kwargs_problem(forward, dict.fromkeys(inputs), f"{name}.forward()", skip_first=True)
        if problem:
            problems.append(f"{path}.inputs: {problem}")
    return problems


def check_info_flow(raw: dict[str, Any], project: Project, losses: Registry, evals: Registry, base: Path) -> list[str]:
    """Check model names, ``init_args``, tensor sources and loss/eval names and arity.

    Args:
        raw: the config dict after overrides, before (or whatever the outcome of) validation.
        project: the imported project code.
        losses, evals: the registries to look names up in.
        base: the config file's folder (relative ``model_dir`` resolve against it).

    Returns:
        One line per problem; empty when all is well.
    """
    flow = raw.get("info_flow")
    if not isinstance(flow, dict):
        return []
    names = list(flow)
    problems = []
    for i, (name, spec) in enumerate(flow.items()):
        if not isinstance(spec, dict):
            continue
        problems += _check_model(name, spec, project, base)
        problems += _check_sources(f"info_flow.{name}.inputs", spec.get("inputs"), names[:i], names[i:])
        problems += _check_terms(f"info_flow.{name}.losses", spec.get("losses"), losses, names)
        problems += _check_terms(f"info_flow.{name}.evals", spec.get("evals"), evals, names)
    return problems
