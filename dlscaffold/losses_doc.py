"""Write the reference page of the built-in losses and evals from their declarations.

``python -m dlscaffold.losses_doc > docs/losses.md`` regenerates ``docs/losses.md``; a test fails
when the page and the registry disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from dlscaffold.losses import EVALS, LOSSES, Input, Spec, spec_of

_KIND_TEXT = {
    "float": "float",
    "number": "",
    "class": "integers in [0, K)",
    "positive": "float, positive",
    "unit": "in [0, 1]",
    "binary": "0 or 1",
}

_INTRO = """\
# Built-in losses and evals

Generated from the registry and the built-ins' declarations (`dlscaffold/losses.py`) by
`python -m dlscaffold.losses_doc > docs/losses.md`; do not edit.

A term's `inputs` in the config bind to the arguments listed here by name (a key that names an
argument), in any order; keys that name no argument fill the rest in the order listed. Every
built-in returns one value per sample; the runtime weights losses, averages over samples and logs.

Shapes: `B` batch, `K` classes, `E` ensemble members, `*D` any further dimensions (possibly none),
the same ones wherever they appear in one row. Before the first epoch one batch is checked against
these declarations (`dlscaffold.losses.check_inputs`), and a built-in never broadcasts: shapes that
do not fit (a `(B, 1)` prediction against a `(B,)` target) stop the run with a one-line message
such as `expected prediction and target of the same shape; found (4, 1) and (4,)`.

Options (`options:` on the term, e.g. `MultinomialNLL: {options: {label_smoothing: 0.2}, ...}`)
are keyword arguments of the function, listed with their defaults; any other key is refused
before the run starts.

Ensemble built-ins also give each member's value, `(B, E)`, logged as `<logging_name>_<i>` beside
the ensemble's own (`dlscaffold.losses.members_fn`). Ensemble losses sum the members' losses, so
each member trains as it would alone.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _input_text(arg: Input) -> str:
    return " ".join(filter(None, (f"`{arg.name}`", arg.shape_text, _KIND_TEXT[arg.kind])))


def _options_text(fn: Callable) -> str:
    """The keyword-only parameters of a built-in, with their defaults: its ``options``."""
    params = inspect.signature(fn).parameters.values()
    return ", ".join(f"`{p.name}: {p.default!r}`" for p in params if p.kind == p.KEYWORD_ONLY) or "none"


def _row(name: str, fn: Callable, spec: Spec) -> str:
    inputs = "; ".join(_input_text(i) for i in spec.inputs)
    output = spec.output + (f"; members (B, E): {spec.members}" if spec.members else "")
    return f"| `{name}` | {_cell(inputs)} | {_cell(output)} | {_cell(spec.formula)} | {_options_text(fn)} |"


def _table(title: str, entries: dict[str, Callable]) -> list[str]:
    header = "| name | inputs, in order | output | value per sample | options |"
    lines = [f"## {title}", "", header, "| --- | --- | --- | --- | --- |"]
    for name, fn in entries.items():
        spec = spec_of(fn)
        if spec is None:
            raise ValueError(f"built-in '{name}' has no declaration; declare it with dlscaffold.losses.declare")
        lines.append(_row(name, fn, spec))
    return lines + [""]


def reference_markdown() -> str:
    """The whole page ``docs/losses.md``: every built-in loss and eval, its inputs, output and formula."""
    return "\n".join([_INTRO, *_table("Losses", LOSSES), *_table("Evals", EVALS)])


if __name__ == "__main__":
    print(reference_markdown(), end="")
