"""Named losses and evals: the built-ins plus a project's own, with helpful errors.

A registry is a small dict. Registering a name twice is an error (a project cannot silently
replace a built-in), and a lookup of an unknown name says "did you mean ...? available: ...".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dlscaffold.errors import UserError, available, did_you_mean


class Registry:
    """A named collection of callables.

    Example:
        >>> losses = Registry("loss")
        >>> losses.register("Zero", lambda x: x * 0)
        >>> "Zero" in losses
        True
    """

    def __init__(self, kind: str, entries: dict[str, Callable[..., Any]] | None = None):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        for name, fn in (entries or {}).items():
            self.register(name, fn)

    def register(self, name: str, fn: Callable[..., Any], origin: str = "") -> None:
        if name in self._entries:
            taken = self._entries[name]
            what = f"{getattr(taken, '__module__', '')}.{getattr(taken, '__qualname__', '')}".strip(".")
            builtin = what.startswith("dlscaffold.")
            raise UserError(
                f"{origin or self.kind}: {self.kind} '{name}' is already registered: it collides with the "
                f"{'built-in' if builtin else 'registered'} {self.kind} {what}; choose another name"
            )
        if not callable(fn):
            raise UserError(f"{origin or self.kind}: {self.kind} '{name}' is {type(fn).__name__}; expected a function")
        self._entries[name] = fn

    def unknown(self, name: str) -> str:
        """The message for an unknown name: what was asked, a close match and the choices."""
        return f"unknown {self.kind} '{name}'; {did_you_mean(name, self._entries)}{available(self._entries)}"

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise UserError(self.unknown(name))
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)


def build_registries(project_losses: dict, project_evals: dict) -> tuple[Registry, Registry]:
    """The built-in losses and evals with a project's added; a clash with a built-in is an error."""
    import dlscaffold.losses as builtin

    loss_registry = Registry("loss", builtin.LOSSES)
    eval_registry = Registry("eval", builtin.EVALS)
    origin = "training_utils.py: get_project_loss_and_eval_dict()"
    for name, fn in project_losses.items():
        loss_registry.register(name, fn, origin)
    for name, fn in project_evals.items():
        eval_registry.register(name, fn, origin)
    return loss_registry, eval_registry
