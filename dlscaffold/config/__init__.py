"""The config stage: the run config, typed, read from YAML, with dotted command-line overrides.

It owns the schema (the older deep_learning tool's four sections, :mod:`.schema`, with the number
types and the epoch vocabulary of :mod:`.numbers`), the hardened YAML reader (:mod:`.yaml_reader`),
``key.path=value`` overrides (:mod:`.overrides`), relative paths resolved once (:mod:`.paths`), the
structure check (:mod:`.validation`), loading (:mod:`.loading`), the names the runtime gives what a
config holds (:mod:`.names`) and the monitored value that picks the best epoch (:mod:`.monitor`).

Reading order: :func:`load_raw` reads the YAML file, applies ``key.path=value`` overrides and
resolves relative paths against the config file's folder (once, here); :func:`validate_raw` checks
the structure (unknown keys with a did-you-mean, types, ranges) and reports every problem at once.
:func:`load_config` does all three. Checks that need the project's code (model, loss and eval
names, ``init_args``, tensor sources) are part of the pre-run phase in :mod:`dlscaffold.prepare`.

Every problem is one line naming the key path (or ``file:line:column``), what was found and what is
expected: YAML is read with a duplicate-key check and limits on values (aliases counted as what they
repeat), nesting depth and file size; numbers are finite, integers within int64 and never true/false.

It may import only :mod:`dlscaffold.errors`, :mod:`dlscaffold.losses`, :mod:`dlscaffold.modules`,
:mod:`dlscaffold._version` and its own modules, nothing of a later stage; it does not import torch.
Inside it, imports point one way: numbers <- schema <- yaml_reader and validation; overrides takes
the YAML reader and paths, loading takes them all; names and paths import nothing of the stage.
"""

from __future__ import annotations

from dlscaffold.config.loading import dump_config, load_config, load_raw
from dlscaffold.config.names import (
    DATASET,
    RUN_NOTES_BYTES,
    TRAINER,
    TRAINER_TENSORS,
    flatten,
    metric_name,
    safe_run_notes,
    split_source,
)
from dlscaffold.config.numbers import BEST, EPOCHS, INT64_MAX, LAST, Float, Int, parse_epoch, saved_epoch
from dlscaffold.config.overrides import apply_overrides
from dlscaffold.config.paths import PATH_KEYS, resolve_raw_paths
from dlscaffold.config.schema import (
    EMA_KEYS,
    TRACKERS,
    Config,
    DataloadingParams,
    EvalSpec,
    LoggingParams,
    LossSpec,
    ModelSpec,
    OptimizerSpec,
    ParamGroupSpec,
    SchedulerSpec,
    TrainingParams,
)
from dlscaffold.config.validation import validate_raw
from dlscaffold.config.yaml_reader import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    YamlProblem,
    check_config_path,
    not_regular_file,
    parse_yaml,
    read_yaml,
)

__all__ = [
    # numbers and the epoch vocabulary
    "BEST",
    "EPOCHS",
    "INT64_MAX",
    "LAST",
    "Float",
    "Int",
    "parse_epoch",
    "saved_epoch",
    # the schema
    "EMA_KEYS",
    "TRACKERS",
    "Config",
    "DataloadingParams",
    "EvalSpec",
    "LoggingParams",
    "LossSpec",
    "ModelSpec",
    "OptimizerSpec",
    "ParamGroupSpec",
    "SchedulerSpec",
    "TrainingParams",
    # names of what a config holds
    "DATASET",
    "RUN_NOTES_BYTES",
    "TRAINER",
    "TRAINER_TENSORS",
    "flatten",
    "metric_name",
    "safe_run_notes",
    "split_source",
    # the YAML reader
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "YamlProblem",
    "check_config_path",
    "not_regular_file",
    "parse_yaml",
    "read_yaml",
    # overrides, paths, validation and loading
    "PATH_KEYS",
    "apply_overrides",
    "resolve_raw_paths",
    "validate_raw",
    "dump_config",
    "load_config",
    "load_raw",
]
