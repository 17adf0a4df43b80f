"""Project hooks (``training_params.hooks``): the project's own functions, called by name during a run.

A project's ``training_utils.py`` may define ``get_project_hooks()`` returning ``{name: function}``;
the config lists the hooks a run uses, each ``{name, event, every, options}``. A hook is called as
``fn(ctx, **options)`` with a :class:`HookContext` after every ``every``-th event:

- ``step``: after a training step whose global step (counted after the step) is a multiple of ``every``;
- ``validation``: after the validations numbered ``every``, ``2 * every``, ... (counted from 1);
- ``epoch``: after an epoch whose number is a multiple of ``every``;
- ``end``: once, at the end of the run.

Hooks of one event run in the config's order, each with every model in eval mode and under
``torch.no_grad()``; afterwards each module's ``training`` flag is what it was. A hook may log
scalars and images through the run's trackers and ask the run to stop (:meth:`HookContext.stop`).
What a hook raises ends the run with one line naming the hook and the project line it came from.
On a data-parallel run hooks run in the main process only, unless the function has an attribute
``all_ranks = True``. :meth:`Hooks.state_dict` holds the event counts and the state of every hook
object with ``state_dict`` / ``load_state_dict`` methods, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlscaffold.config.schema import EVENTS, HookSpec
from dlscaffold.errors import UserError, available, did_you_mean, first_line
from dlscaffold.parts.signatures import kwargs_problem, signature
from dlscaffold.project.code import Project, project_line
from dlscaffold.records import images as image_records
from dlscaffold.records.trackers import Trackers

KEY = "training_params.hooks"


@dataclass
class HookContext:
    """What a hook receives: where the run is, its models, and ways to log and to stop.

    Attributes:
        event: ``step``, ``validation``, ``epoch`` or ``end``.
        epoch: the current epoch (from 1).
        step: the trainer's global step (training steps so far).
        models: the run's models by name (in eval mode while the hook runs).
        outputs: the last training batch's named tensors per model (may be empty).
        values: a validation hook: that validation's values; an epoch hook: the epoch's training
            values; otherwise empty.
        run_dir: the run folder (None when nothing is written).
        trackers: where :meth:`log_scalar` and :meth:`log_image` write (None: nowhere).
        stop_reason: set by :meth:`stop`.
    """

    event: str
    epoch: int
    step: int
    models: dict[str, nn.Module]
    outputs: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    trackers: Trackers | None = None
    stop_reason: str | None = None

    def log_scalar(self, name: str, value: float) -> None:
        """Log ``value`` under the tag ``name`` at the current step, in every tracker."""
        if self.trackers is not None:
            self.trackers.step_scalars(self.step, {name: float(value)})

    def log_image(self, name: str, images: torch.Tensor) -> None:
        """Log the first images of ``images`` side by side under the tag ``name`` at the current step.

        Args:
            images: ``(N, H, W)`` or ``(N, C, H, W)`` with ``C`` 1 or 3, any range (each image is
                scaled to [0, 1] on its own); the first 8 are drawn
                (:func:`dlscaffold.records.images.image_grid`).

        Raises:
            ValueError: when ``images`` is not a batch of images.
        """
        problem = image_records.image_problem(name, images)
        if problem is not None:
            raise ValueError(f"log_image: {problem.removeprefix(image_records.KEY + ': ')}")
        if self.trackers is not None:
            self.trackers.images(self.step, {name: image_records.image_grid(images)})

    def stop(self, reason: str) -> None:
        """Ask the run to stop cleanly after this event (it saves and ends as after its last epoch)."""
        self.stop_reason = str(reason) or "a hook asked to stop"


@dataclass
class _Hook:
    index: int
    spec: HookSpec
    fn: Callable[..., Any]

    @property
    def label(self) -> str:
        return f"{KEY}[{self.index}] ({self.spec.name})"

    @property
    def key(self) -> str:
        return f"{self.index}:{self.spec.name}"


class Hooks:
    """The hooks of one run, counting events and calling the due hooks.

    Args:
        specs: ``training_params.hooks``.
        functions: the project's ``{name: function}`` (``get_project_hooks()``).
        main: this process is the main one (rank 0, or the only one).
        root: the project folder, to name the project line a failing hook raised at.

    Raises:
        UserError: a spec names no function of ``functions`` (checked before by :func:`hook_problems`).

    Example:
        >>> hooks = Hooks(config.training_params.hooks, project.hooks, main=True, root=project.root)
        >>> if hooks.wants("epoch"):
        ...     reason = hooks.fire("epoch", HookContext("epoch", epoch, step, models, values=train_values))
    """

    def __init__(
        self,
        specs: list[HookSpec],
        functions: dict[str, Callable[..., Any]],
        main: bool = True,
        root: Path | None = None,
    ):
        self.root = root
        self.counts = dict.fromkeys(EVENTS, 0)
        problems = [_unknown(i, spec.name, functions) for i, spec in enumerate(specs) if spec.name not in functions]
        if problems:
            raise UserError(*problems)
        self._hooks = [_Hook(i, spec, functions[spec.name]) for i, spec in enumerate(specs)]
        self._runs = {
            event: [h for h in self._hooks if h.spec.event == event and (main or not self.main_only(h.fn))]
            for event in EVENTS
        }
        self._events = frozenset(event for event, hooks in self._runs.items() if hooks)

    @staticmethod
    def main_only(fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` runs in the main process only (unless it has ``all_ranks = True``)."""
        return getattr(fn, "all_ranks", False) is not True

    def wants(self, event: str) -> bool:
        """Whether this process has a hook of ``event``: without one the loop need not build a context."""
        return event in self._events

    def fire(self, event: str, ctx: HookContext) -> str | None:
        """Count ``event`` and call its due hooks in the config's order.

        Returns:
            The reason a hook gave to :meth:`HookContext.stop`, or None.

        Raises:
            UserError: a hook raised; one line naming the hook, the exception and the project line.
        """
        if event not in self._events:
            return None
        self.counts[event] += 1
        due = [h for h in self._runs[event] if _due(h.spec.every, event, ctx, self.counts[event])]
        if due:
            with _evaluating(ctx.models):
                for hook in due:
                    self._call(hook, ctx)
        return ctx.stop_reason

    def _call(self, hook: _Hook, ctx: HookContext) -> None:
        try:
            hook.fn(ctx, **hook.spec.options)
        except UserError as exc:
            raise UserError(*(f"{hook.label}: {problem}" for problem in exc.problems)) from exc
        except Exception as exc:
            line = project_line(exc, self.root) if self.root is not None else None
            at = f" at {line}" if line else ""
            raise UserError(f"{hook.label}: {first_line(exc)}{at} (rerun with --debug for the traceback)") from exc

    def state_dict(self) -> dict[str, Any]:
        """The event counts and each stateful hook object's ``state_dict()``, by ``"<index>:<name>"``."""
        states = {h.key: h.fn.state_dict() for h in self._hooks if _stateful(h.fn)}
        return {"counts": dict(self.counts), "hooks": states}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; a hook the saved run did not have starts afresh."""
        self.counts.update({event: int(n) for event, n in state.get("counts", {}).items() if event in self.counts})
        saved = state.get("hooks", {})
        for hook in self._hooks:
            if _stateful(hook.fn) and hook.key in saved:
                hook.fn.load_state_dict(saved[hook.key])


def build_hooks(config: Any, project: Project, main: bool) -> Hooks:
    """The run's :class:`Hooks` from its config (:class:`dlscaffold.config.Config`) and project."""
    return Hooks(config.training_params.hooks, project.hooks, main=main, root=project.root)


def hook_problems(config: Any, project_hooks: dict[str, Callable[..., Any]] | None) -> list[str]:
    """Every problem of ``training_params.hooks``, one line each: unknown names, options that do not
    fit a function's signature.

    Args:
        config: the validated :class:`dlscaffold.config.Config`, or the raw config mapping (then
            the entries the schema refuses are left to its own problems, the others checked).
        project_hooks: ``get_project_hooks()`` of the project (None or empty: it has none).
    """
    problems = []
    for i, name, options in _entries(config):
        if name not in (project_hooks or {}):
            problems.append(_unknown(i, name, project_hooks or {}))
            continue
        problem = options_problem(project_hooks[name], options, name)
        if problem:
            problems.append(f"{KEY}[{i}].options: {problem}")
    return problems


def _entries(config: Any) -> list[tuple[int, str, dict[str, Any]]]:
    """``(index, name, options)`` of each hook entry of a config or a raw config mapping."""
    if not isinstance(config, dict):
        return [(i, spec.name, spec.options) for i, spec in enumerate(config.training_params.hooks)]
    section = config.get("training_params")
    hooks = section.get("hooks") if isinstance(section, dict) else None
    entries = hooks if isinstance(hooks, list) else []
    return [
        (i, entry["name"], entry.get("options") if isinstance(entry.get("options"), dict) else {})
        for i, entry in enumerate(entries)
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    ]


def options_problem(fn: Callable[..., Any], options: dict[str, Any], name: str) -> str | None:
    """Whether ``fn(ctx, **options)`` fits ``fn``'s signature, in one line (None if it does)."""
    sig = signature(fn)
    if sig is None:
        return None
    first = next(iter(sig.parameters.values()), None)
    if first is None or first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD, first.VAR_POSITIONAL):
        return f"{name} takes no positional argument for the context; expected def {name}(ctx, ...)"
    problem = kwargs_problem(fn, options, name, skip_first=True)
    if problem:
        return problem
    try:
        sig.bind(None, **options)
    except TypeError as exc:
        return f"{name}(ctx, **options) does not fit its signature: {exc}"
    return None


def _unknown(index: int, name: str, functions: dict[str, Callable[..., Any]]) -> str:
    where = f"{KEY}[{index}]"
    if not functions:
        return (
            f"{where}: unknown hook '{name}': training_utils.py defines no get_project_hooks() (or it returns "
            f"no hooks); define it to return {{'{name}': function}}"
        )
    return f"{where}: unknown hook '{name}'; {did_you_mean(name, functions)}{available(functions)}"


def _due(every: int, event: str, ctx: HookContext, count: int) -> bool:
    if event == "step":
        return ctx.step % every == 0
    if event == "epoch":
        return ctx.epoch % every == 0
    return event == "end" or count % every == 0


def _stateful(fn: Any) -> bool:
    return callable(getattr(fn, "state_dict", None)) and callable(getattr(fn, "load_state_dict", None))


@contextlib.contextmanager
def _evaluating(models: dict[str, nn.Module]) -> Iterator[None]:
    """Every model in eval mode and no gradients; then each module's ``training`` flag as it was."""
    flags = [(module, module.training) for model in models.values() for module in model.modules()]
    try:
        for model in models.values():
            model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training
