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


def input_order(fn: Callable[..., Any], keys: list[str], what: str) -> tuple[list[str], str | None]:
    """The order in which a loss, an eval or a metric's ``update`` takes a term's ``inputs``
    (``keys``, as the config lists them), and the problem in one line (None if they fit).

    Inputs are bound by name: a key that names one of ``fn``'s positional parameters goes to that
    parameter, whatever its place in the config (a file written with sorted keys means the same);
    the other keys fill the parameters left, in the config's order. When no key names a parameter
    (the older deep_learning tool's configs), that is the config's order. The inputs must fill the
    first parameters with none left out between them (the call is positional) and every parameter
    without a default; a key naming a keyword-only parameter is an option, not an input.

    Example:
        >>> input_order(LOSSES["MultinomialKL"], ["target_logits", "class_logits"], "MultinomialKL")
        (['class_logits', 'target_logits'], None)
    """
    sig = signature(fn)
    if sig is None:
        return list(keys), None
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    shown = f"{what}({', '.join(names)})"
    options = [k for k in keys if any(p.name == k and p.kind == p.KEYWORD_ONLY for p in params)]
    if options:
        return list(keys), (
            f"'{options[0]}' is a keyword option of {shown}, not a tensor input; "
            f"move it under options (a value), or pass the tensor as one of: {', '.join(names) or 'none'}"
        )
    slots = {names.index(k): k for k in keys if k in names}
    rest = [k for k in keys if k not in names]
    order: list[str] = []
    for i in range(len(names)):
        if i in slots:
            order.append(slots[i])
        elif rest:
            order.append(rest.pop(0))
        else:
            break
    left_out = sorted(set(slots) - set(range(len(order))))
    if slots and left_out:
        gap, named = names[len(order)], ", ".join(repr(names[i]) for i in left_out)
        return list(keys), (
            f"the inputs name {named} of {shown} but none fills '{gap}' before it (the inputs fill its "
            f"arguments from the first on); add an input named '{gap}', or name each input after its argument"
        )
    order += rest  # more inputs than parameters: a *args function takes them, otherwise arity_problem says so
    return order, arity_problem(fn, len(order), what)


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
