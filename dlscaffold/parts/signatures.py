"""Whether a callable accepts the arguments a config gives it, read from its signature.

The pre-run checks use these on model constructors and ``forward`` methods, losses, evals and
torch's optimizer and scheduler classes, without calling them. A callable with no readable
signature (some builtins) accepts anything.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dlscaffold.errors import did_you_mean


def signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``inspect.signature(fn)``, or None when it has none."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: accept anything
        return None


def kwargs_problem(fn: Callable[..., Any], kwargs: dict, what: str, skip_first: bool = False) -> str | None:
    """Unexpected and missing keyword arguments of ``fn``, in one line (None if they fit)."""
    sig = signature(fn)
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


def options_problem(fn: Callable[..., Any], options: dict, num_inputs: int, what: str) -> str | None:
    """Whether ``fn`` takes ``options`` as keyword arguments after ``num_inputs`` positional inputs
    (None if it does): each must name a parameter with a default that no input fills."""
    sig = signature(fn)
    if sig is None:
        return None
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    filled = {p.name for p in positional[:num_inputs]}
    names = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty and p.name not in filled
    ]
    for key in options:
        if key not in names:
            hint = did_you_mean(key, names).strip()
            accepted = f"its options: {', '.join(names)}" if names else "it takes no options"
            return f"'{key}' is not an option of {what} ({hint + '; ' if hint else ''}{accepted})"
    return None


def arity_problem(fn: Callable[..., Any], count: int, what: str) -> str | None:
    """Whether ``fn`` accepts ``count`` positional arguments (None if it does)."""
    sig = signature(fn)
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
