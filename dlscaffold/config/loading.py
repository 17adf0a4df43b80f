"""Loading a config: read the YAML file, apply overrides, resolve relative paths (:func:`load_raw`),
validate (:func:`load_config`), and write the resolved config back as YAML (:func:`dump_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dlscaffold.config.overrides import apply_overrides
from dlscaffold.config.paths import resolve_raw_paths
from dlscaffold.config.schema import Config
from dlscaffold.config.validation import validate_raw
from dlscaffold.config.yaml_reader import read_yaml
from dlscaffold.errors import ConfigError


def load_raw(path: Path, overrides: list[str] = (), cwd: Path | None = None) -> dict[str, Any]:
    """Read the YAML file, apply overrides and resolve relative paths, without validating."""
    raw = apply_overrides(read_yaml(path), list(overrides), cwd or Path.cwd())
    return resolve_raw_paths(raw, path.resolve().parent)


def load_config(path: Path, overrides: list[str] = (), cwd: Path | None = None) -> Config:
    """Read, override, resolve and validate a config file (structure only, no project code).

    Args:
        path: the YAML file.
        overrides: ``key.path=value`` strings, applied before validation.
        cwd: folder that relative override paths resolve against (default: the working dir).

    Raises:
        ConfigError: with every structural problem, one line each.
    """
    config, problems = validate_raw(load_raw(path, overrides, cwd))
    if problems:
        raise ConfigError(*problems)
    return config


def dump_config(config: Config) -> str:
    """The resolved config as YAML; reading it back gives the same run."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
