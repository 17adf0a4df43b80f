"""The errors a user can cause and fix, kept apart from bugs.

The CLI turns a :class:`UserError` into one line per problem on stderr and exit code 2; any other
exception is a bug (ours or in the project's code) and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator, Mapping


class UserError(Exception):
    """A problem with the user's input (config, files, flags) that they can fix.

    Args:
        problems: one line each, naming what was found and what is expected.
    """

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("\n".join(self.problems))


class ConfigError(UserError):
    """Every problem found in a config, reported together."""


class CodeError(Exception):
    """The project's code failed: ``where`` names the piece (``info_flow.Encoder: Encoder.forward``,
    a loss's or eval's key path, the dataset) and ``cause`` is what it raised (also ``__cause__``).

    Messages about a failure during a run say where from this field; the cause's traceback stays
    attached for ``--debug``.
    """

    where = "the project's code"

    def __init__(self, message: str, where: str | None = None, cause: BaseException | None = None):
        super().__init__(message)
        if where is not None:
            self.where = where
        self.cause = cause if cause is not None else self


@contextlib.contextmanager
def blame(where: str) -> Iterator[None]:
    """Run the project's code: anything it raises (but a :class:`UserError`) becomes a
    :class:`CodeError` naming ``where``."""
    try:
        yield
    except (UserError, CodeError):
        raise
    except Exception as exc:
        raise CodeError(f"{where} failed: {first_line(exc)}", where, exc) from exc


def closest(name: str, choices: Iterable[str], synonyms: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """The one of ``choices`` closest to ``name``, if any is close.

    First the choice that differs only in case, then the first of ``synonyms[name]`` (lower case
    keys: what other tools call a setting, e.g. ``{"loggers": ["trackers"]}``) that is a choice,
    then the closest spelling.
    """
    names = [str(c) for c in choices]
    text = str(name)
    folded = [c for c in names if c.lower() == text.lower()]
    if folded:
        return folded[0]
    meant = [m for m in (synonyms or {}).get(text.lower(), ()) if m in names]
    if meant:
        return meant[0]
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, choices: Iterable[str], synonyms: Mapping[str, Iterable[str]] | None = None) -> str:
    """Return ``"did you mean 'x'? "`` for the closest of ``choices`` (see :func:`closest`), or an
    empty string."""
    close = closest(name, choices, synonyms)
    return f"did you mean '{close}'? " if close else ""


def available(choices: Iterable[str]) -> str:
    """Return ``"available: a, b, c"`` (or ``"none available"``)."""
    names = sorted(str(c) for c in choices)
    return "available: " + ", ".join(names) if names else "none available"


class QuietExit(Exception):
    """End the command with ``exit_code`` and print nothing (what went wrong was said elsewhere,
    e.g. by the data-parallel process that failed first)."""

    def __init__(self, exit_code: int):
        super().__init__(f"exit {exit_code}")
        self.exit_code = exit_code


def first_line(exc: BaseException, with_type: bool = True) -> str:
    """``"<ExceptionType>: <first line of its message>"`` (just the type when it has no message);
    ``with_type=False``: the first line alone (the type when there is none)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if not with_type:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
