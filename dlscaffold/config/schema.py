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
    # Where the data is, for the project's CustomDataSet(cfg) to read; must exist when given
    # (relative to the config file's folder).
    dataset_path: Path | None = None
    # Fraction of the points held out as the validation split, 0 <= x < 1 (at least one point when
    # above 0); unused when idx_dict_path gives the split.
    val_ratio: Float = Field(0.05, ge=0.0, lt=1.0)
    # The dev set (training_params.use_dev, --dev): this many points of the training split (fewer if
    # it is smaller), for quick debugging runs.
    dev_num: Int = Field(20, ge=1, le=INT64_MAX)
    # DataLoader worker processes; 0: batches are loaded in the main process.
    num_workers: Int = Field(0, ge=0, le=256)
    # Samples per batch, in each process of a data-parallel run (see global_batch_size).
    batch_size: Int = Field(128, ge=1, le=INT64_MAX)
    # Reuse a split: an idx_dict.json or an earlier run's folder; empty: a new split from val_ratio,
    # dev_num and training_params.seed.
    idx_dict_path: Path | None = None
    # Stack each split once on the run's device and batch by index selection (no DataLoader).
    device_data: bool = False
    # Training points a model's init_from_data(**inputs) receives once, before a fresh run's first epoch.
    init_samples: Int = Field(5000, ge=1, le=INT64_MAX)
    # Keep the DataLoader's workers (and their open files) between epochs and validations; needs
    # num_workers > 0.
    persistent_workers: bool = False
    # Page-locked batches, for faster copies to a CUDA device; true without CUDA is refused; empty:
    # pinned when the run computes on a CUDA device.
    pin_memory: bool | None = None
    # Batches each DataLoader worker loads ahead; needs num_workers > 0; empty: torch's default (2).
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

    # The torch.optim class (SGD, AdamW, ...); LBFGS and SparseAdam, which the loop cannot step, are refused.
    name: str = "Adam"
    # Its constructor arguments (momentum, betas, ...); lr defaults to lrn_rate, weight_decay to
    # regularization_weight, where the class takes them.
    kwargs: dict[str, Any] = Field(default_factory=dict)

    _empty_kwargs = field_validator("kwargs", mode="before")(_none_is_empty)


class SchedulerSpec(_Section):
    """A ``torch.optim.lr_scheduler`` class by name, stepped every epoch or every step."""

    # The torch.optim.lr_scheduler class (CosineAnnealingLR, OneCycleLR, ...); those that need a
    # metric or other schedulers (ReduceLROnPlateau, LambdaLR, SequentialLR) are refused.
    name: str
    # Its constructor arguments (T_max, max_lr, ...); OneCycleLR without total_steps / epochs gets
    # the run's length.
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # When it steps: after every epoch, or after every optimizer step.
    interval: Literal["epoch", "step"] = "epoch"

    _empty_kwargs = field_validator("kwargs", mode="before")(_none_is_empty)


class Every(_Section):
    """An interval in training steps, ``{steps: N}`` (``val_every``, ``save_every``). A step is one
    optimizer step of the run: one batch, or one group of ``accumulate`` batches."""

    # N: the interval in optimizer steps, counted over the whole run (mid-epoch too).
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

    # The hook's name in the {name: function} of training_utils.get_project_hooks().
    name: str
    # When it runs: after a training step, a validation, an epoch, or once at the run's end.
    event: Literal["step", "validation", "epoch", "end"]
    # Run after every N-th event only: the global step or the epoch number a multiple of N, or every
    # N-th validation.
    every: Int = Field(1, ge=1, le=INT64_MAX)
    # Keyword arguments of the call fn(ctx, **options), checked against the function's signature.
    options: dict[str, Any] = Field(default_factory=dict)

    _empty_options = field_validator("options", mode="before")(_none_is_empty)


class TrainingParams(_Section):
    # Seeds random, numpy and torch; also fixes the split (without idx_dict_path) and the data order.
    seed: Int = Field(4321, ge=0, le=INT64_MAX)
    # Weight decay: the weight_decay of the default Adam, and of an optimizer class that takes one
    # unless its kwargs set it.
    regularization_weight: Float = Field(0.0, ge=0.0)
    # The learning rate: the lr of every optimizer whose kwargs set none (the older tool's Adam included).
    lrn_rate: Float = Field(1e-4, gt=0.0)
    # Adam's first beta (the gradient's moving average) for the default optimizer; unused with
    # training_params.optimizer (set betas in its kwargs).
    beta1: Float = Field(0.9, ge=0.0, lt=1.0)
    # Adam's second beta (the squared gradient's moving average), as beta1.
    beta2: Float = Field(0.99, ge=0.0, lt=1.0)
    # Epochs to train (epochs count from 1); a --resume may change it.
    max_training_epochs: Int = Field(10, ge=1, le=INT64_MAX)
    # Train and validate on the dev set (dataloading_params.dev_num points), like --dev.
    use_dev: bool = False
    # Compute on CUDA when available; without it, on the CPU with a one-line note.
    use_GPU: bool = True

    # New keys; their defaults keep the older tool's behaviour.

    # Validate every N epochs (and always after the last), or {steps: N}: after every N-th training
    # step (mid-epoch too).
    val_every: Interval = 1
    # Checkpoint every N epochs (and always after the last), or {steps: N}: a resumable checkpoint of
    # the exact position every N training steps.
    save_every: Interval = 1
    # Every N training steps: the mean training values of those steps and the learning rates go to
    # the trackers (metrics.jsonl keeps per-epoch rows), the running loss to the progress bar.
    log_every: Int = Field(50, ge=1, le=INT64_MAX)
    # A torch.optim class by name {name, kwargs} for every trained model; empty: the older tool's
    # Adam(lr=lrn_rate, betas=(beta1, beta2), weight_decay=regularization_weight).
    optimizer: OptimizerSpec | None = None
    # A torch.optim.lr_scheduler class by name {name, kwargs, interval}; empty: a constant learning rate.
    lr_scheduler: SchedulerSpec | None = None
    # Clip the global gradient norm of the trained models to this value; empty: no clipping.
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
    # the first trained model; "none": no best epoch (a GAN's).
    monitor: str | None = None
    # Whether a lower or a higher monitored value is better; default: min for a loss or total, max
    # for an eval.
    monitor_mode: Literal["min", "max"] | None = None
    # Stop after this many validations without improvement of the monitored value; empty: never.
    early_stopping_patience: Int | None = Field(None, ge=1, le=INT64_MAX)
    # Speed: torch.compile each trained model.
    compile: bool = False
    # Speed: channels-last memory format for the models and 4-D inputs.
    channels_last: bool = False
    # Speed on the CPU: glibc's malloc keeps freed memory for the next step instead of mapping large
    # tensors afresh each step (dlscaffold.parts.device.kept_cpu_memory).
    keep_cpu_memory: bool = False
    # Data-parallel training (torchrun): the process-group backend; default: nccl when every process
    # has a CUDA device, else gloo.
    backend: Literal["nccl", "gloo"] | None = None
    # Data-parallel training: DistributedDataParallel's find_unused_parameters option.
    find_unused_parameters: bool = False
    # Data-parallel training: BatchNorm statistics over every process's batch (SyncBatchNorm; CUDA only).
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
    # Runs go to <logging_dir>/<YYYYMMDD>_<N>_<run_notes>/ (relative to the config file's folder).
    logging_dir: Path = Path("runs")
    # A note appended to the run folder's name (cut to 100 bytes there); empty: none.
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

    # Logged as <Model>/<logging_name> (what monitor names); default: the entry's key.
    logging_name: str | None = None
    # Its factor in the objective, the weighted sum of every loss.
    weight: Float = 1.0
    # The function's tensor inputs, argument -> source ("dataset", a model, "<source>.<tensor>"):
    # bound by name where a key names an argument, the rest in order.
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
    # Logged as <Model>/<logging_name> (what monitor names); default: the entry's key.
    logging_name: str | None = None
    # The function's (or a torchmetrics class's update's) tensor inputs, argument -> source, bound
    # as for losses.
    inputs: dict[str, str] = Field(min_length=1)
    # The registered eval or torchmetrics.<Class>; defaults to the entry's key.
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
    # A glob over the model's named_parameters() (* also matches dots); a parameter goes to the first
    # group that matches it, the unmatched ones to a last plain group.
    params: str
    # A factor on the optimizer's learning rate for this group (schedulers keep the ratio).
    lr_scale: Float = Field(1.0, gt=0.0)
    # [first, last]: the group trains in these epochs only (its parameters unchanged outside them);
    # empty: every epoch.
    epochs: Annotated[list[Int], Field(min_length=2, max_length=2)] | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The keys passed to the optimizer's group."""
        return dict(self.model_extra or {})


EMA_KEYS = ("ema_of", "decay", "every", "decay_ramp", "write_back")


class ModelSpec(_Section):
    # 1: train this model; 0: frozen (eval mode, no gradient, no optimizer).
    train: bool = True
    # An earlier run's folder (or its checkpoints folder) to load this model's weights from; empty: fresh weights.
    model_dir: Path | None = None
    # Which saved epoch of model_dir to load (Encoder_000004.pt: after epoch 4), best or last.
    # best / last: prepare() resolves them to the number, which the run's config.yml records.
    epoch: Annotated[int | Literal["best", "last"], BeforeValidator(saved_epoch)] = 0
    # The model's constructor arguments, Model(**init_args); with model_dir, that run's init_args
    # fill in the keys not given.
    init_args: dict[str, Any] = Field(default_factory=dict)
    # forward's keyword arguments, argument -> source: "dataset", a model listed earlier (its tensor
    # named like the argument), "<source>.<tensor>", or "trainer" (epoch, step); an EMA model's
    # default: its source's.
    inputs: dict[str, str] = Field(default_factory=dict)
    # The losses on this model's outputs: {registered name (built-in or from training_utils.py), or
    # any key with its function: ...}.
    losses: dict[str, LossSpec] = Field(default_factory=dict)
    # The evals (metrics) on this model's outputs, keyed like losses; torchmetrics.<Class> for a
    # torchmetrics metric.
    evals: dict[str, EvalSpec] = Field(default_factory=dict)
    # Per-model optimization (docs/several_models.md); unset: training_params' settings, every step.

    # This model's own optimizer {name, kwargs}, like training_params.optimizer; default: training_params'.
    optimizer: OptimizerSpec | None = None
    # This model's own scheduler, like training_params.lr_scheduler, counting this model's updates;
    # default: training_params'.
    lr_scheduler: SchedulerSpec | None = None
    # Clip this model's own gradient norm (apart from the others); default: training_params'. Needs
    # one process.
    grad_clip_norm: Float | None = Field(None, gt=0.0)
    # This model's optimizer steps when the global step is a multiple of N (a GAN's slower player);
    # needs one process.
    update_every: Int = Field(1, ge=1, le=INT64_MAX)
    # Gradient accumulation for this model alone: its optimizer steps every N batches (a multiple of
    # training_params.accumulate), from the mean gradient over their samples; default: training_params'.
    accumulate: Int | None = Field(None, ge=1, le=INT64_MAX)
    # Parameter groups of this model's optimizer: [{params: glob, lr_scale, epochs, other group keys}].
    param_groups: list[ParamGroupSpec] = Field(default_factory=list)
    # An EMA model (dlscaffold.parts.ema): a copy of the model ``ema_of`` names holding its moving average.
    ema_of: str | None = None
    # EMA models: average = decay * average + (1 - decay) * weights, at each update.
    decay: Float = Field(0.999, ge=0.0, le=1.0)
    # EMA models: update after every N-th optimizer step of the source.
    every: Int = Field(1, ge=1, le=INT64_MAX)
    # EMA models: p > 0 uses decay * (step / total_steps) ** p (step: the source's optimizer steps); 0: decay.
    decay_ramp: Float = Field(0.0, ge=0.0)
    # EMA models: copy the average back into the source after each update (Lookahead).
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
    # Where the data is, how it is split and batched.
    dataloading_params: DataloadingParams = Field(default_factory=DataloadingParams)
    # Seed, optimization, epochs and steps, validation and checkpoints, precision, devices.
    training_params: TrainingParams = Field(default_factory=TrainingParams)
    # Where runs are written and where their values are logged.
    logging_params: LoggingParams = Field(default_factory=LoggingParams)
    # One entry per model (a name from get_ref_model_dict()), built and run in this order: whether
    # it trains, where its weights come from, its inputs, losses and evals.
    info_flow: dict[str, ModelSpec] = Field(min_length=1)

    # A section with every key commented out (``logging_params:``) takes the defaults.
    _empty_sections = field_validator("dataloading_params", "training_params", "logging_params", mode="before")(
        _none_is_empty
    )

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-safe dict (paths as strings): what ``CustomDataSet(cfg)`` receives."""
        return self.model_dump(mode="json")
