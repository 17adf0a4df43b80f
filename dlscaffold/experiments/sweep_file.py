"""The sweep file of ``dlscaffold sweep``: reading it and finding every problem in it at once.

A sweep file names a base config, fixed overrides and the parameters to search::

    config: config.yml                 # the base config, relative to this file
    name: lr_search                    # a note for the sweep folder's name
    metric: Classifier/accuracy        # the trials' monitor; default: the config's
    direction: maximize                # default: from monitor_mode / the metric's kind
    sampler: tpe                       # tpe | random | grid
    trials: 12                         # total trials; grid: every combination
    seeds: [1, 2, 3]                   # each trial runs once per seed; its value is the mean
    pruner: median                     # none | median | hyperband
    overrides: [training_params.max_training_epochs=10]
    params:
      training_params.lrn_rate: {float: [1.0e-4, 1.0e-1], log: true}
      dataloading_params.batch_size: {choice: [32, 64, 128]}
      info_flow.Encoder.init_args.enc_dim: {int: [16, 128], step: 16}
    storage: sqlite:///study.db        # an RDB URL instead of the journal file beside the trials

:func:`read_sweep` checks the file's own structure; the params and the metric are checked against
the base config by :func:`dlscaffold.experiments.sweep.check_against_config` (through the same checks as
``dlscaffold train``). :func:`folder_spec_problem` checks the resolved copy a sweep folder keeps
(``sweep.yml``) before a resume trusts it. Both files are read by :func:`read_mapping`, within the
config reader's limits. Nothing here imports optuna or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold.config import MAX_CONFIG_BYTES, YamlProblem, not_regular_file, parse_yaml
from dlscaffold.errors import UserError, did_you_mean

KEYS = (
    "config",
    "name",
    "metric",
    "direction",
    "sampler",
    "trials",
    "seeds",
    "pruner",
    "overrides",
    "params",
    "storage",
)
SAMPLERS = ("tpe", "random", "grid")  # what the sweep file accepts; each is made by make_sampler
PRUNERS = ("none", "median", "hyperband")  # each is made by make_pruner
DIRECTIONS = ("maximize", "minimize")
KINDS = ("float", "int", "choice")
_PARAM_KEYS = {"float": ("float", "log", "step"), "int": ("int", "log", "step"), "choice": ("choice",)}
_SQLITE = "sqlite:///"  # a relative sqlite path is made absolute: relative to the sweep file, as its config


@dataclass
class Param:
    """One searched config key: ``kind`` float, int or choice."""

    key: str  # dotted config key
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] = field(default_factory=list)

    def grid(self) -> list[Any]:
        """Every value the grid sampler tries (a float range needs a ``step``)."""
        if self.kind == "choice":
            return list(self.choices)
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [float(v) for v in values]

    def first(self) -> Any:
        """A value in range, used to check that the config takes the key."""
        return self.choices[0] if self.kind == "choice" else self.low

    def last(self) -> Any:
        """The other end of the range (the last choice), checked as :meth:`first` is."""
        return self.choices[-1] if self.kind == "choice" else self.high

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        out: dict[str, Any] = {self.kind: [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class SweepSpec:
    """A checked sweep file; ``config`` is absolute."""

    path: Path
    config: Path
    name: str = ""
    metric: str | None = None
    direction: str | None = None
    sampler: str = "tpe"
    trials: int | None = None
    seeds: list[int] = field(default_factory=list)
    pruner: str = "none"
    overrides: list[str] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    storage: str | None = None

    def grid_space(self) -> dict[str, list[Any]]:
        return {p.key: p.grid() for p in self.params}

    def total_trials(self) -> int:
        """The number of trials the sweep runs: ``trials``, or every grid combination."""
        if self.sampler == "grid":
            combos = math.prod(len(values) for values in self.grid_space().values())
            return min(combos, self.trials) if self.trials else combos
        return int(self.trials or 0)

    def as_dict(self, config_name: str | None = None) -> dict[str, Any]:
        """The resolved sweep file (``config`` as given, or ``config_name`` for the sweep folder's copy)."""
        return {
            "config": config_name or str(self.config),
            "name": self.name,
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "trials": self.total_trials(),
            "seeds": list(self.seeds),
            "pruner": self.pruner,
            "overrides": list(self.overrides),
            "params": {p.key: p.as_dict() for p in self.params},
            "storage": self.storage,
        }


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)


def _param(key: str, spec: Any, where: str) -> tuple[Param | None, list[str]]:
    if not isinstance(spec, dict):
        return None, [
            f"{where}: found {spec!r}; expected a mapping such as {{float: [1.0e-4, 1.0e-1], log: true}}, "
            "{int: [16, 128], step: 16} or {choice: [32, 64]}"
        ]
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        found = "none of" if not kinds else "more than one of"
        return None, [f"{where}: found {found} float, int, choice; expected exactly one of them"]
    kind = kinds[0]
    problems = [
        f"{where}.{k}: unknown key; "
        f"{did_you_mean(str(k), _PARAM_KEYS[kind])}expected one of: {', '.join(_PARAM_KEYS[kind])}"
        for k in spec
        if k not in _PARAM_KEYS[kind]
    ]
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            return None, [*problems, f"{where}.choice: found {choices!r}; expected a non-empty list of values"]
        return (None if problems else Param(key, "choice", choices=list(choices))), problems
    bounds, integer = spec[kind], kind == "int"
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_number(b, integer) for b in bounds)):
        return None, [
            *problems,
            f"{where}.{kind}: found {bounds!r}; expected [low, high], two {'integers' if integer else 'numbers'}",
        ]
    low, high = bounds
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: found {log!r}; expected true or false")
    if low > high or (low == high and not integer):
        problems.append(
            f"{where}.{kind}: found the range [{low}, {high}], which is {'inverted' if low > high else 'empty'}; "
            "expected low < high"
        )
    if log is True and low <= 0:
        problems.append(f"{where}.{kind}: a log range needs bounds > 0; found low = {low}")
    if step is not None:
        if not _number(step, integer) or step <= 0:
            problems.append(f"{where}.step: found {step!r}; expected a {'whole ' if integer else ''}number > 0")
        elif log is True:
            problems.append(f"{where}: step and log: true cannot be combined; drop one of them")
    if problems:
        return None, problems
    return Param(key, kind, low, high, bool(log), step), []


class _Reader:
    """Reads a sweep file's keys one by one, collecting every problem (one line each)."""

    def __init__(self, path: Path, raw: dict[str, Any]):
        self.path, self.raw, self.where, self.problems = path, raw, str(path), []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.where}: {key}: {text}")

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        value = self.raw.get(key, default)
        if value is None or value in allowed:
            return value
        self.problem(key, f"found {value!r}; {did_you_mean(str(value), allowed)}expected one of: {', '.join(allowed)}")
        return default

    def config(self) -> Path | None:
        config = self.raw.get("config")
        expected = "expected the base config's path, relative to this file"
        if not isinstance(config, str) or not config.strip():
            self.problem("config", f"{'missing' if config is None else f'found {config!r}'}; {expected}")
            return None
        path = (self.path.resolve().parent / Path(config).expanduser()).resolve()
        if not path.is_file():
            self.problem("config", f"'{config}' ({path}) is not a file; {expected}")
        return path

    def text(self, key: str, expected: str) -> str | None:
        value = self.raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            self.problem(key, f"found {value!r}; expected {expected}")
            return None
        return value

    def trials(self, sampler: str) -> int | None:
        trials = self.raw.get("trials")
        if trials is not None and (not _number(trials, True) or trials < 1):
            self.problem("trials", f"found {trials!r}; expected a whole number >= 1")
            return None
        if trials is None and sampler != "grid":
            self.problem("trials", f"missing; the {sampler} sampler needs the number of trials (grid runs them all)")
        return trials

    def seeds(self) -> list[int]:
        seeds = self.raw.get("seeds") or []
        whole = isinstance(seeds, list) and all(_number(s, True) and s >= 0 for s in seeds)
        if not whole or len(set(seeds)) != len(seeds):
            self.problem("seeds", f"found {seeds!r}; expected a list of distinct whole numbers >= 0, e.g. [1, 2, 3]")
            return []
        return list(seeds)

    def overrides(self) -> list[str]:
        overrides = self.raw.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            self.problem("overrides", f"found {overrides!r}; expected a list of key.path=value strings")
            return []
        return list(overrides)

    def storage(self) -> str | None:
        storage = self.raw.get("storage")
        if storage is not None and (not isinstance(storage, str) or "://" not in storage):
            self.problem("storage", f"found {storage!r}; expected an RDB URL such as sqlite:///study.db")
            return None
        if storage is None or not storage.startswith("sqlite:"):
            return storage
        path, query = storage[len(_SQLITE) :].partition("?")[::2] if storage.startswith(_SQLITE) else ("", "")
        if path in ("", ":memory:"):
            self.problem(
                "storage",
                f"found {storage!r}, a database in memory, which neither a resume nor another worker can "
                "read; expected a database file such as sqlite:///study.db",
            )
            return None
        path = str((self.path.resolve().parent / Path(path).expanduser()).resolve())  # relative to this file
        return f"{_SQLITE}{path}" + (f"?{query}" if query else "")

    def params(self, sampler: str) -> list[Param]:
        raw = self.raw.get("params")
        if not isinstance(raw, dict) or not raw:
            self.problem(
                "params",
                f"{'missing' if raw is None else f'found {raw!r}'}; expected a mapping of dotted config keys "
                "to ranges, e.g. training_params.lrn_rate: {float: [1.0e-4, 1.0e-1], log: true}",
            )
            return []
        params = []
        for key, spec in raw.items():
            if not isinstance(key, str) or not all(key.split(".")):
                self.problem(f"params.{key}", "expected a dotted config key such as training_params.lrn_rate")
                continue
            param, found = _param(key, spec, f"{self.where}: params.{key}")
            self.problems += found
            if param is not None:
                params.append(param)
            if param is not None and sampler == "grid" and param.kind == "float" and param.step is None:
                self.problem(
                    f"params.{key}",
                    "the grid sampler needs a finite set of values; give this float range a step, or use choice",
                )
        return params


def read_sweep(path: Path) -> SweepSpec:
    """Read and check a sweep file's structure; every problem in one :class:`UserError`."""
    path = Path(path)
    expected = "expected a sweep file: a mapping of keys such as config, trials and params"
    read = _Reader(path, read_mapping(path, expected))
    for key in read.raw:
        if key not in KEYS:
            read.problem(str(key), f"unknown key; {did_you_mean(str(key), KEYS)}expected one of: {', '.join(KEYS)}")
    sampler = read.choice("sampler", SAMPLERS, "tpe")
    spec = SweepSpec(
        path=path.resolve(),
        config=read.config(),
        name=read.text("name", "text") or "",
        metric=read.text("metric", "'<Model>/<logging_name>' of a loss or eval, or total"),
        direction=read.choice("direction", DIRECTIONS, None),
        sampler=sampler,
        trials=read.trials(sampler),
        seeds=read.seeds(),
        pruner=read.choice("pruner", PRUNERS, "none"),
        overrides=read.overrides(),
        params=read.params(sampler),
        storage=read.storage(),
    )
    if read.problems:
        raise UserError(*read.problems)
    return spec


def trial_overrides(params: dict[str, Any]) -> list[str]:
    """``key=value`` overrides for a trial's params (values as YAML flow text)."""
    import yaml

    def text(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("...").strip()

    return [f"{key}={text(value)}" for key, value in params.items()]


def make_sampler(name: str, seed: int | None) -> Any:
    """The Optuna sampler a sweep file's ``sampler`` names (one of :data:`SAMPLERS`)."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name in ("random", "grid"):  # grid: every combination is enqueued when the study is made, asked in order
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")  # the sweep file's check makes this unreachable


def make_pruner(name: str) -> Any:
    """The Optuna pruner a sweep file's ``pruner`` names (one of :data:`PRUNERS`)."""
    import optuna

    pruners = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner}
    pruners["hyperband"] = optuna.pruners.HyperbandPruner
    if name not in pruners:
        raise ValueError(f"unknown pruner {name!r}")  # the sweep file's check makes this unreachable
    return pruners[name]()


def read_mapping(path: Path, expected: str) -> dict[str, Any]:
    """A YAML mapping read within the config reader's limits: a folder, a FIFO or a device is refused
    without being opened, and so is a file over ``MAX_CONFIG_BYTES``. Any problem is one line naming
    the file and ending with ``expected`` (what the file should be, what to do)."""
    path = Path(path)
    kind = not_regular_file(path)
    if kind is not None or not path.is_file():
        raise UserError(f"{path}: {f'found {kind}, not a regular file' if kind else 'not found'}; {expected}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: found a file over {MAX_CONFIG_BYTES // 2**20} MiB; {expected}")
        raw = parse_yaml(data.decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}); {expected}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: found the byte 0x{data[exc.start]:02x}, which is not UTF-8; {expected}") from None
    except YamlProblem as exc:
        where = f"{exc.line}:{exc.column}: " if exc.line is not None else ""
        raise UserError(f"{path}:{where}{'invalid YAML: ' if exc.syntax else ''}{exc.message}; {expected}") from None
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else f"{'a list' if isinstance(raw, list) else 'a single value'}"
        raise UserError(f"{path}: found {found}; {expected}")
    return raw


# what a sweep folder's sweep.yml holds beyond the sweep file's keys
FOLDER_KEYS = (*KEYS, "project", "nproc", "source", "study", "sampler_seed")


def folder_spec_problem(spec: dict[str, Any]) -> str | None:
    """The first problem of a sweep folder's resolved ``sweep.yml`` (what :func:`read_sweep` made of
    a sweep file, with the metric, direction, project and study filled in); None when it is sound."""
    checks = (
        ("trials", lambda v: _number(v, True) and v >= 1, "a whole number >= 1"),
        ("sampler", lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        ("pruner", lambda v: v in PRUNERS, f"one of {', '.join(PRUNERS)}"),
        ("direction", lambda v: v in DIRECTIONS, f"one of {', '.join(DIRECTIONS)}"),
        ("metric", lambda v: isinstance(v, str) and v, "the monitored metric's name"),
        ("project", lambda v: isinstance(v, str) and v, "the project folder"),
        ("params", lambda v: isinstance(v, dict) and v, "a mapping of config keys to ranges"),
        ("seeds", lambda v: v is None or (isinstance(v, list) and all(_number(s, True) for s in v)), "a list"),
        ("overrides", lambda v: v is None or (isinstance(v, list) and all(isinstance(o, str) for o in v)), "a list"),
        ("nproc", lambda v: v is None or (_number(v, True) and v >= 1), "a whole number >= 1"),
        ("storage", lambda v: v is None or (isinstance(v, str) and "://" in v), "an RDB URL"),
        ("study", lambda v: v is None or (isinstance(v, str) and v), "the study's name"),
        ("sampler_seed", lambda v: v is None or _number(v, True), "a whole number"),
    )
    for key, sound, expected in checks:
        value = spec.get(key)
        if not sound(value):
            return f"{key}: {'missing' if value is None else f'found {value!r}'}; expected {expected}"
    for key, raw in spec["params"].items():
        param, problems = _param(str(key), raw, f"params.{key}")
        if problems:
            return problems[0]
        if spec["sampler"] == "grid" and param.kind == "float" and param.step is None:
            return f"params.{key}: the grid sampler needs a step for a float range"
    return None
