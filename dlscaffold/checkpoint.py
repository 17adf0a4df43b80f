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

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlscaffold.errors import UserError
from dlscaffold.rundir import atomic_file

FORMAT_VERSION = 1
TRAINER = "trainer"

# ---------------------------------------------------------------------------------- naming


def checkpoint_folder(run_or_folder: Path) -> Path:
    """Where a run keeps its weights: ``<run>/checkpoints``, or the folder itself when it is that
    folder (or an older-tool-style folder holding the ``.pt`` files directly)."""
    nested = run_or_folder / "checkpoints"
    return nested if nested.is_dir() else run_or_folder


def weights_path(run_or_folder: Path, name: str, epoch: int) -> Path:
    """The file with ``name``'s weights after ``epoch``: ``<name>_<epoch:06d>.pt``."""
    return checkpoint_folder(run_or_folder) / f"{name}_{epoch:06d}.pt"


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
        raise UserError(f"{run_dir}: no epoch with saved weights of every model ({', '.join(models)}); "
                        "was it run with --no-save?")
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
    states = sorted((run_dir / "checkpoints").glob(f"{TRAINER}_[0-9]*.pt"))
    if not states:
        raise UserError(f"--resume: {run_dir} holds no trainer checkpoint; it saved no epoch "
                        "(was it run with --no-save?)")
    return states[-1]


# ---------------------------------------------------------------------------------- writing


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`~dlscaffold.rundir.atomic_file`."""
    with atomic_file(path, "wb") as fh:
        torch.save(obj, fh)


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as tensors and plain numbers (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_weights(run_dir: Path, epoch: int, models: dict[str, nn.Module]) -> None:
    """Write every model's ``state_dict`` as ``<Model>_<epoch:06d>.pt``."""
    folder = run_dir / "checkpoints"
    folder.mkdir(exist_ok=True)
    for name, model in models.items():
        save_atomic(model.state_dict(), folder / f"{name}_{epoch:06d}.pt")


def save_checkpoint(run_dir: Path, epoch: int, models: dict[str, nn.Module], trainer: dict[str, Any]) -> None:
    """Write every model's weights and the trainer state for ``epoch``; drop older trainer states.

    Args:
        run_dir: the run folder.
        epoch: the epoch just finished.
        models: every model of the run, by name.
        trainer: the trainer's ``state_dict()`` (optimizers, schedulers, precision, step).
    """
    save_weights(run_dir, epoch, models)
    folder = run_dir / "checkpoints"
    state = {"format_version": FORMAT_VERSION, "epoch": epoch, **trainer, "rng": rng_state()}
    save_atomic(state, folder / f"{TRAINER}_{epoch:06d}.pt")
    for old in folder.glob(f"{TRAINER}_*.pt"):
        if old.name != f"{TRAINER}_{epoch:06d}.pt":
            old.unlink()


# ---------------------------------------------------------------------------------- reading


def load_trainer_state(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {state.get('format_version')}; "
                        f"this dlscaffold reads format {FORMAT_VERSION}")
    return state


def load_weights(model: nn.Module, path: Path, who: str) -> None:
    """Load a saved ``state_dict`` into ``model`` (``weights_only``: a checkpoint can never run code)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise UserError(f"{who}: weights in {path} do not fit the model ({first}); check init_args") from None
