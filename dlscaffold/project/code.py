"""Find and import a project's own code: ``models.py``, ``dataloader.py``, ``training_utils.py``
(its losses and evals, and its hooks from the optional ``get_project_hooks()``).

The modules are imported under their plain names with the project folder on ``sys.path``, so that
the project's files can import each other (``from models import Encoder``) and DataLoader workers
started with ``spawn`` find ``dataloader.CustomDataSet`` again.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dlscaffold.errors import UserError, first_line

MODULE_NAMES = ("models", "dataloader", "training_utils")


@dataclass
class Project:
    """What a project provides to the runtime."""

    root: Path
    model_classes: dict[str, type]
    dataset_class: type
    losses: dict[str, Callable[..., Any]]
    evals: dict[str, Callable[..., Any]]
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)  # get_project_hooks(); empty without one


def _import(root: Path, name: str) -> ModuleType | None:
    if not (root / f"{name}.py").is_file():
        return None
    cached = sys.modules.get(name)
    if cached is not None and Path(getattr(cached, "__file__", "") or "").resolve() == (root / f"{name}.py").resolve():
        return cached
    sys.modules.pop(name, None)  # another project's module of the same name
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:  # IndentationError and TabError too: in this file or one it imports
        where = f"{exc.filename or root / f'{name}.py'}:{exc.lineno or 1}"
        code = (exc.text or "").strip()
        shown = f" (`{code[:60]}{'...' if len(code) > 60 else ''}`)" if code else ""
        raise UserError(f"{where}: {exc.msg}{shown}; fix the code there") from exc
    except Exception as exc:  # raised while the module ran, e.g. an import of a package not installed
        missing = isinstance(exc, ModuleNotFoundError)
        todo = "install it in this environment or fix the import" if missing else "fix the code"
        raise UserError(
            f"{_where(exc, root / f'{name}.py')}: importing {name}.py failed: {first_line(exc)}; {todo} "
            "(rerun with --debug for the traceback)"
        ) from exc


def _where(exc: BaseException, file: Path) -> str:
    """``file:line`` of the deepest line of the project's ``file`` in ``exc``'s traceback."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == file.resolve()]
    return f"{file}:{lines[-1]}" if lines else str(file)


def project_line(exc: BaseException, root: Path) -> str | None:
    """``path:line`` (relative to ``root``) of the innermost frame of ``exc``'s traceback that lies
    in the project folder ``root`` (not in a virtual environment inside it); None when no frame does."""
    root = root.resolve()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(root) and not {"site-packages", "dist-packages"} & set(path.parts):
            return f"{path.relative_to(root)}:{frame.lineno}"
    return None


def _call(file: Path, what: str, function: Callable[[], Any], expected: str) -> Any:
    """``function()``: reads the project's ``what`` (in ``file``); a failure is one line."""
    try:
        return function()
    except Exception as exc:
        raise UserError(
            f"{_where(exc, file)}: {what} failed: {first_line(exc)}; expected it to return {expected} "
            "(rerun with --debug for the traceback)"
        ) from exc


def load_project(root: Path) -> Project:
    """Import the project in ``root``.

    Raises:
        UserError: when ``models.py`` or ``dataloader.py`` is missing or lacks its entry point.
    """
    root = root.resolve()
    if not root.is_dir():
        raise UserError(f"{root}: project folder not found; pass --project DIR")
    if sys.path[:1] != [str(root)]:  # first: another project's folder put there earlier must not shadow it
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))
    for name in MODULE_NAMES:  # drop other projects' modules before any import (they import each other)
        mod = sys.modules.get(name)
        if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve().parent != root:
            del sys.modules[name]
    models, dataloader = _import(root, "models"), _import(root, "dataloader")
    if models is None or dataloader is None:
        missing = [f"{n}.py" for n, m in (("models", models), ("dataloader", dataloader)) if m is None]
        raise UserError(f"{root}: no {' or '.join(missing)} here; run from the project folder or pass --project DIR")
    if not callable(getattr(models, "get_ref_model_dict", None)):
        raise UserError(f"{root / 'models.py'}: defines no get_ref_model_dict(); add one returning {{'Name': Class}}")
    if not isinstance(getattr(dataloader, "CustomDataSet", None), type):
        raise UserError(f"{root / 'dataloader.py'}: defines no CustomDataSet class")
    model_classes = _call(
        root / "models.py", "get_ref_model_dict()", lambda: dict(models.get_ref_model_dict()), "{'Name': Class}"
    )
    losses: dict = {}
    evals: dict = {}
    utils = _import(root, "training_utils")
    if utils is not None and hasattr(utils, "get_project_loss_and_eval_dict"):

        def both() -> tuple[dict, dict]:
            losses, evals = utils.get_project_loss_and_eval_dict()
            return dict(losses), dict(evals)

        losses, evals = _call(
            root / "training_utils.py", "get_project_loss_and_eval_dict()", both, "two dicts, (losses, evals)"
        )
    hooks = _hooks(root / "training_utils.py", utils) if utils is not None else {}
    return Project(root, model_classes, dataloader.CustomDataSet, losses, evals, hooks)


def _hooks(file: Path, utils: ModuleType) -> dict[str, Callable[..., Any]]:
    """``get_project_hooks()`` of ``training_utils.py``: ``{name: function}`` (empty without one)."""
    if not hasattr(utils, "get_project_hooks"):
        return {}
    expected = "a dict {'Name': function}"
    if not callable(utils.get_project_hooks):
        raise UserError(f"{file}: get_project_hooks is a {type(utils.get_project_hooks).__name__}; expected a function")
    hooks = _call(file, "get_project_hooks()", utils.get_project_hooks, expected)
    if not isinstance(hooks, dict):
        raise UserError(f"{file}: get_project_hooks() returned a {type(hooks).__name__}; expected {expected}")
    for name, fn in hooks.items():
        if not isinstance(name, str) or not callable(fn):
            raise UserError(f"{file}: get_project_hooks() maps {name!r} to a {type(fn).__name__}; expected {expected}")
    return dict(hooks)
