"""The run config: the seed's four sections, typed, with dotted command-line overrides.

Reading order: :func:`load_raw` reads the YAML file, applies ``key.path=value`` overrides and
resolves relative paths against the config file's folder (once, here); :func:`validate_raw` checks
the structure (unknown keys with a did-you-mean, types, ranges) and reports every problem at once.
:func:`load_config` does all three. Checks that need the project's code (model, loss and eval
names, ``init_args``, tensor sources) are part of the pre-run phase in :mod:`dlscaffold.prepare`.

This module does not import torch.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dlscaffold.errors import ConfigError, UserError, closest, did_you_mean

# ----------------------------------------------------------------------------------- schema


class _Section(BaseModel):
    # Unknown keys are reported by _unknown_keys (with a did-you-mean), so pydantic ignores them.
    model_config = ConfigDict(extra="ignore", validate_default=True)


def _none_is_empty(value: Any) -> Any:
    """An empty YAML key (``init_args:``) means an empty mapping."""
    return {} if value is None else value


class DataloadingParams(_Section):
    dataset_path: Optional[Path] = None
    val_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    dev_num: int = Field(20, ge=1)
    num_workers: int = Field(0, ge=0)
    batch_size: int = Field(128, ge=1)
    idx_dict_path: Optional[Path] = None
    # Free-form options for the project's CustomDataSet (cfg["dataloading_params"]["dataset_args"]).
    dataset_args: dict[str, Any] = Field(default_factory=dict)

    _empty_dataset_args = field_validator("dataset_args", mode="before")(_none_is_empty)


class OptimizerSpec(_Section):
    """A ``torch.optim`` class by name; ``kwargs`` without ``lr`` take ``lrn_rate``."""

    name: str = "Adam"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SchedulerSpec(_Section):
    """A ``torch.optim.lr_scheduler`` class by name, stepped every epoch or every step."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    interval: Literal["epoch", "step"] = "epoch"


class TrainingParams(_Section):
    seed: int = 4321
    regularization_weight: float = Field(0.0, ge=0.0)
    lrn_rate: float = Field(1e-4, gt=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.99, ge=0.0, lt=1.0)
    max_training_epochs: int = Field(10, ge=1)
    use_dev: bool = False
    use_GPU: bool = True
    # New keys; their defaults keep the seed's behaviour.
    val_every: int = Field(1, ge=1)
    save_every: int = Field(1, ge=1)
    log_every: int = Field(50, ge=1)
    optimizer: Optional[OptimizerSpec] = None
    lr_scheduler: Optional[SchedulerSpec] = None
    grad_clip_norm: Optional[float] = Field(None, gt=0.0)
    # "bf16": forward and losses under torch.autocast with bfloat16 (CPU or GPU; no loss scaling needed).
    precision: Literal["fp32", "bf16"] = "fp32"


class LoggingParams(_Section):
    logging_dir: Path = Path("runs")
    run_notes: str = ""

    @field_validator("run_notes", mode="before")
    @classmethod
    def _notes_to_str(cls, value: Any) -> Any:
        return "" if value is None else str(value) if isinstance(value, (int, float)) else value


class LossSpec(_Section):
    """One loss term. ``inputs`` are passed to the function positionally, in order."""

    logging_name: Optional[str] = None
    weight: float = 1.0
    inputs: dict[str, str] = Field(min_length=1)
    # The registered function; defaults to the entry's key (the seed's form).
    function: Optional[str] = None


class EvalSpec(_Section):
    logging_name: Optional[str] = None
    inputs: dict[str, str] = Field(min_length=1)
    function: Optional[str] = None


class ModelSpec(_Section):
    train: bool = True
    model_dir: Optional[Path] = None
    epoch: int = Field(0, ge=0)
    init_args: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    losses: dict[str, LossSpec] = Field(default_factory=dict)
    evals: dict[str, EvalSpec] = Field(default_factory=dict)

    @field_validator("train", mode="before")
    @classmethod
    def _seed_train_flag(cls, value: Any) -> Any:
        # The seed: "1 = train, otherwise the model will not be trained".
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value == 1
        raise ValueError("expected 1 (train) or 0 (frozen)")

    _empty_mappings = field_validator("init_args", "inputs", "losses", "evals", mode="before")(_none_is_empty)


class Config(_Section):
    dataloading_params: DataloadingParams = Field(default_factory=DataloadingParams)
    training_params: TrainingParams = Field(default_factory=TrainingParams)
    logging_params: LoggingParams = Field(default_factory=LoggingParams)
    info_flow: dict[str, ModelSpec] = Field(min_length=1)

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-safe dict (paths as strings): what ``CustomDataSet(cfg)`` receives."""
        return self.model_dump(mode="json")


_SECTIONS: dict[str, type[BaseModel]] = {
    "dataloading_params": DataloadingParams,
    "training_params": TrainingParams,
    "logging_params": LoggingParams,
}

PATH_KEYS = ("dataset_path", "idx_dict_path", "logging_dir", "model_dir")
# Source names in info_flow inputs: tensors of the dataset's items, and the trainer's clock
# ({epoch: trainer} and {step: trainer}: the current epoch, from 1, and global step).
DATASET = "dataset"
TRAINER = "trainer"
TRAINER_TENSORS = ("epoch", "step")

# ------------------------------------------------------------------------------ reading YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning a missing file or a syntax error into one line."""
    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass the path to a config.yml")
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: found {type(data).__name__}; expected a mapping of sections")
    return data


# ------------------------------------------------------------------------------- overrides


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
            problems.append(f"override '{item}': expected key.path=value, e.g. training_params.lrn_rate=3e-4")
            continue
        value = parse_yaml(text) if text.strip() else None
        if parts[-1] in PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
            value = str((cwd / value).resolve())
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override '{item}': {'.'.join(parts[: i + 1])} is not a mapping")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(*problems)
    return raw


# ------------------------------------------------------------------------------ validation


def _submodel(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("model", cls) for a (maybe Optional) section, ("map", cls) for dict[str, section]."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _submodel(args[0]) if len(args) == 1 else None
    if origin is dict:
        inner = typing.get_args(annotation)[1]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return "map", inner
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    return None


def _unknown_keys(raw: dict, model: type[BaseModel], prefix: str) -> list[tuple[str, str | None]]:
    """Each unknown key as (problem line, the key path it was probably meant to be, or None)."""
    problems: list[tuple[str, str | None]] = []
    fields = model.model_fields
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            home = [name for name, section in _SECTIONS.items() if key in section.model_fields and section is not model]
            close = closest(key, fields)
            hint = f"it belongs in {home[0]}" if home else f"{did_you_mean(key, fields)}expected one of: {', '.join(fields)}"
            problems.append((f"{path}: unknown key; {hint}", f"{prefix}{close}" if close and not home else None))
            continue
        sub = _submodel(fields[key].annotation)
        if sub is None or not isinstance(value, dict):
            continue
        kind, cls = sub
        if kind == "model":
            problems += _unknown_keys(value, cls, f"{path}.")
        else:
            for name, entry in value.items():
                if isinstance(entry, dict):
                    problems += _unknown_keys(entry, cls, f"{path}.{name}.")
    return problems


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _pydantic_problems(exc: ValidationError, meant: set[str]) -> list[str]:
    """One line per pydantic error; a missing key that an unknown key was meant to be is left out
    (a misspelled required key is one mistake: its did-you-mean line says it all)."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            if path not in meant:
                problems.append(f"{path}: missing; this key is required")
            continue
        msg = re.sub(r"^(Value error, |Input should be |Input should have )", "", err["msg"])
        expected = msg if msg.startswith("expected") else f"expected {msg}"
        problems.append(f"{path}: found {_show(err['input'])}; {expected}")
    return problems


def validate_raw(raw: dict[str, Any]) -> tuple[Config | None, list[str]]:
    """Check a raw config dict's structure; return the typed config (or None) and the problems."""
    unknown = _unknown_keys(raw, Config, "")
    problems = [line for line, _ in unknown]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        return None, problems + _pydantic_problems(exc, {meant for _, meant in unknown if meant})
    return (None if problems else config), problems


def resolve_raw_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make every relative path of a raw config absolute against ``base`` (the config file's folder).

    The one place paths are resolved; an empty path means "not set". Values that are not strings
    are left for validation to report.
    """

    def absolute(node: Any, key: str) -> None:
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, (str, Path)):
            path = Path(value).expanduser() if str(value).strip() else None
            node[key] = None if path is None else str(path if path.is_absolute() else (base / path).resolve())

    for section, key in (("dataloading_params", "dataset_path"), ("dataloading_params", "idx_dict_path"),
                         ("logging_params", "logging_dir")):
        absolute(raw.get(section), key)
    flow = raw.get("info_flow")
    for spec in flow.values() if isinstance(flow, dict) else []:
        absolute(spec, "model_dir")
    return raw


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
