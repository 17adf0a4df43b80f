"""Dotted command-line overrides: ``key.path=value`` strings, values read as YAML, applied to a raw
config before validation; every malformed override is one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlscaffold.config.paths import PATH_KEYS, _absolute
from dlscaffold.config.yaml_reader import YamlProblem, _cut, parse_yaml
from dlscaffold.errors import ConfigError


def _override_value(item: str, key: str, text: str, cwd: Path) -> Any:
    """An override's value parsed as YAML (an empty value is null); a relative path resolves against ``cwd``."""
    try:
        value = parse_yaml(text, key) if text.strip() else None
    except YamlProblem as exc:
        at = f" (column {exc.column + len(item) - len(text)})" if exc.line == 1 and exc.column else ""
        found = f"invalid YAML value: {exc.message}{at}" if exc.syntax else exc.message
        hint = "" if "; expected" in exc.message else "; expected a YAML value, e.g. 3e-4, true, [1, 2] or 'text'"
        raise ConfigError(f"override '{_cut(item, 80)}': {found}{hint}") from None
    if key.split(".")[-1] in PATH_KEYS and isinstance(value, str):
        value = _absolute(value, cwd)
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str], cwd: Path) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config dict (values parsed as YAML).

    Relative paths given on the command line resolve against ``cwd``, as a shell user expects.
    The result is validated like the file itself, so a misspelled key gets the same error.
    """
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(f"override '{_cut(item, 80)}': expected key.path=value, e.g. training_params.lrn_rate=3e-4")
            continue
        try:
            value = _override_value(item, key.strip(), text, cwd)
        except ConfigError as exc:
            problems += exc.problems
            continue
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(
                    f"override '{_cut(item, 80)}': {'.'.join(parts[: i + 1])} holds a "
                    f"{type(child).__name__}; expected a mapping on the key path"
                )
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(*problems)
    return raw
