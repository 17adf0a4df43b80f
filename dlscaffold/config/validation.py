"""The structure check of a raw config: unknown keys with a did-you-mean (what other tools call the
setting, :data:`SYNONYMS`, or a close spelling) or the section a key belongs in, and pydantic's
errors as one line each naming the key path, what was found and what is expected; every problem is
reported at once.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from dlscaffold.config.schema import Config, DataloadingParams, LoggingParams, TrainingParams
from dlscaffold.errors import closest, did_you_mean

_SECTIONS: dict[str, type[BaseModel]] = {
    "dataloading_params": DataloadingParams,
    "training_params": TrainingParams,
    "logging_params": LoggingParams,
}

# What other tools (and habit) call the config's keys: an unknown key (in lower case) -> the keys it
# may mean, first match in the key's section wins; tried before the closest spelling, which would
# suggest log_images for loggers.
SYNONYMS: dict[str, tuple[str, ...]] = {
    # logging_params
    **dict.fromkeys(("loggers", "logger", "tracker", "tracking", "logging", "log_to", "backends"), ("trackers",)),
    **dict.fromkeys(("log_dir", "logdir", "output_dir", "out_dir", "save_dir", "runs_dir"), ("logging_dir",)),
    **dict.fromkeys(("run_name", "experiment_name", "notes", "tag"), ("run_notes",)),
    **dict.fromkeys(("tracking_uri", "mlflow_tracking_uri"), ("mlflow_uri",)),
    # training_params
    **dict.fromkeys(("lr", "learning_rate", "learningrate", "lrate", "base_lr"), ("lrn_rate",)),
    **dict.fromkeys(
        ("epochs", "max_epochs", "num_epochs", "n_epochs", "nb_epochs", "training_epochs"), ("max_training_epochs",)
    ),
    **dict.fromkeys(("weight_decay", "wd", "l2", "reg_weight", "regularization"), ("regularization_weight",)),
    **dict.fromkeys(
        ("clip_grad_norm", "grad_clip", "gradient_clipping", "max_grad_norm", "clip_norm"), ("grad_clip_norm",)
    ),
    **dict.fromkeys(("scheduler", "lr_schedule", "schedule"), ("lr_scheduler",)),
    **dict.fromkeys(("optim", "opt"), ("optimizer",)),
    **dict.fromkeys(("random_seed", "rng_seed"), ("seed",)),
    **dict.fromkeys(("gpu", "cuda", "use_cuda"), ("use_GPU",)),
    **dict.fromkeys(("amp", "mixed_precision", "dtype"), ("precision",)),
    **dict.fromkeys(("patience", "early_stopping"), ("early_stopping_patience",)),
    **dict.fromkeys(("eval_every", "validate_every", "val_interval", "check_val_every_n_epoch"), ("val_every",)),
    **dict.fromkeys(("checkpoint_every", "save_interval", "save_freq"), ("save_every",)),
    **dict.fromkeys(
        ("accumulate_grad_batches", "gradient_accumulation_steps", "grad_accum", "accumulation_steps"), ("accumulate",)
    ),
    **dict.fromkeys(("callbacks", "callback", "hook"), ("hooks",)),
    **dict.fromkeys(("log_interval", "log_freq", "log_every_n_steps"), ("log_every",)),
    # dataloading_params
    **dict.fromkeys(("batchsize", "bs", "batch"), ("batch_size",)),
    **dict.fromkeys(("workers", "n_workers", "num_worker"), ("num_workers",)),
    **dict.fromkeys(("data_path", "data_dir", "dataset_dir", "data_root", "root"), ("dataset_path",)),
    **dict.fromkeys(("val_split", "validation_split", "val_fraction", "valid_ratio"), ("val_ratio",)),
    **dict.fromkeys(("split_path", "split_file", "idx_dict"), ("idx_dict_path",)),
    # a model, a loss or an eval in info_flow
    **dict.fromkeys(("trainable", "trained"), ("train",)),
    **dict.fromkeys(("kwargs", "args", "params", "model_args"), ("init_args", "options")),
    **dict.fromkeys(("checkpoint", "weights", "pretrained"), ("model_dir",)),
    **dict.fromkeys(("loss", "criterion"), ("losses",)),
    **dict.fromkeys(("metrics", "eval", "metric"), ("evals",)),
    **dict.fromkeys(("name", "log_name"), ("logging_name", "run_notes")),
    **dict.fromkeys(("loss_weight", "coef", "coefficient"), ("weight",)),
}


def _submodel(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("model", cls) for a (maybe Optional) section, ("map", cls) for dict[str, section], ("list",
    cls) for list[section] (e.g. ``training_params.hooks``)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _submodel(args[0]) if len(args) == 1 else None
    if origin in (dict, list):
        inner = typing.get_args(annotation)[-1]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return ("map" if origin is dict else "list"), inner
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
            close = closest(key, fields, SYNONYMS)
            meant = did_you_mean(key, fields, SYNONYMS) or _elsewhere(key, model)
            hint = f"it belongs in {home[0]}" if home else f"{meant}expected one of: {', '.join(fields)}"
            problems.append((f"{path}: unknown key; {hint}", f"{prefix}{close}" if close and not home else None))
            continue
        sub = _submodel(fields[key].annotation)
        if sub is None:
            continue
        kind, cls = sub
        if (
            cls.model_config.get("extra") == "allow"
        ):  # its other keys are meant (e.g. a param group's optimizer settings)
            continue
        if kind == "model" and isinstance(value, dict):
            problems += _unknown_keys(value, cls, f"{path}.")
        elif kind == "map" and isinstance(value, dict):
            for name, entry in value.items():
                if isinstance(entry, dict):
                    problems += _unknown_keys(entry, cls, f"{path}.{name}.")
        elif kind == "list" and isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, dict):
                    problems += _unknown_keys(entry, cls, f"{path}[{i}].")
    return problems


def _elsewhere(key: str, model: type[BaseModel]) -> str:
    """``"did you mean 'dataloading_params.batch_size'? "`` when a synonym of ``key`` is a key of
    another section (``training_params.batchsize``), or an empty string."""
    for name, section in _SECTIONS.items():
        meant = [m for m in SYNONYMS.get(key.lower(), ()) if m in section.model_fields]
        if meant and section is not model:
            return f"did you mean '{name}.{meant[0]}'? "
    return ""


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


# pydantic errors whose own words name Python classes: what a config is expected to hold instead
_EXPECTED = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a path (text)",
    "too_short": "at least one entry",
}


def _key_path(loc: list[Any]) -> str:
    """A pydantic error location as the config's key path: ``training_params.hooks[0].event``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _pydantic_problems(exc: ValidationError, meant: set[str]) -> list[str]:
    """One line per pydantic error; a missing key that an unknown key was meant to be is left out
    (a misspelled required key is one mistake: its did-you-mean line says it all)."""
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        if loc[-1:] == ["[key]"]:  # a mapping's key: e.g. init_args: {1: 2} is init_args.1
            path = ".".join(str(part) for part in loc[:-1])
        else:
            path = _key_path(loc)
        if err["type"] == "missing":
            if path not in meant:
                problems.append(f"{path}: missing; this key is required")
            continue
        if loc[-1:] == ["[key]"]:  # e.g. init_args: {1: 2}
            problems.append(
                f"{path}: found the key {_show(err['input'])}; expected text keys (quote it: '{err['input']}')"
            )
            continue
        msg = re.sub(r"^(Value error, |Input should be |Input should have )", "", err["msg"])
        expected = (
            f"expected {_EXPECTED[err['type']]}"
            if err["type"] in _EXPECTED
            else msg
            if msg.startswith("expected")
            else f"expected {msg}"
        )
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
    return config, problems  # unknown keys are ignored by the schema: the other checks still run
