"""Relative paths in a config, made absolute once: against the config file's folder for the file's
paths (:func:`resolve_raw_paths`), against the working folder for a path given as an override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The keys that hold paths (an override of one resolves against the working folder).
PATH_KEYS = ("dataset_path", "idx_dict_path", "logging_dir", "model_dir")


def _absolute(value: str, base: Path) -> str | None:
    """``value`` as an absolute path against ``base`` ("" means not set: None). A path the
    filesystem cannot take (a NUL character) is left for validation to report."""
    if not value.strip():
        return None
    try:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    except (OSError, RuntimeError, ValueError):
        return value


def resolve_raw_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make every relative path of a raw config absolute against ``base`` (the config file's folder).

    The one place paths are resolved; an empty path means "not set". Values that are not strings
    are left for validation to report.
    """

    def absolute(node: Any, key: str) -> None:
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, (str, Path)):
            node[key] = _absolute(str(value), base)

    for section, key in (
        ("dataloading_params", "dataset_path"),
        ("dataloading_params", "idx_dict_path"),
        ("logging_params", "logging_dir"),
    ):
        absolute(raw.get(section), key)
    flow = raw.get("info_flow")
    for spec in flow.values() if isinstance(flow, dict) else []:
        absolute(spec, "model_dir")
    return raw
