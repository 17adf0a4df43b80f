"""The run config's schema: the older deep_learning tool's four sections as pydantic models, with
their types, ranges and defaults (:class:`Config` and its sections).

Unknown keys are ignored here and reported by :mod:`dlscaffold.config.validation` with a
did-you-mean; numbers are finite, integers within int64 and never true/false
(:mod:`dlscaffold.config.numbers`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from dlscaffold.config.numbers import INT64_MAX, Float, Int, saved_epoch
from dlscaffold.errors import available, did_you_mean


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
    # The DataLoader's worker options: keep workers between epochs and validations, page-locked
    # batches for faster copies to a CUDA device, batches each worker loads ahead (needs workers).
    persistent_workers: bool = False
    pin_memory: bool | None = None  # None: pinned when the run computes on a CUDA device
    prefetch_factor: Int | None = Field(None, ge=1, le=INT64_MAX)
    # The batch over every process of a data-parallel run (instead of batch_size, per process): each
    # of N processes takes global_batch_size / N, so a run resumes exactly on another number of them.
    global_batch_size: Int | None = Field(None, ge=1, le=INT64_MAX)
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


class Every(_Section):
    """An interval in training steps, ``{steps: N}`` (``val_every``, ``save_every``). A step is one
    optimizer step of the run: one batch, or one group of ``accumulate`` batches."""

    steps: Int = Field(ge=1, le=INT64_MAX)


def _interval(value: Any) -> Any:
    """A number of epochs, ``{epochs: N}`` (written back as the plain number N) or ``{steps: N}``."""
    if isinstance(value, Every):
        return value
    if isinstance(value, dict):
        unit = next(iter(value)) if len(value) == 1 else None
        number = value.get(unit)
        if unit not in ("steps", "epochs") or isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError("a number of epochs, {steps: N} or {epochs: N} with N >= 1")
        return number if unit == "epochs" else Every(steps=number)
    if isinstance(value, int) and not isinstance(value, bool) and value > INT64_MAX:
        raise ValueError(f"less than or equal to {INT64_MAX}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a number of epochs (1 or more), or {steps: N}")
    return value


Interval = Annotated[
    int | Every, PlainValidator(_interval), PlainSerializer(lambda v: v if isinstance(v, int) else {"steps": v.steps})
]


def every_steps(value: int | Every) -> int | None:
    """N of ``{steps: N}``; None for an interval in epochs."""
    return value.steps if isinstance(value, Every) else None


def every_epochs(value: int | Every) -> int | None:
    """N of an interval in epochs (a plain number); None for ``{steps: N}``."""
    return value if isinstance(value, int) else None


EVENTS = ("step", "validation", "epoch", "end")  # when a hook runs: after each of these


class HookSpec(_Section):
    """One project hook of ``training_params.hooks``: a function from ``get_project_hooks()`` by
    name, called as ``fn(ctx, **options)`` after every ``every``-th ``event``."""

    name: str
    event: Literal["step", "validation", "epoch", "end"]
    every: Int = Field(1, ge=1, le=INT64_MAX)
    options: dict[str, Any] = Field(default_factory=dict)

    _empty_options = field_validator("options", mode="before")(_none_is_empty)


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
    # Validate / checkpoint every N epochs, or {steps: N}: every N training steps (mid-epoch too).
    val_every: Interval = 1
    save_every: Interval = 1
    log_every: Int = Field(50, ge=1, le=INT64_MAX)
    optimizer: OptimizerSpec | None = None
    lr_scheduler: SchedulerSpec | None = None
    grad_clip_norm: Float | None = Field(None, gt=0.0)
    # "bf16": forward and losses under torch.autocast with bfloat16 (CPU or GPU; no loss scaling needed);
    # "fp16": autocast with float16 and a gradient scaler (its state is in the trainer checkpoint).
    # "auto": bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX-512 BF16 or
    # AMX), fp32 elsewhere.
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    # A step whose loss or gradients are NaN/inf is never applied; "stop" ends the run (saving the
    # batch as nonfinite_batch.pt), "skip" drops the step and counts it.
    on_nonfinite: Literal["stop", "skip"] = "stop"
    # The best checkpoint: "<Model>/<logging_name>" of a loss or eval, or "total" (the weighted sum
    # of the losses, logged as total_loss), read on the validation split; default: the first loss of
    # the first trained model; "none": no best epoch (a GAN's). monitor_mode: min for a loss or
    # total, max for an eval.
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] | None = None
    # Stop after this many validations without improvement of the monitored value; empty: never.
    early_stopping_patience: Int | None = Field(None, ge=1, le=INT64_MAX)
    # Speed: torch.compile each trained model; channels-last memory format for models and 4-D inputs.
    compile: bool = False
    channels_last: bool = False
    # Speed on the CPU: glibc's malloc keeps freed memory for the next step instead of mapping large
    # tensors afresh each step (dlscaffold.parts.device.kept_cpu_memory).
    keep_cpu_memory: bool = False
    # Data-parallel training (torchrun): the process-group backend (default: nccl when every process
    # has a CUDA device, else gloo), DDP's find_unused_parameters, and BatchNorm synchronised across processes.
    backend: Literal["nccl", "gloo"] | None = None
    find_unused_parameters: bool = False
    sync_batchnorm: bool = False
    # Test-time augmentation: "<Model>.<output>" averaged over CustomDataSet.tta_views(batch) in
    # validation and evaluation; empty: none.
    tta_outputs: list[str] = Field(default_factory=list)
    # Gradient accumulation: k batches make one optimizer step (the gradient of the mean over all
    # their samples).
    accumulate: Int = Field(1, ge=1, le=INT64_MAX)
    # Ordered update phases: each a list of trained models, run in this order every step; a phase
    # runs forward what its losses need, back-propagates them into its models and steps their
    # optimizers before the next phase. Empty: one phase of every trained model.
    phases: list[list[str]] | None = None
    # Project functions (training_utils.get_project_hooks) called after steps, validations, epochs
    # or the run's end: [{name, event, every, options}].
    hooks: list[HookSpec] = Field(default_factory=list)
    # In a cluster job whose environment has SLURM_JOB_END_TIME: stop this many seconds before it,
    # saving the run's exact position, in case the scheduler's signal never comes.
    stop_before_end: Float = Field(120.0, ge=0.0)


TRACKERS = ("tensorboard", "mlflow", "wandb")  # logging_params.trackers: dlscaffold.records.trackers opens them

# The optional package each tracker needs: (module, what it is called), named with its extra when missing.
_TRACKER_PACKAGES = {"mlflow": ("mlflow", "MLflow"), "wandb": ("wandb", "Weights & Biases")}


class WandbParams(_Section):
    """``logging_params.wandb``: where the ``wandb`` tracker's run goes (docs/runtime.md, "Trackers")."""

    # The W&B project the run goes to.
    project: str = "dlscaffold"
    # The W&B user or team that owns the project; empty: the account's default entity.
    entity: str | None = None
    # offline: files in <run>/wandb/, no account and no network (upload later: wandb sync
    # <run>/wandb/offline-run-*); online: streamed to W&B (after wandb login); disabled: nothing.
    mode: Literal["offline", "online", "disabled"] = "offline"
    # Tags of the W&B run.
    tags: list[str] = Field(default_factory=list)


class LoggingParams(_Section):
    logging_dir: Path = Path("runs")
    run_notes: str = ""
    # Tensors logged as images to TensorBoard at each validation (the first 8 validation samples):
    # "<Model>.<output>" or "dataset.<key>".
    log_images: list[str] = Field(default_factory=list)
    # Where a run's scalars go beside metrics.jsonl (always written): "tensorboard", "mlflow", "wandb".
    trackers: list[str] = Field(default_factory=lambda: ["tensorboard"])
    # MLflow's tracking URI; default: a SQLite file in logging_dir (sqlite:///<logging_dir>/mlflow.db).
    mlflow_uri: str | None = None
    # The wandb tracker's settings {project, entity, mode, tags}; empty: project dlscaffold, offline.
    wandb: WandbParams | None = None
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
            module, package = _TRACKER_PACKAGES.get(name, (None, None))
            if module is not None and importlib.util.find_spec(module) is None:
                raise ValueError(f"the {name} tracker needs {package}: pip install 'dlscaffold[{name}]'")
        if len(set(names)) < len(names):
            raise ValueError("a tracker is named twice")
        return names

    @field_validator("wandb")
    @classmethod
    def _wandb_is_tracked(cls, value: WandbParams | None, info: ValidationInfo) -> WandbParams | None:
        # Settings of a tracker the run does not open would be silently unused.
        trackers = info.data.get("trackers")
        if value is not None and trackers is not None and "wandb" not in trackers:
            raise ValueError("expected wandb in logging_params.trackers for these settings: add it, or remove them")
        return value

    @field_validator("run_notes", mode="before")
    @classmethod
    def _notes_to_str(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # run_notes: 3
        return value


class LossSpec(_Section):
    """One loss term. ``inputs`` bind to the function's arguments by name where a key names one, the rest in order."""

    logging_name: str | None = None
    weight: Float = 1.0
    inputs: dict[str, str] = Field(min_length=1)
    # The registered function; defaults to the entry's key (the older tool's form).
    function: str | None = None
    # The models whose parameters this loss updates; default: every trained model it reaches.
    trains: list[str] | None = None
    # Keyword options of the function (``label_smoothing`` of MultinomialNLL), checked against its signature.
    options: dict[str, Any] = Field(default_factory=dict)
    # How the batch's per-sample values make the objective: their mean, or their sum (a short last
    # batch and data-parallel training stay exact). Logged values are per-sample means either way.
    reduction: Literal["mean", "sum"] = "mean"

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
    # Gradient accumulation for this model alone: its optimizer steps every N batches (a multiple of
    # training_params.accumulate), from the mean gradient over their samples; default: training_params'.
    accumulate: Int | None = Field(None, ge=1, le=INT64_MAX)
    param_groups: list[ParamGroupSpec] = Field(default_factory=list)
    # An EMA model (dlscaffold.parts.ema): a copy of the model ``ema_of`` names holding its moving average.
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
