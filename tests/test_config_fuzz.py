"""The config fuzzer: hundreds of broken (and some valid) configs of the toy project, each one run
through ``dlscaffold train``. Every case must exit 0 (a valid config trains) or 2 (one ``error:``
line per problem); no output holds a traceback; a config that exits 2 creates no run folder; all
of it under a memory limit.

The cases are a mutation table over tests/toyproject/config.yml: wrong types, out-of-range, huge
and non-finite numbers, true/false for integers, missing, extra and misspelled keys at every level,
unknown names, bad tensor sources, wrong arity, ``init_args`` the constructors reject, optimizer
and scheduler mistakes, bad splits, broken YAML files (duplicate keys, alias bombs, deep nesting,
non-UTF-8 bytes) and broken command-line overrides. All cases run in one worker process
(tests/fuzz_worker.py) that imports torch once, under an address-space limit.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import HANG_GUARD_S

HERE = Path(__file__).parent
WORKER = HERE / "fuzz_worker.py"
BASE: dict[str, Any] = yaml.safe_load((HERE / "toyproject" / "config.yml").read_text())
DELETE = object()  # a change that removes the key
ANY = None  # the case may exit 0 or 2
MAX_NOTES_IN_NAME = 100  # bytes of run_notes a run folder's name may hold
PROBLEM_COUNT = "problems found; nothing was run."

# ----------------------------------------------------------------------------- building cases


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value


def mutated(changes: dict[str, Any]) -> str:
    """The toy config with ``{"dotted.key": value}`` changes (DELETE removes the key), as YAML."""
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        _set(raw, path, value)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


BASE_TEXT = mutated({})


def case(
    name: str,
    changes: dict[str, Any] | None = None,
    *,
    text: str | None = None,
    data: bytes | None = None,
    overrides: tuple[str, ...] = (),
    expect: int | None = 2,
    dev: bool = True,
    files: dict[str, str] | None = None,
    dirs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One fuzz case: a config (changes to the toy config, raw text or raw bytes), its overrides,
    and the exit code it must give (None: 0 or 2)."""
    config = text if text is not None else mutated(changes or {})
    return {
        "name": name,
        "config": None if data is not None else config,
        "config_hex": data.hex() if data is not None else None,
        "overrides": list(overrides),
        "expect": expect,
        "dev": dev,
        "files": files or {},
        "dirs": list(dirs),
    }


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


# ------------------------------------------------------------------------------------ numbers

WRONG_TYPES = {"str": "many", "list": [1, 2], "mapping": {"a": 1}, "null": None, "true": True, "false": False}
NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
HUGE_INTS = {"1e20": 1e20, "10**30": 10**30, "2**63": 2**63, "-2**63-1": -(2**63) - 1, "1.5": 1.5}
HUGE_FLOATS = {"10**400": 10**400}
# key -> (values it must refuse beyond the ones above, values it must accept)
INT_KEYS: dict[str, tuple[list[Any], list[Any]]] = {
    "dataloading_params.dev_num": ([0, -1], [1, 3, "16", 1e1, 2**63 - 1]),
    "dataloading_params.num_workers": ([-1, 257, 10**6], [0, 1]),
    "dataloading_params.batch_size": ([0, -5], [1, 1000, "8", 3e1, 2**63 - 1]),
    "training_params.seed": ([-1], [0, 2**32, 2**63 - 1]),
    "training_params.val_every": ([0, -1], [2, 2**63 - 1]),
    "training_params.save_every": ([0, -1], [2, 2**63 - 1]),
    "training_params.log_every": ([0, -1], [1, 2**63 - 1]),
    "info_flow.Encoder.epoch": ([-1], [0]),
}
FLOAT_KEYS: dict[str, tuple[list[Any], list[Any]]] = {
    "dataloading_params.val_ratio": ([-0.1, 1.0, 1.5], [0, 0.5, 1e-9, "0.5"]),
    "training_params.lrn_rate": ([0, -1, -1e-9], [1e-6, 1, "3e-4"]),
    "training_params.regularization_weight": ([-1, -1e-9], [0, 1e-4]),
    "training_params.beta1": ([1.0, -0.1, 1.5], [0, 0.5]),
    "training_params.beta2": ([1.0, -0.1, 2], [0, 0.999]),
    "training_params.grad_clip_norm": ([0, -1], [1.0, 1e-8, None]),
    "info_flow.Decoder.losses.MSE.weight": ([], [0, 2.0, -0.5]),
}
BOOL_KEYS = ["training_params.use_GPU", "training_params.use_dev"]
NOT_BOOLS = {"str": "maybe", "2": 2, "list": [True], "mapping": {"a": 1}, "null": None, "1.5": 1.5}
EPOCHS = "training_params.max_training_epochs"  # the worker sets it on the command line: overridden there
BAD_EPOCHS = ["0", "-1", "true", "many", "1e20", "1" + "0" * 30, str(2**63), ".nan", ".inf", "[1]", "1.5"]


def number_cases() -> list[dict[str, Any]]:
    """Wrong types, out-of-range, huge and non-finite numbers, true/false for every number key."""
    cases = []
    for key, (bad, good) in {**INT_KEYS, **FLOAT_KEYS}.items():
        huge = HUGE_INTS if key in INT_KEYS else HUGE_FLOATS
        refused = {**WRONG_TYPES, **NON_FINITE, **huge, **{_short(v): v for v in bad}}
        if key == "training_params.grad_clip_norm":
            del refused["null"]  # null: no clipping
        cases += [case(f"{key}={label}", {key: value}) for label, value in refused.items()]
        cases += [case(f"{key}={_short(value)} (valid)", {key: value}, expect=0) for value in good]
    cases += [case(f"{EPOCHS}={value} (override)", overrides=(f"{EPOCHS}={value}",)) for value in BAD_EPOCHS]
    cases.append(case(f"{EPOCHS}=2 (override, valid)", overrides=(f"{EPOCHS}=2",), expect=0))
    for key in BOOL_KEYS:  # without --dev, which would set use_dev
        cases += [case(f"{key}={label}", {key: value}, dev=False) for label, value in NOT_BOOLS.items()]
        cases.append(case(f"{key}=true (valid)", {key: True}, expect=0))
    return cases


# ---------------------------------------------------------------------------------- structure

SECTIONS = ["dataloading_params", "training_params", "logging_params", "info_flow"]
NOT_MAPPINGS = {"list": [1], "str": "x", "int": 3, "true": True}
TERMS = {
    "info_flow.Decoder.losses.MSE": "Decoder.losses",
    "info_flow.Classifier.evals.MultinomialAccuracy": "Classifier.evals",
}
TERM_MISTAKES: dict[str, Any] = {
    "extra_key": {"extra_key": 1},
    "inputs missing": {"inputs": DELETE},
    "inputs={}": {"inputs": {}},
    "inputs=list": {"inputs": ["a", "b"]},
    "inputs value=int": {"inputs": {"a": 3, "b": "dataset"}},
    "logging_name=list": {"logging_name": ["a"]},
    "function unknown": {"function": "Nope"},
    "function=3": {"function": 3},
}


def section_cases() -> list[dict[str, Any]]:
    """Sections of the wrong type, missing, misspelled, with extra keys; each key misspelled or missing."""
    cases = [
        case("info_flow missing", {"info_flow": DELETE}),
        case("info_flow={}", {"info_flow": {}}),
        case("info_flow=null", {"info_flow": None}),
        case("a key in the wrong section", {"training_params.batch_size": 8}),
    ]
    for section in SECTIONS:
        cases += [case(f"{section}={label}", {section: value}) for label, value in NOT_MAPPINGS.items()]
        cases.append(case(f"{section} misspelled", text=BASE_TEXT.replace(f"{section}:", f"{section[:-1]}:", 1)))
        cases.append(case(f"{section}.extra_key", {f"{section}.extra_key": 1}))
    for section in SECTIONS[:3]:
        cases.append(case(f"{section} missing (valid: defaults)", {section: DELETE}, expect=0))
        cases.append(case(f"{section}=null (valid: defaults)", {section: None}, expect=0))
        for key, value in BASE[section].items():
            path = f"{section}.{key}"
            cases.append(case(f"{path} misspelled", {path: DELETE, f"{path}x": value}))
            cases.append(case(f"{path} missing (default)", {path: DELETE}, expect=0))
    return cases


def model_cases() -> list[dict[str, Any]]:
    """Model entries and their keys: wrong types, missing, misspelled, extra; loss and eval entries."""
    cases = []
    for model, spec in BASE["info_flow"].items():
        path = f"info_flow.{model}"
        cases += [case(f"{path}={label}", {path: value}) for label, value in {**NOT_MAPPINGS, "null": None}.items()]
        cases.append(case(f"{path}.extra_key", {f"{path}.extra_key": 1}))
        cases += [
            case(f"{path}.{key} misspelled", {f"{path}.{key}": DELETE, f"{path}.{key}s": spec[key]}) for key in spec
        ]
        for key in ("init_args", "inputs"):
            cases.append(case(f"{path}.{key} missing", {f"{path}.{key}": DELETE}))
            cases += [
                case(f"{path}.{key}={label}", {f"{path}.{key}": value})
                for label, value in {"list": ["a"], "str": "dataset", "int": 3}.items()
            ]
        cases.append(case(f"{path}.train missing (default: trained)", {f"{path}.train": DELETE}, expect=0))
    for path, kind in TERMS.items():
        for label, changes in TERM_MISTAKES.items():
            cases.append(case(f"{path}.{label}", {f"{path}.{key}": value for key, value in changes.items()}))
        cases += [
            case(f"{path}=null", {path: None}),
            case(f"{path}=str", {path: "x"}),
            case(f"info_flow.{kind}=list", {f"info_flow.{kind}": [path.rsplit(".", 1)[-1]]}),
            case(f"info_flow.{kind}=str", {f"info_flow.{kind}": "x"}),
        ]
    return cases


# ----------------------------------------------------------------------------------- info_flow

CLS, DEC, ENC = "info_flow.Classifier", "info_flow.Decoder", "info_flow.Encoder"
MSE, NLL = f"{DEC}.losses.MSE.inputs", f"{CLS}.losses.MultinomialNLL.inputs"
NLL2 = {"function": "MultinomialNLL", "inputs": {"class_logits": "Classifier", "class_idx": "dataset"}}
FLOW_MISTAKES: dict[str, dict[str, Any]] = {
    "unknown model": {"info_flow.Encodr": {"inputs": {"features": "dataset"}}},
    "unknown loss": {f"{DEC}.losses": {"MSEE": {"inputs": {"a": "Decoder", "b": "dataset"}}}},
    "unknown eval": {f"{CLS}.evals": {"Acc": {"inputs": {"class_logits": "Classifier"}}}},
    "unknown source": {f"{CLS}.inputs": {"encoding": "Encodr"}},
    "source built later": {f"{CLS}.inputs": {"encoding": "Decoder"}},
    "source is the model itself": {f"{CLS}.inputs": {"encoding": "Classifier"}},
    "trainer with a wrong tensor": {f"{CLS}.inputs": {"encoding": "trainer"}},
    "trainer epoch not taken by forward": {f"{CLS}.inputs": {"encoding": "Encoder", "epoch": "trainer"}},
    "dataset tensor that does not exist": {f"{ENC}.inputs": {"featurez": "dataset"}},
    "forward argument missing": {f"{CLS}.inputs": {}},
    "loss reads a tensor its source lacks": {MSE: {"reconstruction": "Encoder", "features": "dataset"}},
    "loss reads an unknown dataset tensor": {MSE: {"reconstruction": "Decoder", "nope": "dataset"}},
    "loss reads the trainer step": {MSE: {"reconstruction": "Decoder", "step": "trainer"}},
    "loss with an unknown source": {MSE: {"reconstruction": "Nope", "features": "dataset"}},
    "loss arity 1": {MSE: {"reconstruction": "Decoder"}},
    "loss arity 3": {MSE: {"reconstruction": "Decoder", "features": "dataset", "class_idx": "dataset"}},
    "loss input left empty (target)": {MSE: {"target": "dataset.features"}},
    "loss on wrong shapes": {MSE: {"reconstruction": "Decoder", "class_idx": "dataset"}},
    "eval arity 1": {f"{CLS}.evals.MultinomialAccuracy.inputs": {"class_logits": "Classifier"}},
    "no losses at all": {f"{DEC}.losses": DELETE, f"{CLS}.losses": DELETE},
    "no losses, empty mappings": {f"{DEC}.losses": {}, f"{CLS}.losses": {}},
    "no trained model": {f"info_flow.{m}.train": 0 for m in BASE["info_flow"]},
    "train=yes": {f"{ENC}.train": "yes"},
    "train=1.5": {f"{ENC}.train": 1.5},
    "train=list": {f"{ENC}.train": [1]},
    "duplicate loss logging names": {f"{CLS}.losses.nll2": {**NLL2, "logging_name": "ce"}},
    "duplicate eval logging names": {f"{CLS}.evals.Top2Accuracy.logging_name": "accuracy"},
    "eval logged under a loss name": {f"{CLS}.evals.Top2Accuracy.logging_name": "ce"},
    "init_args enc_dim=0": {f"{ENC}.init_args.enc_dim": 0},
    "init_args enc_dim=-3": {f"{ENC}.init_args.enc_dim": -3},
    "init_args enc_dim=2.5": {f"{ENC}.init_args.enc_dim": 2.5},
    "init_args enc_dim=null": {f"{ENC}.init_args.enc_dim": None},
    "init_args enc_dim=list": {f"{ENC}.init_args.enc_dim": [4]},
    "init_args enc_dim=nan": {f"{ENC}.init_args.enc_dim": float("nan")},
    "init_args enc_dim=10**12 (memory)": {f"{ENC}.init_args.enc_dim": 10**12},
    "init_args enc_dim=10**30": {f"{ENC}.init_args.enc_dim": 10**30},
    "init_args enc_dim=true": {f"{ENC}.init_args.enc_dim": True},
    "init_args in_dim='x'": {f"{ENC}.init_args.in_dim": "x"},
    "init_args in_dim=7 (data has 8)": {f"{ENC}.init_args.in_dim": 7},
    "init_args Classifier enc_dim=5 (encoder gives 4)": {f"{CLS}.init_args.enc_dim": 5},
    "init_args num_classes=2 (labels go to 2)": {f"{CLS}.init_args.num_classes": 2},
    "init_args num_classes=0": {f"{CLS}.init_args.num_classes": 0},
    "init_args unexpected argument": {f"{ENC}.init_args.depth": 3},
    "init_args missing argument": {f"{ENC}.init_args.enc_dim": DELETE},
    "init_args=null (missing required)": {f"{ENC}.init_args": None},
    "init_args key=int": {f"{ENC}.init_args": {1: 2, "in_dim": 8, "enc_dim": 4}},
}
FLOW_VALID: dict[str, dict[str, Any]] = {
    "loss inputs in another order (bound by name)": {NLL: {"class_idx": "dataset", "class_logits": "Classifier"}},
    "train=2 means frozen (the seed's rule)": {f"{ENC}.train": 2},
    "frozen encoder": {f"{ENC}.train": 0},
    "second loss via function": {f"{CLS}.losses.nll2": {**NLL2, "logging_name": "ce2"}},
    "enc_dim=6 everywhere": {
        f"{ENC}.init_args.enc_dim": 6,
        f"{CLS}.init_args.enc_dim": 6,
        f"{DEC}.init_args.enc_dim": 6,
    },
}


def flow_cases() -> list[dict[str, Any]]:
    """Unknown names, bad sources, wrong arity, init_args the constructors reject."""
    cases = [case(name, changes) for name, changes in FLOW_MISTAKES.items()]
    cases += [case(f"{name} (valid)", changes, expect=0) for name, changes in FLOW_VALID.items()]
    cases.append(case("unknown model renamed", text=BASE_TEXT.replace("  Decoder:", "  Decodr:")))
    cases.append(case("model name with a dot", text=BASE_TEXT.replace("  Decoder:", "  Deco.der:")))
    return cases


# ------------------------------------------------------------------------ optimizer, scheduler

OPT, SCHED = "training_params.optimizer", "training_params.lr_scheduler"
BAD_OPTIMIZERS: dict[str, Any] = {
    "unknown": {"name": "Adamm"},
    "LBFGS": {"name": "LBFGS"},
    "SparseAdam": {"name": "SparseAdam"},
    "Optimizer": {"name": "Optimizer"},
    "name=3": {"name": 3},
    "name=''": {"name": ""},
    "name=null": {"name": None},
    "lr=-1": {"name": "Adam", "kwargs": {"lr": -1}},
    "lr='x'": {"name": "Adam", "kwargs": {"lr": "x"}},
    "lr=nan": {"name": "Adam", "kwargs": {"lr": float("nan")}},
    "SGD momentum=-1": {"name": "SGD", "kwargs": {"momentum": -1}},
    "SGD nesterov without momentum": {"name": "SGD", "kwargs": {"nesterov": True}},
    "betas out of range": {"name": "Adam", "kwargs": {"betas": [2, 3]}},
    "betas=str": {"name": "Adam", "kwargs": {"betas": "x"}},
    "weight_decay=-1": {"name": "AdamW", "kwargs": {"weight_decay": -1}},
    "unknown kwarg": {"name": "Adam", "kwargs": {"nope": 1}},
    "kwargs=list": {"name": "Adam", "kwargs": [1]},
    "kwargs=str": {"name": "Adam", "kwargs": "x"},
    "params in kwargs": {"name": "Adam", "kwargs": {"params": []}},
    "extra key": {"name": "Adam", "kwarg": {}},
    "=str": "Adam",
    "=list": ["Adam"],
}
GOOD_OPTIMIZERS: dict[str, Any] = {
    "SGD momentum": {"name": "SGD", "kwargs": {"momentum": 0.9, "nesterov": True}},
    "AdamW": {"name": "AdamW", "kwargs": {"weight_decay": 0.01}},
    "RMSprop": {"name": "RMSprop"},
    "Adam no kwargs": {"name": "Adam"},
    "kwargs=null": {"name": "Adam", "kwargs": None},
}
BAD_SCHEDULERS: dict[str, Any] = {
    "unknown": {"name": "StepLRR"},
    "base class": {"name": "LRScheduler"},
    "LambdaLR": {"name": "LambdaLR"},
    "no name": {"kwargs": {"step_size": 1}},
    "StepLR step_size=0": {"name": "StepLR", "kwargs": {"step_size": 0}},
    "StepLR without step_size": {"name": "StepLR"},
    "StepLR step_size='x'": {"name": "StepLR", "kwargs": {"step_size": "x"}},
    "CosineAnnealingLR T_max=0": {"name": "CosineAnnealingLR", "kwargs": {"T_max": 0}},
    "OneCycleLR without max_lr": {"name": "OneCycleLR"},
    "OneCycleLR max_lr=-1": {"name": "OneCycleLR", "kwargs": {"max_lr": -1}},
    "OneCycleLR total_steps given": {"name": "OneCycleLR", "kwargs": {"max_lr": 0.1, "total_steps": 1}},
    "ExponentialLR gamma='x'": {"name": "ExponentialLR", "kwargs": {"gamma": "x"}},
    "interval=batch": {"name": "StepLR", "kwargs": {"step_size": 1}, "interval": "batch"},
    "kwargs=list": {"name": "StepLR", "kwargs": [1]},
    "unknown kwarg": {"name": "StepLR", "kwargs": {"step_size": 1, "gama": 0.5}},
    "MultiStepLR milestones=str": {"name": "MultiStepLR", "kwargs": {"milestones": "x"}},
    "=str": "StepLR",
}
GOOD_SCHEDULERS: dict[str, Any] = {
    "StepLR": {"name": "StepLR", "kwargs": {"step_size": 1, "gamma": 0.5}},
    "CosineAnnealingLR": {"name": "CosineAnnealingLR", "kwargs": {"T_max": 5}},
    "OneCycleLR per step": {"name": "OneCycleLR", "kwargs": {"max_lr": 0.1}, "interval": "step"},
    "ExponentialLR": {"name": "ExponentialLR", "kwargs": {"gamma": 0.9}},
}


def optim_cases() -> list[dict[str, Any]]:
    """Optimizer, scheduler and precision mistakes, and a few valid settings."""
    cases = [case(f"optimizer {label}", {OPT: value}) for label, value in BAD_OPTIMIZERS.items()]
    cases += [case(f"optimizer {label} (valid)", {OPT: value}, expect=0) for label, value in GOOD_OPTIMIZERS.items()]
    cases += [case(f"scheduler {label}", {SCHED: value}) for label, value in BAD_SCHEDULERS.items()]
    cases += [case(f"scheduler {label} (valid)", {SCHED: value}, expect=0) for label, value in GOOD_SCHEDULERS.items()]
    cases += [
        case(
            "scheduler ReduceLROnPlateau (runs, or a clear refusal)", {SCHED: {"name": "ReduceLROnPlateau"}}, expect=ANY
        ),
        case("precision=fp8", {"training_params.precision": "fp8"}),
        case("precision=16", {"training_params.precision": 16}),
        case("precision=fp16 (runs, or refused on a CPU)", {"training_params.precision": "fp16"}, expect=ANY),
        case("precision=bf16 (valid)", {"training_params.precision": "bf16"}, expect=0),
    ]
    return cases


# -------------------------------------------------------------------------------- files, notes

SPLIT = {"train": list(range(180)), "val": list(range(180, 240))}
IDX = "dataloading_params.idx_dict_path"


def _split(**changes: Any) -> str:
    return json.dumps({**SPLIT, **changes})


BAD_SPLITS = {
    "not JSON": "{not json",
    "a JSON list": "[1, 2]",
    "JSON null": "null",
    "empty file": "",
    "no val": json.dumps({"train": SPLIT["train"]}),
    "train=str": _split(train="x"),
    "negative index": _split(train=[-1, *range(1, 180)]),
    "duplicated index": _split(train=[0, 0, *range(2, 180)]),
    "val equals train": _split(val=SPLIT["train"]),
    "val overlaps train": _split(val=[0, *range(180, 240)]),
    "index out of range": _split(val=[*range(180, 239), 1000]),
    "float index": _split(val=[180.5]),
    "bool index": _split(val=[True]),
    "string index": _split(val=["180"]),
    "huge index": _split(val=[10**30]),
    "empty train": _split(train=[]),
    "nested list": _split(val=[[180]]),
    "num_points mismatch": _split(num_points=5),
    "num_points=str": _split(num_points="x"),
    "dev=str": _split(dev="x"),
    "dev out of range": _split(dev=[1000]),
    "deeply nested JSON": '{"train": ' + "[" * 100_000 + "]" * 100_000 + ', "val": [1]}',
}
PATH_MISTAKES: dict[str, dict[str, Any]] = {
    "model_dir nowhere": {f"{ENC}.model_dir": "no_such_run"},
    "model_dir at a file": {f"{ENC}.model_dir": "models.py"},
    "model_dir=3": {f"{ENC}.model_dir": 3},
    "model_dir=list": {f"{ENC}.model_dir": ["a"]},
    "model_dir with a NUL": {f"{ENC}.model_dir": "a\0b"},
    "dataset_path nowhere": {"dataloading_params.dataset_path": "no_such_data"},
    "dataset_path=3": {"dataloading_params.dataset_path": 3},
    "logging_dir at a file": {"logging_params.logging_dir": "models.py"},
    "logging_dir below a file": {"logging_params.logging_dir": "models.py/runs"},
    "logging_dir=list": {"logging_params.logging_dir": ["runs"]},
    "logging_dir=''": {"logging_params.logging_dir": ""},
    "logging_dir with a NUL": {"logging_params.logging_dir": "ru\0ns"},
    "idx_dict_path nowhere": {IDX: "no_split.json"},
    "idx_dict_path a folder": {IDX: "."},
    "idx_dict_path=3": {IDX: 3},
    "run_notes=list": {"logging_params.run_notes": ["a"]},
    "run_notes=mapping": {"logging_params.run_notes": {"a": 1}},
    "run_notes=true": {"logging_params.run_notes": True},
    "dataset_args=list": {"dataloading_params.dataset_args": [1]},
}
PATH_VALID: dict[str, dict[str, Any]] = {
    "model_dir='' (not set)": {f"{ENC}.model_dir": ""},
    "dataset_path folder": {"dataloading_params.dataset_path": "."},
    "logging_dir nested new folders": {"logging_params.logging_dir": "a/b/c"},
    "val_ratio=0 with --dev": {"dataloading_params.val_ratio": 0},
    "dataset_args key=int (read as text)": {"dataloading_params.dataset_args": {1: 2, False: 3, None: 4, 2.5: 5}},
    "dataset_args free-form": {
        "dataloading_params.dataset_args": {"a": [1, 2.5, None, True, "x"], "b": {"c": {"d": float("inf")}}}
    },
}
RUN_NOTES = {
    "300 characters": "x" * 300,
    "300 non-ASCII characters": "é" * 300,
    "slashes": "../../escape/me",
    "NUL and tabs": "a\0b\tc",
    "an int": 3,
    "a float": 1.5,
    "null": None,
    "empty": "",
    "only symbols": "///***",
    "spaces": "  a  b  ",
    "emoji": "🚀 run " * 40,
}


def path_cases() -> list[dict[str, Any]]:
    """model_dir, dataset_path, logging_dir, idx_dict_path, run_notes and dataset_args."""
    cases = [case(name, changes) for name, changes in PATH_MISTAKES.items()]
    cases += [case(f"{name} (valid)", changes, expect=0) for name, changes in PATH_VALID.items()]
    cases += [
        case(f"idx_dict {label}", {IDX: "split.json"}, files={"split.json": text}) for label, text in BAD_SPLITS.items()
    ]
    cases += [
        case(f"run_notes {label} (valid)", {"logging_params.run_notes": value}, expect=0)
        for label, value in RUN_NOTES.items()
    ]
    return cases + [
        case("idx_dict valid", {IDX: "split.json"}, files={"split.json": _split()}, expect=0),
        case("idx_dict empty val without --dev", {IDX: "split.json"}, files={"split.json": _split(val=[])}, dev=False),
        case("val_ratio=0 without --dev", {"dataloading_params.val_ratio": 0}, dev=False),
        case("dev_num=1 without --dev (valid)", {"dataloading_params.dev_num": 1}, dev=False, expect=0),
        case("model_dir empty folder", {f"{ENC}.model_dir": "empty_run"}, dirs=("empty_run",)),
        case(
            "model_dir empty folder, epoch 3", {f"{ENC}.model_dir": "empty_run", f"{ENC}.epoch": 3}, dirs=("empty_run",)
        ),
    ]


# ---------------------------------------------------------------------------------- YAML text


def _nested(depth: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "leaf: 1\n"


def _bomb(levels: int, indent: str, width: int = 10) -> str:
    """A "billion laughs" mapping: each level repeats the one before ``width`` times."""
    lines = [f"{indent}a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _in(old: str, new: str) -> str:
    """The toy config with one piece of its text replaced."""
    assert old in BASE_TEXT, old
    return BASE_TEXT.replace(old, new, 1)


DL, NOTES, SEED = "dataloading_params:\n", "run_notes: toy", "seed: 1234"
ARGS = DL + "  dataset_args: "
BAD_TEXTS = {
    "duplicate section": BASE_TEXT + "training_params:\n  lrn_rate: 0.1\n",
    "duplicate nested key": _in("  lrn_rate: 0.01\n", "  lrn_rate: 0.01\n  lrn_rate: 0.02\n"),
    "duplicate model": BASE_TEXT + "info_flow:\n  Encoder: {}\n",
    "duplicate key in a flow mapping": _in(DL, ARGS + "{a: 1, a: 2}\n"),
    "duplicate init_args key": _in("      in_dim: 8\n", "      in_dim: 8\n      in_dim: 9\n"),
    "alias bomb in dataset_args": _in(DL, DL + "  dataset_args:\n" + _bomb(9, "    ")),
    "alias bomb at the top": _bomb(8, "") + BASE_TEXT,
    "recursive alias": _in(DL, ARGS + "&loop {self: *loop}\n"),
    "deep flow nesting": _in(DL, ARGS + "{x: " + "[" * 5000 + "]" * 5000 + "}\n"),
    "deep block nesting": BASE_TEXT + "extra:\n" + _nested(3000).replace("k0", "  k0"),
    "nesting 101 levels in dataset_args": _in(DL, ARGS + "{x: " + "[" * 101 + "]" * 101 + "}\n"),
    "unclosed bracket": BASE_TEXT + "oops: [1, 2\n",
    "unclosed quote": _in(NOTES, "run_notes: 'toy"),
    "bad indentation": _in("  lrn_rate", "    lrn_rate"),
    "tab indentation": _in("  seed", "\tseed"),
    "mapping value in a plain scalar": _in(NOTES, "run_notes: a: b"),
    "stray bracket": BASE_TEXT + "]\n",
    "reserved character": _in(NOTES, "run_notes: @toy"),
    "python tag": _in(NOTES, "run_notes: !!python/object/apply:os.system ['echo hi']"),
    "binary tag": _in(NOTES, "run_notes: !!binary aGVsbG8="),
    "timestamp tag": _in(NOTES, "run_notes: !!timestamp 2020-01-01"),
    "set tag": _in(DL, ARGS + "!!set {a, b}\n"),
    "unknown tag": _in(NOTES, "run_notes: !custom toy"),
    "undefined alias": _in(NOTES, "run_notes: *nowhere"),
    "duplicate anchor": _in(DL, ARGS + "{a: &x 1, b: &x 2}\n"),
    "NUL character": _in(NOTES, "run_notes: to\0y"),
    "control character": _in(NOTES, "run_notes: to\x07y"),
    "two documents": BASE_TEXT + "---\nextra: 1\n",
    "int of 5000 digits": _in(SEED, "seed: " + "1" * 5000),
    "!!int abc": _in(SEED, "seed: !!int abc"),
    "!!float abc": _in(SEED, "seed: !!float abc"),
    "!!bool abc": _in("use_GPU: false", "use_GPU: !!bool abc"),
    "unhashable key": BASE_TEXT + "? [a, b]\n: 1\n",
    "a list": "- 1\n- 2\n",
    "a scalar": "hello\n",
    "a number": "3\n",
    "an empty file": "",
    "only comments": "# nothing\n",
    "null": "null\n",
    "empty mapping": "{}\n",
    "empty list": "[]\n",
    "a long line": "x: " + "y" * 200_000 + "\n",
    "dotted top-level key": BASE_TEXT + "training_params.lrn_rate: 0.1\n",
    "escaped surrogate": _in(NOTES, 'run_notes: "\\ud800"'),
    "escaped NUL in a path": _in("logging_dir: runs", 'logging_dir: "ru\\0ns"'),
    "a number as a model name": _in("  Decoder:", "  3:"),
}
GOOD_TEXTS = {
    "date-like run_notes (read as text)": _in(NOTES, "run_notes: 2024-13-45"),
    "merge key": _in(DL, ARGS + "{<<: {a: 1}, b: 2}\n"),
    "anchors shared by models": _in("    init_args:\n      enc_dim: 4\n", "    init_args: &c\n      enc_dim: 4\n"),
    "BOM": "\ufeff" + BASE_TEXT,
    "CRLF line ends": BASE_TEXT.replace("\n", "\r\n"),
    "nesting 90 levels in dataset_args": _in(DL, ARGS + "{x: " + "[" * 90 + "]" * 90 + "}\n"),
}
BAD_BYTES = {
    "latin-1 byte": _in(NOTES, "run_notes: caf\xe9").encode("latin-1"),
    "UTF-16 file": BASE_TEXT.encode("utf-16"),
    "random bytes": bytes(range(256)) * 4,
}


def yaml_cases() -> list[dict[str, Any]]:
    """Files that are not a readable YAML mapping of sections (and a few unusual ones that are)."""
    cases = [case(f"yaml {label}", text=text) for label, text in BAD_TEXTS.items()]
    cases += [case(f"yaml {label} (valid)", text=text, expect=0) for label, text in GOOD_TEXTS.items()]
    cases += [case(f"yaml {label}", data=data) for label, data in BAD_BYTES.items()]
    return cases + [{**case("yaml the config path is a folder"), "config_is_folder": True}]


# ---------------------------------------------------------------------------------- overrides

BOMB = (
    "dataloading_params.dataset_args={a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
    "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}"
)
BAD_OVERRIDES = [
    "a.b",
    "=3",
    "training_params.lrn_rate=[",
    "training_params.=3",
    ".x=1",
    "training_params..lrn_rate=1",
    "training_params.lrn_rate=",
    "training_params.lrn_rate=nan",
    "training_params.lrn_rate=.nan",
    "training_params.lrn_rate=1e999",
    "training_params.seed=1e20",
    "dataloading_params.batch_size=10**30",
    "dataloading_params.batch_size=" + "1" + "0" * 30,
    "dataloading_params.batch_size=true",
    "info_flow.Encoder.init_args.enc_dim=0",
    "info_flow.Nope.train=1",
    "training_params.lrn_rate.x=1",
    "info_flow=[]",
    "info_flow=null",
    "info_flow={}",
    "info_flow.Encoder=3",
    "nope=1",
    "training_params.lrn_rat=3e-4",
    "training_params={a: 1, a: 2}",
    "training_params.seed=" + "1" * 5000,
    "training_params.lrn_rate='0.01",
    "dataloading_params.dataset_args=" + "[" * 200 + "]" * 200,
    "training_params.lrn_rate=!!python/name:os.system",
    "training_params.lrn_rate=*a",
    BOMB,
    "logging_params.logging_dir=models.py",
    "info_flow.Encoder.model_dir=nowhere",
    "dataloading_params.idx_dict_path=nowhere.json",
    "logging_params.run_notes=\udcff",
    "logging_params.logging_dir=ru\udcffns",  # argv bytes that are not UTF-8
]
GOOD_OVERRIDES = [
    "training_params.lrn_rate=3e-4",
    "info_flow.Encoder.init_args.enc_dim=4",
    "logging_params.run_notes=override notes",
    "logging_params.logging_dir=elsewhere",
    "dataloading_params.batch_size=16",
    "logging_params.run_notes=",
    "training_params.optimizer={name: SGD, kwargs: {momentum: 0.5}}",
    "dataloading_params.dataset_args={a: [1, 2]}",
]


def override_cases() -> list[dict[str, Any]]:
    """Broken command-line overrides (and a few valid ones)."""
    cases = [case(f"override {item[:60]}", overrides=(item,)) for item in BAD_OVERRIDES]
    return cases + [case(f"override {item[:60]} (valid)", overrides=(item,), expect=0) for item in GOOD_OVERRIDES]


def all_cases() -> list[dict[str, Any]]:
    return (
        number_cases()
        + section_cases()
        + model_cases()
        + flow_cases()
        + optim_cases()
        + path_cases()
        + yaml_cases()
        + override_cases()
    )


# ------------------------------------------------------------------------------- running them


def run_worker(cases: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """Run every case in the worker; a case that kills the worker is recorded and the rest go on."""
    cases_file, results_file = tmp / "cases.json", tmp / "results.jsonl"
    cases_file.write_text(json.dumps(cases))
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    results: dict[int, dict[str, Any]] = {}
    first = 0
    while first < len(cases):
        proc = subprocess.run(
            [sys.executable, str(WORKER), str(cases_file), str(results_file), str(first)],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for line in results_file.read_text().splitlines() if results_file.exists() else []:
            row = json.loads(line)
            results[row["index"]] = row
        done = max(results, default=-1) + 1
        if done < len(cases):  # the case at `done` killed the worker
            results[done] = {
                "index": done,
                "name": cases[done]["name"],
                "code": None,
                "stdout": proc.stdout,
                "stderr": proc.stderr,
                "run_dirs": [],
                "crash": f"the worker died (exit code {proc.returncode}) in this case",
            }
            done += 1
        first = done
    return [results[i] for i in range(len(cases))]


def _stray_lines(lines: list[str]) -> list[str]:
    """Lines from the first ``error:`` line on that are neither ``error:`` lines nor the count of
    problems (warnings printed before the errors, e.g. by torch while building a model, are fine)."""
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    return [line for line in lines[first:] if not line.startswith("error: ") and PROBLEM_COUNT not in line]


def _why(case_: dict[str, Any], result: dict[str, Any]) -> str | None:
    """What is wrong with one case's outcome (None if nothing)."""
    code, lines = result["code"], [line for line in result["stderr"].splitlines() if line.strip()]
    if result.get("crash"):
        return f"raised instead of exiting: {result['crash'].strip().splitlines()[-1]}"
    if code not in (0, 2):
        return f"exit code {code}; expected 0 or 2"
    if "Traceback" in result["stdout"] + result["stderr"]:
        return "output holds a traceback"
    if case_["expect"] is not None and code != case_["expect"]:
        return f"exit code {code}; expected {case_['expect']} ({'in' if case_['expect'] else ''}valid config)"
    if code == 2 and result["run_dirs"]:
        return f"exit 2 but created the run folder {result['run_dirs'][0]}"
    if code == 2 and not any(line.startswith("error: ") for line in lines):
        return "exit 2 without an 'error: ' line"
    if code == 2 and _stray_lines(lines):  # a problem over several lines, or output after the errors
        return f"exit 2 with a line among the errors that is not 'error: ...': {_stray_lines(lines)[0][:160]!r}"
    if code == 0 and not result["run_dirs"]:
        return "exit 0 but no run folder"
    names = [name.split("/")[-1] for name in result["run_dirs"]]
    if any(len(name.encode()) > MAX_NOTES_IN_NAME + len("YYYYMMDD_NNNN_") for name in names):
        return f"run folder name too long: {names[0][:60]}... ({len(names[0].encode())} bytes)"
    return None


def failure(case_: dict[str, Any], result: dict[str, Any]) -> str | None:
    """The case's name, what went wrong and the first and last lines of its output (None if it passed)."""
    why = _why(case_, result)
    if why is None:
        return None
    text = (result["stderr"] or result["stdout"] or result.get("crash") or "").strip().splitlines() or [""]
    return f"{case_['name']}: {why}\n    first: {text[0][:200]}\n    last:  {text[-1][:200]}"


def test_the_table_has_300_distinct_cases() -> None:
    cases = all_cases()
    names = [c["name"] for c in cases]
    assert len(cases) >= 300, len(cases)
    assert len(set(names)) == len(names), sorted({n for n in names if names.count(n) > 1})


def test_every_config_exits_0_or_2_with_one_line_per_problem(tmp_path: Path) -> None:
    cases = all_cases()
    results = run_worker(cases, tmp_path)
    failures = [f for case_, result in zip(cases, results, strict=True) if (f := failure(case_, result))]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
