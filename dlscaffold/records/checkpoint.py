"""Checkpoints: naming, writing, finding and reading, in one place.

Layout of ``<run>/checkpoints/``:

- ``<Model>_<epoch:06d>.pt``: the model's ``state_dict`` after that epoch (epochs count from 1, so
  ``Encoder_000004.pt`` holds the weights after the fourth epoch, as in the older deep_learning tool);
- ``trainer_<epoch:06d>.pt``: what resuming needs (optimizers, schedulers, precision state, RNG
  states, epoch, step). Only the newest one is kept: it is as large as the optimizer state.

Every file goes to a temporary name first and is renamed into place, so a crash never leaves a
half-written checkpoint under a good name. Everything is loaded with ``weights_only=True``: a
checkpoint can never run code.
"""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from dlscaffold.config.monitor import NONE
from dlscaffold.errors import UserError, first_line
from dlscaffold.records.rundir import CONFIG_FILE, atomic_file
from dlscaffold.records.summaries import read_run_config

FORMAT_VERSION = 1
TRAINER = "trainer"  # the trainer state files: trainer_<epoch:06d>.pt
CHECKPOINT_DIR = "checkpoints"  # a run folder's weights and trainer states
_logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- naming


def checkpoint_folder(run_or_folder: Path) -> Path:
    """Where a run keeps its weights: ``<run>/checkpoints``, or the folder itself when it is that
    folder (or an older-tool-style folder holding the ``.pt`` files directly)."""
    nested = run_or_folder / CHECKPOINT_DIR
    return nested if nested.is_dir() else run_or_folder


def new_checkpoint_folder(run_dir: Path) -> Path:
    """The checkpoints folder of a run folder being written (made if missing)."""
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    return folder


def has_trainer_state(run_dir: Path) -> bool:
    """Whether a run folder holds a trainer state to resume from (any epoch)."""
    return any((run_dir / CHECKPOINT_DIR).glob(f"{TRAINER}_*.pt"))


def weights_path(run_or_folder: Path, name: str, epoch: int | str) -> Path:
    """The file with ``name``'s weights after ``epoch``: ``<name>_<epoch:06d>.pt``, or for
    ``epoch="best"`` the best validation's weights, ``<name>_best.pt``."""
    return checkpoint_folder(run_or_folder) / f"{name}_{'best' if epoch == 'best' else f'{epoch:06d}'}.pt"


def trained_without_monitor(run_or_folder: Path) -> bool:
    """Whether a run was trained with ``training_params.monitor: none`` (its ``config.yml`` says so), so
    that it has no best epoch. ``run_or_folder``: a run folder or its checkpoints folder; False for a
    folder without a readable config."""
    if (run_or_folder / CONFIG_FILE).is_file() or run_or_folder.name != CHECKPOINT_DIR:
        run = run_or_folder
    else:
        run = run_or_folder.parent
    params = read_run_config(run, lambda _: None).get("training_params")
    return isinstance(params, dict) and params.get("monitor") == NONE


def resolve_epoch(run_dir: Path, models: list[str], epoch: int | str | None, what: str = "--epoch") -> int | str:
    """Which saved weights to load: ``"last"`` / None -> the newest epoch saved for every model;
    ``"best"`` -> the best validation's (``run.json`` records which epoch that was); a number.

    Raises:
        UserError: when the run holds no such weights, naming what it holds, and for ``"best"`` of a run
            trained with ``training_params.monitor: none``, which has no best epoch.
    """
    if epoch in (None, "last"):
        return last_common_epoch(run_dir, models)
    if epoch == "best":
        if trained_without_monitor(run_dir):
            raise UserError(
                f"{what}: found best; {run_dir} was trained with training_params.monitor: {NONE}, so it has no "
                "best epoch: use last or an epoch number"
            )
        if not all(weights_path(run_dir, m, "best").is_file() for m in models):
            raise UserError(f"{what}: {run_dir} records no best epoch (no <Model>_best.pt); use last or a number")
        return "best"
    check_saved_epoch(run_dir, models, int(epoch), what)
    return int(epoch)


def saved_epochs(run_or_folder: Path, name: str) -> list[int]:
    """The epochs for which a run (or checkpoints folder) holds weights of ``name``."""
    epochs = []
    for path in checkpoint_folder(run_or_folder).glob(f"{name}_*.pt"):
        suffix = path.stem[len(name) + 1 :]
        if suffix.isdigit():
            epochs.append(int(suffix))
    return sorted(epochs)


def last_common_epoch(run_dir: Path, models: list[str]) -> int:
    """The newest epoch for which the run holds weights of every model.

    Raises:
        UserError: when no epoch has weights of all of them.
    """
    common = set.intersection(*(set(saved_epochs(run_dir, m)) for m in models))
    if not common:
        raise UserError(
            f"{run_dir}: no epoch with saved weights of every model ({', '.join(models)}); was it run with --no-save?"
        )
    return max(common)


def check_saved_epoch(run_dir: Path, models: list[str], epoch: int, what: str) -> None:
    """Raise a one-line :class:`UserError` unless ``run_dir`` holds every model's weights for ``epoch``."""
    for name in models:
        if epoch not in saved_epochs(run_dir, name):
            saved = ", ".join(map(str, saved_epochs(run_dir, name))) or "none"
            raise UserError(f"{what}: found {epoch}; {run_dir} holds {name} weights for epochs: {saved}")


def last_trainer_state(run_dir: Path) -> Path:
    """The newest ``trainer_*.pt`` of a run.

    Raises:
        UserError: if the run has none (it never finished an epoch with checkpoints on).
    """
    # trainer_<epoch>.pt sorts before trainer_<epoch>_<batches>.pt, a stop inside the next epoch
    states = sorted((run_dir / CHECKPOINT_DIR).glob(f"{TRAINER}_[0-9]*.pt"))
    if not states:
        raise UserError(
            f"--resume: {run_dir} holds no trainer checkpoint; it saved no epoch (was it run with --no-save?)"
        )
    return states[-1]


# ---------------------------------------------------------------------------------- writing


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`~dlscaffold.records.rundir.atomic_file`.

    Serialised in memory first, so that a full disk is an ``OSError`` of the write (one clear line)
    rather than an error deep inside torch's zip writer.
    """
    import torch  # imported when used: reading names and folders needs no torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_file(path, "wb") as fh:
        fh.write(buffer.getbuffer())


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as tensors and plain numbers (``weights_only``-loadable)."""
    import torch  # imported when used: reading names and folders needs no torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def _numpy_state(saved: dict[str, Any]) -> tuple:
    """The tuple ``np.random.set_state`` takes, from :func:`rng_state`'s ``numpy`` entry."""
    keys = saved["keys"].numpy().astype(np.uint32)
    return ("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"])


def _python_state(saved: Any) -> tuple:
    """The tuple ``random.setstate`` takes, from :func:`rng_state`'s ``python`` entry."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def set_rng_state(state: dict[str, Any]) -> None:
    import torch  # imported when used: reading names and folders needs no torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(_numpy_state(state["numpy"]))
    random.setstate(_python_state(state["python"]))


def nonfinite_weights(models: dict[str, nn.Module], states: dict[str, dict[str, Any]] | None = None) -> str | None:
    """Which model holds a NaN or inf parameter, or a NaN buffer (a buffer may hold inf on purpose,
    such as an attention mask), as one phrase; None when none does. ``states``: the models'
    ``state_dict`` (or copies of it) when the caller has them already."""
    import torch  # imported when used: reading names and folders needs no torch

    states = states if states is not None else {name: model.state_dict() for name, model in models.items()}
    values = [v for state in states.values() for v in state.values() if v.is_floating_point()]
    if not values:
        return None
    if len({(v.device, v.dtype) for v in values}) == 1:  # the common case first: one check, one host read
        if bool((torch.cat([v.reshape(-1) for v in values]) * 0).sum() == 0):  # x * 0 is NaN for NaN and inf
            return None
    for name, model in models.items():  # which: a parameter's inf counts, a buffer's may be meant
        params = dict(model.named_parameters(remove_duplicate=False))
        bad = [
            key
            for key, value in model.state_dict().items()
            if value.is_floating_point()
            and not bool(torch.isfinite(value).all() if key in params else ~torch.isnan(value).any())
        ]
        if bad:
            return f"info_flow.{name} holds non-finite values (NaN or inf) in {', '.join(bad[:3])}"
    return None


def _refuse_nonfinite(models: dict[str, nn.Module], what: str, states: dict[str, dict[str, Any]] | None = None) -> bool:
    """True, after one warning line, when a model holds non-finite values: ``what`` is not written."""
    problem = nonfinite_weights(models, states)
    if problem is not None:
        _logger.warning("warning: %s; %s was not written (the files saved before are kept)", problem, what)
    return problem is not None


def save_weights(run_dir: Path, epoch: int, models: dict[str, nn.Module]) -> None:
    """Write every model's ``state_dict`` as ``<Model>_<epoch:06d>.pt``."""
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    for name, model in models.items():
        save_atomic(model.state_dict(), folder / f"{name}_{epoch:06d}.pt")


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    models: dict[str, nn.Module],
    trainer: dict[str, Any],
    position: dict[str, Any] | None = None,
) -> bool:
    """Write every model's weights and the trainer state after ``epoch``; drop older trainer states.
    Returns False, writing nothing, when a model holds NaN or inf (one warning line says which).

    Args:
        run_dir: the run folder.
        epoch: the last finished epoch.
        models: every model of the run, by name.
        trainer: the loop's state (optimizers, schedulers, precision, step, ...).
        position: for a stop inside epoch ``epoch + 1``: ``{"batches": k, ...}``, the batches done
            and the epoch's running sums. The weights then go into the trainer file
            (``trainer_<epoch>_<k>.pt``), not into per-epoch weight files.
    """
    where = f"epoch {epoch}" if position is None else f"epoch {epoch + 1} after {position['batches']} batches"
    if _refuse_nonfinite(models, f"the checkpoint of {where}"):
        return False
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    state = {"format_version": FORMAT_VERSION, "epoch": epoch, **trainer, "rng": rng_state()}
    if position is None:
        save_weights(run_dir, epoch, models)
        name = f"{TRAINER}_{epoch:06d}.pt"
    else:
        state.update(position=position, models={n: m.state_dict() for n, m in models.items()})
        name = f"{TRAINER}_{epoch:06d}_{position['batches']:06d}.pt"
    save_atomic(state, folder / name)
    for old in folder.glob(f"{TRAINER}_*.pt"):
        if old.name != name:
            old.unlink()
    return True


def snapshot_weights(models: dict[str, nn.Module], what: str) -> dict[str, dict[str, torch.Tensor]] | None:
    """Each model's ``state_dict``, copied to the CPU (to be written later, whatever training does to
    the models meanwhile); None, after one warning line, when a model holds NaN or inf."""
    copies = {name: _copied(model.state_dict()) for name, model in models.items()}
    return None if _refuse_nonfinite(models, what, copies) else copies


def _copied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``state_dict`` copied to the CPU as ``torch.save`` would store it: its version metadata kept,
    a tensor that appears under two keys (tied weights) copied once."""
    copies: dict[int, torch.Tensor] = {}
    copy = type(state)()
    for key, value in state.items():
        if id(value) not in copies:
            copies[id(value)] = value.detach().to("cpu", copy=True)
        copy[key] = copies[id(value)]
    if hasattr(state, "_metadata"):
        copy._metadata = state._metadata  # type: ignore[attr-defined]
    return copy


def save_best(run_dir: Path, epoch: int, models: dict[str, nn.Module]) -> bool:
    """``<Model>_best.pt``: the weights after the validation with the best monitored value
    (:func:`write_best`). Returns False, writing nothing, when a model holds NaN or inf (one warning
    line says which); weights linked from the epoch's own files were checked when those were saved."""
    if not all(weights_path(run_dir, n, epoch).is_file() for n in models) and _refuse_nonfinite(
        models, f"the best weights of epoch {epoch}"
    ):
        return False
    write_best(run_dir, epoch, {name: model.state_dict() for name, model in models.items()})
    return True


def write_best(run_dir: Path, epoch: int, weights: dict[str, dict[str, Any]]) -> None:
    """Each model's ``weights`` (a ``state_dict``, checked already) as ``<Model>_best.pt``: a hard
    link to the epoch's own weight file when it is there (no second write)."""
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    for name, state in weights.items():
        best, saved = weights_path(run_dir, name, "best"), weights_path(run_dir, name, epoch)
        if saved.is_file():
            tmp = best.with_name(best.name + ".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(saved, tmp)
                os.replace(tmp, best)
                continue
            except OSError:  # a filesystem without hard links: write the weights
                tmp.unlink(missing_ok=True)
        save_atomic(state, best)


# ---------------------------------------------------------------------------------- reading


def read_checkpoint(path: Path) -> Any:
    """``torch.load(..., weights_only=True)``; a corrupt, empty or foreign file is one clear line."""
    import torch  # imported when used: reading names and folders needs no torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # truncated zip, pickle with code in it, empty file, ...
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {detail}); it may be truncated "
            "or not a dlscaffold checkpoint: use another epoch or run"
        ) from None


def load_trainer_state(path: Path) -> dict[str, Any]:
    """A ``trainer_*.pt``, its structure checked before anything is restored from it.

    Raises:
        UserError: a foreign format, or a missing or malformed key (``optimizers``, ``rng``, an
            ``epoch`` that is no whole number, an RNG state this torch, NumPy or Python cannot
            take, ...), as one line naming the file and the key.
    """
    state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: checkpoint format {found}; this dlscaffold reads format {FORMAT_VERSION}")
    problem = trainer_state_problem(state)
    if problem is not None:
        raise UserError(
            f"{path}: {problem}; the file is damaged or was not written by dlscaffold: put back an intact copy, "
            "or start a new run (info_flow.<Model>.model_dir loads this run's saved weights)"
        )
    return state


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _found(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _cuda_state(states: Any) -> None:
    import torch  # imported when used: reading names and folders needs no torch

    if not isinstance(states, (list, tuple)) or not all(isinstance(s, torch.Tensor) for s in states):
        raise TypeError(f"found {_found(states)}; expected a list of tensors")
    for device, state in enumerate(states if torch.cuda.is_available() else []):  # what this machine restores
        if device < torch.cuda.device_count():
            torch.Generator(device=f"cuda:{device}").set_state(state)


def _torch_generator() -> torch.Generator:
    import torch

    return torch.Generator()


# Each RNG state is tried on a fresh generator of its kind: the library itself says whether it fits.
_RNG_CHECKS = {
    "torch": lambda state: _torch_generator().set_state(state),
    "cuda": _cuda_state,
    "numpy": lambda state: np.random.RandomState().set_state(_numpy_state(state)),
    "python": lambda state: random.Random().setstate(_python_state(state)),
}


def _rng_problem(rng: Any, key: str) -> str | None:
    if not isinstance(rng, dict):
        return f"the trainer state's '{key}' holds {_found(rng)}; expected the RNG states saved with it"
    for name, check in _RNG_CHECKS.items():
        if name not in rng:
            return f"the trainer state's '{key}' has no '{name}' RNG state"
        try:
            check(rng[name])
        except Exception as exc:  # wrong size or dtype, not a tensor, a short tuple, ...
            return f"the trainer state's '{key}.{name}' is not an RNG state this {name} can take ({first_line(exc)})"
    return None


def _states(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


# What resuming reads: key -> (required, check, what it must hold).
_TRAINER_KEYS = {
    "epoch": (True, _count, "a whole number of at least 0"),
    "step": (True, _count, "a whole number of at least 0"),
    "optimizers": (True, _states, "each trained model's optimizer state, by model name"),
    "schedulers": (True, _states, "each trained model's scheduler state, by model name"),
    "models": (False, _states, "each model's weights, by model name"),
    "monitor": (False, lambda v: isinstance(v, dict), "the monitored best value and its epoch"),
    "position": (False, lambda v: isinstance(v, dict) and _count(v.get("batches")), "the batches done in the epoch"),
    "rng_ranks": (False, lambda v: isinstance(v, list), "one RNG state per process"),
}


def trainer_state_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a trainer checkpoint's structure, as one phrase naming the key (None:
    everything resuming reads is there, of the right kind)."""
    for key, (required, fits, expected) in _TRAINER_KEYS.items():
        if key not in state and required:
            return f"the trainer state has no '{key}'"
        if (required or state.get(key) is not None) and not fits(state[key]):
            return f"the trainer state's '{key}' holds {_found(state[key])}; expected {expected}"
    if "rng" not in state:
        return "the trainer state has no 'rng'"
    ranks = [(f"rng_ranks[{rank}]", rng) for rank, rng in enumerate(state.get("rng_ranks") or [])]
    return next((p for key, rng in [("rng", state["rng"]), *ranks] if (p := _rng_problem(rng, key))), None)


def load_weights(model: nn.Module, path: Path, who: str) -> None:
    """Load a saved ``state_dict`` into ``model`` (``weights_only``: a checkpoint can never run code)."""
    import torch  # imported when used: reading names and folders needs no torch

    state = read_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{who}: {path} holds no state_dict (found {type(state).__name__}); expected a model's weights")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        _logger.warning("warning: %s holds non-finite values (NaN or inf) in %s", path, ", ".join(bad[:3]))
    load_state_dict(model, state, who, path)


def load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], who: str, path: Path | None = None) -> None:
    """``model.load_state_dict(state)``, with weights that do not fit as one line."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        source = f"weights in {path}" if path else "the saved weights"
        raise UserError(f"{who}: {source} do not fit the model ({first}); check init_args") from None
