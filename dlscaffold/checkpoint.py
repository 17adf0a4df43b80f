"""Checkpoints: per-model weights and the trainer state, written atomically, read safely.

Layout in ``<run>/checkpoints/``:

- ``<Model>_<epoch:06d>.pt``: the model's ``state_dict`` after that epoch (epochs count from 1, so
  ``Encoder_000004.pt`` holds the weights after the fourth epoch, as in the seed);
- ``trainer_<epoch:06d>.pt``: what resuming needs (optimizers, schedulers, RNG states, epoch, step).
  Only the newest one is kept: it is as large as the optimizer state.

Every file goes to a temporary name first and is renamed into place, so a crash never leaves a
half-written checkpoint under a good name. Everything is loaded with ``weights_only=True``.
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


def save_checkpoint(run_dir: Path, epoch: int, step: int, models: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any]) -> None:
    """Write every model's weights and the trainer state for ``epoch``; drop older trainer states."""
    folder = run_dir / "checkpoints"
    folder.mkdir(exist_ok=True)
    for name, model in models.items():
        save_atomic(model.state_dict(), folder / f"{name}_{epoch:06d}.pt")
    trainer = {
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "step": step,
        "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
        "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
        "rng": rng_state(),
    }
    save_atomic(trainer, folder / f"trainer_{epoch:06d}.pt")
    for old in folder.glob("trainer_*.pt"):
        if old.name != f"trainer_{epoch:06d}.pt":
            old.unlink()


def last_trainer_state(run_dir: Path) -> Path:
    """The newest ``trainer_*.pt`` of a run.

    Raises:
        UserError: if the run has none (it never finished an epoch with checkpoints on).
    """
    states = sorted((run_dir / "checkpoints").glob("trainer_[0-9]*.pt"))
    if not states:
        raise UserError(f"--resume: {run_dir} holds no trainer checkpoint; it saved no epoch (was it run with --no-save?)")
    return states[-1]


def load_trainer_state(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {state.get('format_version')}; this dlscaffold reads format {FORMAT_VERSION}")
    return state
