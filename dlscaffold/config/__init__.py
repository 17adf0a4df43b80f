"""The run config: the older deep_learning tool's four sections, typed, with dotted command-line overrides.

Reading order: :func:`load_raw` reads the YAML file, applies ``key.path=value`` overrides and
resolves relative paths against the config file's folder (once, here); :func:`validate_raw` checks
the structure (unknown keys with a did-you-mean, types, ranges) and reports every problem at once.
:func:`load_config` does all three. Checks that need the project's code (model, loss and eval
names, ``init_args``, tensor sources) are part of the pre-run phase in :mod:`dlscaffold.prepare`.

Every problem is one line naming the key path (or ``file:line:column``), what was found and what is
expected: YAML is read with a duplicate-key check and limits on values (aliases counted as what they
repeat), nesting depth and file size; numbers are finite, integers within int64 and never true/false.

This module does not import torch.
"""

from __future__ import annotations

import math
import re
import stat
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from dlscaffold.errors import ConfigError, UserError, available, closest, did_you_mean

# ----------------------------------------------------------------------------------- schema

INT64_MAX = 2**63 - 1
RUN_NOTES_BYTES = 100  # the most of run_notes a run folder's name takes


def _whole_number(value: Any) -> Any:
    """Integers: true/false is refused (pydantic would read it as 1/0), a whole float such as
    ``1e3`` is read as 1000 (and refused beyond int64)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not true/false")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) > INT64_MAX:
            raise ValueError(f"expected an integer of at most {INT64_MAX}")
        return int(value)
    return value


def _real_number(value: Any) -> Any:
    """Floats: true/false is refused, an integer beyond a float's range is not finite."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    if isinstance(value, int) and not -1e308 < value < 1e308:
        raise ValueError("expected a finite number")
    return value


Int = Annotated[int, BeforeValidator(_whole_number)]
Float = Annotated[float, BeforeValidator(_real_number)]


BEST, LAST = "best", "last"
EPOCHS = f"a saved epoch number, {BEST} or {LAST}"  # what parse_epoch accepts, for messages


def parse_epoch(value: int | str, what: str = "--epoch") -> int | str:
    """``"best"``, ``"last"`` or a saved epoch number (an int, or its digits as text): the one
    reader of the epoch vocabulary, for ``--epoch``, ``load_run(epoch=...)`` and
    ``info_flow.<Model>.epoch`` (also importable from :mod:`dlscaffold.records.runfiles`).

    Returns:
        ``"best"``, ``"last"`` or the epoch as an int.

    Raises:
        UserError: one line naming ``what`` for anything else (a negative number, ``"first"``, ...).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value in (BEST, LAST):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    shown = f"'{value}'" if isinstance(value, str) else repr(value)
    raise UserError(f"{what}: found {shown}; expected {EPOCHS}")


def saved_epoch(value: Any) -> int | str:
    """``info_flow.<Model>.epoch``: read by :func:`parse_epoch` as ``--epoch`` is (a whole float
    such as ``2.0`` is 2); prepare() resolves ``best`` and ``last`` to a number."""
    value = _whole_number(value)
    try:
        epoch = parse_epoch(value)
    except UserError:
        raise ValueError(f"expected {EPOCHS}") from None
    if isinstance(epoch, int) and epoch > INT64_MAX:
        raise ValueError(f"expected an epoch number of at most {INT64_MAX}")
    return epoch


def _none_is_empty(value: Any) -> Any:
    """An empty YAML key (``init_args:``) means an empty mapping."""
    return {} if value is None else value


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise ValueError("expected a path without NUL characters")
    return value


class _Section(BaseModel):
    # Unknown keys are reported by _unknown_keys (with a did-you-mean), so pydantic ignores them.
    # Numbers are finite; nan and inf in free-form mappings (dataset_args) are passed on as they are.
    model_config = ConfigDict(extra="ignore", validate_default=True, allow_inf_nan=False, ser_json_inf_nan="constants")


class DataloadingParams(_Section):
    dataset_path: Path | None = None
    val_ratio: Float = Field(0.05, ge=0.0, lt=1.0)
    dev_num: Int = Field(20, ge=1, le=INT64_MAX)
    num_workers: Int = Field(0, ge=0, le=256)
    batch_size: Int = Field(128, ge=1, le=INT64_MAX)
    idx_dict_path: Path | None = None
    # Stack each split once on the run's device and batch by index selection (no DataLoader).
    device_data: bool = False
    # Training points a model's init_from_data(**inputs) receives once, before a fresh run's first epoch.
    init_samples: Int = Field(5000, ge=1, le=INT64_MAX)
    # Free-form options for the project's CustomDataSet (cfg["dataloading_params"]["dataset_args"]).
    dataset_args: dict[str, Any] = Field(default_factory=dict)

    _empty_dataset_args = field_validator("dataset_args", mode="before")(_none_is_empty)
    _paths = field_validator("dataset_path", "idx_dict_path", mode="before")(_no_nul)


class OptimizerSpec(_Section):
    """A ``torch.optim`` class by name; ``kwargs`` without ``lr`` take ``lrn_rate``."""

    name: str = "Adam"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    _empty_kwargs = field_validator("kwargs", mode="before")(_none_is_empty)


class SchedulerSpec(_Section):
    """A ``torch.optim.lr_scheduler`` class by name, stepped every epoch or every step."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    interval: Literal["epoch", "step"] = "epoch"

    _empty_kwargs = field_validator("kwargs", mode="before")(_none_is_empty)


class TrainingParams(_Section):
    seed: Int = Field(4321, ge=0, le=INT64_MAX)
    regularization_weight: Float = Field(0.0, ge=0.0)
    lrn_rate: Float = Field(1e-4, gt=0.0)
    beta1: Float = Field(0.9, ge=0.0, lt=1.0)
    beta2: Float = Field(0.99, ge=0.0, lt=1.0)
    max_training_epochs: Int = Field(10, ge=1, le=INT64_MAX)
    use_dev: bool = False
    use_GPU: bool = True
    # New keys; their defaults keep the older tool's behaviour.
    val_every: Int = Field(1, ge=1, le=INT64_MAX)
    save_every: Int = Field(1, ge=1, le=INT64_MAX)
    log_every: Int = Field(50, ge=1, le=INT64_MAX)
    optimizer: OptimizerSpec | None = None
    lr_scheduler: SchedulerSpec | None = None
    grad_clip_norm: Float | None = Field(None, gt=0.0)
    # "bf16": forward and losses under torch.autocast with bfloat16 (CPU or GPU; no loss scaling needed);
    # "fp16": autocast with float16 and a gradient scaler (its state is in the trainer checkpoint).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # A step whose loss or gradients are NaN/inf is never applied; "stop" ends the run (saving the
    # batch as nonfinite_batch.pt), "skip" drops the step and counts it.
    on_nonfinite: Literal["stop", "skip"] = "stop"
    # The best checkpoint: "<Model>/<logging_name>" of a loss or eval, or "total" (the weighted sum
    # of the losses, logged as total_loss), read on the validation split; default: the first loss of
    # the first trained model. monitor_mode: min for a loss or total, max for an eval.
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] | None = None
    # Stop after this many validations without improvement of the monitored value; empty: never.
    early_stopping_patience: Int | None = Field(None, ge=1, le=INT64_MAX)
    # Speed: torch.compile each trained model; channels-last memory format for models and 4-D inputs.
    compile: bool = False
    channels_last: bool = False
    # Speed on the CPU: glibc's malloc keeps freed memory for the next step instead of mapping large
    # tensors afresh each step (dlscaffold.build.device.kept_cpu_memory).
    keep_cpu_memory: bool = False
    # Data-parallel training (torchrun): the process-group backend (default: nccl when every process
    # has a CUDA device, else gloo), DDP's find_unused_parameters, and BatchNorm synchronised across processes.
    backend: Literal["nccl", "gloo"] | None = None
    find_unused_parameters: bool = False
    sync_batchnorm: bool = False
    # Test-time augmentation: "<Model>.<output>" averaged over CustomDataSet.tta_views(batch) in
    # validation and evaluation; empty: none.
    tta_outputs: list[str] = Field(default_factory=list)
    # In a cluster job whose environment has SLURM_JOB_END_TIME: stop this many seconds before it,
    # saving the run's exact position, in case the scheduler's signal never comes.
    stop_before_end: Float = Field(120.0, ge=0.0)


TRACKERS = ("tensorboard", "mlflow")  # logging_params.trackers: dlscaffold.records.trackers opens them


class LoggingParams(_Section):
    logging_dir: Path = Path("runs")
    run_notes: str = ""
    # Tensors logged as images to TensorBoard at each validation (the first 8 validation samples):
    # "<Model>.<output>" or "dataset.<key>".
    log_images: list[str] = Field(default_factory=list)
    # Where a run's scalars go beside metrics.jsonl (always written): "tensorboard", "mlflow".
    trackers: list[str] = Field(default_factory=lambda: ["tensorboard"])
    # MLflow's tracking URI; default: a SQLite file in logging_dir (sqlite:///<logging_dir>/mlflow.db).
    mlflow_uri: str | None = None
    # Without a terminal (a job's log): a plain progress line every this many seconds of a pass; 0: none.
    progress_every: Float = Field(30.0, ge=0.0)

    _path = field_validator("logging_dir", mode="before")(_no_nul)

    @field_validator("trackers")
    @classmethod
    def _known_trackers(cls, names: list[str]) -> list[str]:
        import importlib.util

        for name in names:
            if name not in TRACKERS:
                raise ValueError(f"unknown tracker '{name}'; {did_you_mean(name, TRACKERS)}{available(TRACKERS)}")
            if name == "mlflow" and importlib.util.find_spec("mlflow") is None:
                raise ValueError("the mlflow tracker needs MLflow: pip install 'dlscaffold[mlflow]'")
        if len(set(names)) < len(names):
            raise ValueError("a tracker is named twice")
        return names

    @field_validator("run_notes", mode="before")
    @classmethod
    def _notes_to_str(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # run_notes: 3
        return value


def metric_name(model: str, key: str, term: Any) -> str:
    """``<Model>/<logging_name>``: the name a loss or eval is logged under (``logging_name``
    defaults to the entry's key) in metrics.jsonl, the trackers, ``monitor`` and ``evaluate``."""
    return f"{model}/{term.logging_name or key}"


def safe_run_notes(text: str) -> str:
    """``run_notes`` as part of a folder name: every run of characters other than letters, digits,
    ``.``, ``-`` and ``_`` becomes ``_``, and a long note is cut (not refused) to at most
    :data:`RUN_NOTES_BYTES` bytes of UTF-8, never inside a character."""
    notes = re.sub(r"[^\w.-]+", "_", text.strip()).strip("_")
    return notes.encode("utf-8")[:RUN_NOTES_BYTES].decode("utf-8", "ignore").rstrip("_")


class LossSpec(_Section):
    """One loss term. ``inputs`` are passed to the function positionally, in order."""

    logging_name: str | None = None
    weight: Float = 1.0
    inputs: dict[str, str] = Field(min_length=1)
    # The registered function; defaults to the entry's key (the older tool's form).
    function: str | None = None
    # The models whose parameters this loss updates; default: every trained model it reaches.
    trains: list[str] | None = None
    # Keyword options of the function (``label_smoothing`` of MultinomialNLL), checked against its signature.
    options: dict[str, Any] = Field(default_factory=dict)

    _empty_options = field_validator("options", mode="before")(_none_is_empty)


class EvalSpec(_Section):
    logging_name: str | None = None
    inputs: dict[str, str] = Field(min_length=1)
    function: str | None = None
    # Constructor arguments of a ``torchmetrics.<Class>`` eval (an epoch-level metric).
    init_args: dict[str, Any] = Field(default_factory=dict)
    # Keyword options of a function eval, as for losses.
    options: dict[str, Any] = Field(default_factory=dict)

    _empty_init_args = field_validator("init_args", mode="before")(_none_is_empty)
    _empty_options = field_validator("options", mode="before")(_none_is_empty)


class ParamGroupSpec(_Section):
    """A group of a model's parameters (``param_groups``): a glob over ``named_parameters()``, a
    factor on the optimizer's learning rate, the epochs it trains in; other keys go to the
    optimizer's group as they are (``weight_decay``, ``momentum``)."""

    model_config = ConfigDict(extra="allow")
    params: str
    lr_scale: Float = Field(1.0, gt=0.0)
    epochs: Annotated[list[Int], Field(min_length=2, max_length=2)] | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The keys passed to the optimizer's group."""
        return dict(self.model_extra or {})


EMA_KEYS = ("ema_of", "decay", "every", "decay_ramp", "write_back")


class ModelSpec(_Section):
    train: bool = True
    model_dir: Path | None = None
    # best / last: prepare() resolves them to the number, which the run's config.yml records.
    epoch: Annotated[int | Literal["best", "last"], BeforeValidator(saved_epoch)] = 0
    init_args: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    losses: dict[str, LossSpec] = Field(default_factory=dict)
    evals: dict[str, EvalSpec] = Field(default_factory=dict)
    # Per-model optimization (docs/several_models.md); unset: training_params' settings, every step.
    optimizer: OptimizerSpec | None = None
    lr_scheduler: SchedulerSpec | None = None
    grad_clip_norm: Float | None = Field(None, gt=0.0)
    update_every: Int = Field(1, ge=1, le=INT64_MAX)
    param_groups: list[ParamGroupSpec] = Field(default_factory=list)
    # An EMA model (dlscaffold.build.ema): a copy of the model ``ema_of`` names holding its moving average.
    ema_of: str | None = None
    decay: Float = Field(0.999, ge=0.0, le=1.0)
    every: Int = Field(1, ge=1, le=INT64_MAX)
    decay_ramp: Float = Field(0.0, ge=0.0)
    write_back: bool = False

    _path = field_validator("model_dir", mode="before")(_no_nul)

    @model_validator(mode="after")
    def _ema_is_not_trained(self) -> ModelSpec:
        if self.ema_of is not None:
            self.train = False  # never trained by gradients (prepare refuses a train: 1)
        return self

    @model_serializer(mode="wrap")
    def _without_ema_keys(self, handler: Any) -> dict[str, Any]:
        # A model that is not an EMA model is written without the EMA keys (a run's config.yml).
        data = handler(self)
        if self.ema_of is None:
            for key in EMA_KEYS:
                data.pop(key, None)
        return data

    @field_validator("train", mode="before")
    @classmethod
    def _seed_train_flag(cls, value: Any) -> Any:
        # The older tool: "1 = train, otherwise the model will not be trained".
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

    # A section with every key commented out (``logging_params:``) takes the defaults.
    _empty_sections = field_validator("dataloading_params", "training_params", "logging_params", mode="before")(
        _none_is_empty
    )

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


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one dict with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); an empty
    mapping and every other value (lists too) are kept as they are. The MLflow params, the config
    changes an update lists and ``load_runs``' ``config.*`` columns are these keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def split_source(source: str, models: Any = ()) -> tuple[str, str | None]:
    """An ``inputs`` source as (where from, tensor name): ``"Encoder"`` -> ``("Encoder", None)``
    (the tensor named like the argument), ``"Encoder.latent"`` -> ``("Encoder", "latent")``,
    ``"dataset.image"`` -> ``("dataset", "image")``. A model in ``models`` whose name holds a dot is
    that model."""
    if source in models or "." not in source:
        return source, None
    where, _, tensor = source.partition(".")
    return where, tensor


# ------------------------------------------------------------------------------ reading YAML

# Limits that keep a broken or hostile file from exhausting memory or the stack: values in all
# (an alias counts as every value it repeats, so an alias bomb is refused before it is expanded),
# nesting depth (well inside Python's recursion limit) and file size.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 100
MAX_CONFIG_BYTES = 10 * 2**20
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN = "expected plain values: strings, numbers, true/false, null, lists and mappings"
_SURROGATE = re.compile("[\ud800-\udfff]")


class YamlProblem(Exception):
    """YAML text that cannot be read: what is wrong, and where (1-based line and column, if known).

    ``syntax`` is true for errors of the YAML text itself (reported as "invalid YAML"), false for
    the limits and checks of this module.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None, syntax: bool = False):
        super().__init__(message)
        self.message, self.line, self.column, self.syntax = message, line, column, syntax


class _Refused(yaml.MarkedYAMLError):
    """A limit or check of this module, raised while composing or constructing."""


def _cut(text: Any, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


class _Loader(yaml.SafeLoader):
    """SafeLoader with the limits above and a duplicate-key check; it also reads ``1e-4`` as a
    float (YAML 1.1 wants ``1.0e-4``), leaves dates as strings and reads every key as text (keys
    are names: a model ``3:``, an init_args key ``true:``)."""

    def __init__(self, stream: str, root: str = ""):
        super().__init__(stream)
        self._nodes = 0
        self._path: list[Any] = [root] if root else []  # keys (and list indices) down to the node being composed
        self._open: set[str | None] = set()  # anchors of the nodes being composed
        self._sizes: dict[str, int] = {}  # anchor -> the number of values it stands for
        self._where: dict[int, str] = {}  # id(mapping node) -> its key path

    def _count(self, size: int, event: Any) -> None:
        self._nodes += size
        if self._nodes > MAX_YAML_NODES:
            raise _Refused(
                problem=f"found more than {MAX_YAML_NODES} values (an alias counts as every value it "
                f"repeats); expected at most {MAX_YAML_NODES}",
                problem_mark=event.start_mark,
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            if anchor in self._open:
                raise _Refused(
                    problem=f"alias *{anchor} repeats a value that contains it; expected no recursive aliases",
                    problem_mark=event.start_mark,
                )
            self._count(self._sizes.get(anchor, 1), event)
            return super().compose_node(parent, index)
        self._count(1, event)
        if len(self._path) >= MAX_YAML_DEPTH:
            raise _Refused(
                problem=f"found values nested more than {MAX_YAML_DEPTH} levels deep; expected at most "
                f"{MAX_YAML_DEPTH}",
                problem_mark=event.start_mark,
            )
        start = self._nodes
        self._open.add(anchor)
        self._path.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        node = super().compose_node(parent, index)
        if isinstance(node, yaml.ScalarNode) and _SURROGATE.search(node.value):  # "\\ud800": no UTF-8 for it
            raise _Refused(
                problem="found an escaped surrogate (\\ud800 to \\udfff), which is no character; expected "
                "text that UTF-8 can hold",
                problem_mark=node.start_mark,
            )
        if isinstance(node, yaml.MappingNode):
            self._where[id(node)] = ".".join(str(part) for part in self._path if part is not None)
        self._path.pop()
        self._open.discard(anchor)
        if anchor is not None:
            self._sizes[anchor] = self._nodes - start + 1
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):  # a key given twice is an error, not a silent overwrite
            seen: dict[Any, Any] = {}
            for i, (key_node, value_node) in enumerate(node.value):
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _STR_TAG:  # keys are names: "3:" is "3"
                    key_node = yaml.ScalarNode(_STR_TAG, key_node.value, key_node.start_mark, key_node.end_mark)
                    node.value[i] = (key_node, value_node)
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # an unhashable key: SafeConstructor reports it
                if first is not key_node.start_mark:
                    parent = self._where.get(id(node), "")
                    raise _Refused(
                        problem=f"{parent + '.' if parent else ''}{key}: duplicate key (first at line "
                        f"{first.line + 1}); expected each key once",
                        problem_mark=key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # e.g. "!!int abc", 5000 digits
            kind = node.tag.rsplit(":", 1)[-1]
            reason = "" if isinstance(exc, KeyError) else f" ({_cut(str(exc).split(': ')[0], 80)})"
            raise _Refused(
                problem=f"found '{_cut(node.value)}', which cannot be read as {kind}{reason}; expected a valid {kind}",
                problem_mark=node.start_mark,
            ) from None


def _refuse_tag(loader: _Loader, node: Any) -> Any:
    raise _Refused(problem=f"found a !!{node.tag.rsplit(':', 1)[-1]} value; {_PLAIN}", problem_mark=node.start_mark)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)
for _tag in ("binary", "timestamp", "omap", "pairs", "set"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


def _unshared(value: Any) -> Any:
    """A copy in which no two places share a list or mapping (an alias becomes a copy), so that
    changing one place (an override, a resolved path) never changes another."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def _problem(exc: yaml.YAMLError, text: str) -> YamlProblem:
    """One :class:`YamlProblem` for any error PyYAML raises."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. NUL
        before = text[: exc.position]
        return YamlProblem(
            f"found the character U+{exc.character:04X}, which YAML does not allow; expected printable text",
            before.count("\n") + 1,
            len(before) - before.rfind("\n"),
            True,
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    context = getattr(exc, "context", None)
    if context and problem == "second occurrence":  # found duplicate anchor 'x'; first occurrence
        problem = f"{context.split(';')[0]} (first at line {exc.context_mark.line + 1})"
    elif context:  # e.g. "while scanning a quoted scalar", "expected a single document in the stream"
        problem = f"{context}, {problem}"
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return YamlProblem(problem, line, column, syntax=not isinstance(exc, _Refused))


def parse_yaml(text: str, root: str = "") -> Any:
    """Parse YAML text within the limits above; ``root`` is the key path the text is the value of
    (an override's key), for the key paths in messages and the depth limit.

    Raises:
        YamlProblem: invalid YAML, a duplicate key, too many values or too deep nesting.
    """
    loader = None
    try:
        loader = _Loader(text, root)
        return _unshared(loader.get_single_data())
    except yaml.YAMLError as exc:
        raise _problem(exc, text) from None
    finally:
        if loader is not None:
            loader.dispose()


_NOT_REGULAR = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def not_regular_file(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (following links): ``"a folder"``, ``"a named
    pipe (FIFO)"``, ``"a character device"``, ...; None for a regular file or nothing at all.

    Only the file's metadata is read: a FIFO or a device is never opened (reading one can block
    forever, or never end, as ``/dev/zero``)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # missing, a dangling link, a NUL in the name: reported where it is read
        return None
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")


def check_config_path(path: Path) -> None:
    """Refuse, without opening it, what is not a config file: a folder, a FIFO or a device (reading
    those would hang or never end), nothing at all. Cheap: commands call it before importing torch."""
    kind = not_regular_file(path)
    if kind == "a folder":
        raise UserError(f"{path}: found a folder; expected a config file, e.g. {path}/config.yml")
    if kind is not None:
        raise UserError(f"{path}: found {kind}, not a regular file; expected a config file such as config.yml")
    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass the path to a config.yml")


def _read_text(path: Path) -> str:
    """A config file's text; a folder, a FIFO or device, an unreadable, oversized or non-UTF-8 file is one line."""
    check_config_path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot read the file ({exc.strerror or exc}); expected a readable config file"
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(
            f"{path}: found a file over {MAX_CONFIG_BYTES // 2**20} MiB; expected a config file of "
            f"at most {MAX_CONFIG_BYTES // 2**20} MiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: found the byte 0x{data[exc.start]:02x}, which is not UTF-8; "
            "expected a UTF-8 text file (save it as UTF-8)"
        ) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; any problem with the file or its text is one line naming the file."""
    try:
        data = parse_yaml(_read_text(path))
    except YamlProblem as exc:
        where = f"{exc.line}:{exc.column}:" if exc.line is not None else ""
        raise UserError(f"{path}:{where} {'invalid YAML: ' if exc.syntax else ''}{exc.message}") from None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        found = "an empty file" if data is None else f"{kind} ({_cut(data, 40)})"
        raise UserError(f"{path}: found {found}; expected a mapping of sections: {', '.join(Config.model_fields)}")
    return data


# ------------------------------------------------------------------------------- overrides


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
            hint = (
                f"it belongs in {home[0]}"
                if home
                else f"{did_you_mean(key, fields)}expected one of: {', '.join(fields)}"
            )
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


# pydantic errors whose own words name Python classes: what a config is expected to hold instead
_EXPECTED = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a path (text)",
    "too_short": "at least one entry",
}


def _pydantic_problems(exc: ValidationError, meant: set[str]) -> list[str]:
    """One line per pydantic error; a missing key that an unknown key was meant to be is left out
    (a misspelled required key is one mistake: its did-you-mean line says it all)."""
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        path = ".".join(str(part) for part in (loc[:-1] if loc[-1:] == ["[key]"] else loc))
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
