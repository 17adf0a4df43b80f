"""A finished run folder as commands name it: the folder itself, and its epochs (``best|last|N``).

:func:`parse_epoch` is the one reader of the epoch vocabulary, for ``--epoch`` of the CLI,
:func:`dlscaffold.evaluate.evaluate`, :func:`dlscaffold.load_run` and ``info_flow.<Model>.epoch``
(defined in :mod:`dlscaffold.config`, whose schema reads that key with it). Which weights a parsed
epoch means in a given run is :func:`dlscaffold.records.checkpoint.resolve_epoch`; for a model loaded with
``model_dir``, :func:`model_epoch` and :func:`model_weights`. Nothing here imports torch at import time.
"""

from __future__ import annotations

from pathlib import Path

# The epoch vocabulary lives with the config schema, which reads info_flow.<Model>.epoch with it.
from dlscaffold.config import BEST
from dlscaffold.config import LAST as LAST
from dlscaffold.config import parse_epoch as parse_epoch
from dlscaffold.errors import UserError
from dlscaffold.records.rundir import RUN_INFO_FILE, is_run_dir, read_run_info


def check_run_dir(run_dir: Path) -> Path:
    """The run folder, absolute; a one-line :class:`UserError` when ``run_dir`` is not one."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not is_run_dir(run_dir):
        raise UserError(
            f"{run_dir}: not a run folder (no config.yml and idx_dict.json in it); "
            "pass a folder printed by dlscaffold train"
        )
    return run_dir


def epoch_number(run_dir: Path, epoch: int | str) -> int | str:
    """The number of a saved epoch: for ``"best"`` the epoch ``run.json`` records as best (``"best"``
    itself when it records none)."""
    if epoch != BEST:
        return epoch
    best = read_run_info(run_dir).get("best")
    number = best.get("epoch") if isinstance(best, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else epoch


def model_epoch(model_dir: Path, name: str, epoch: int | str, what: str) -> int:
    """The saved epoch that ``info_flow.<name>.epoch`` names in an earlier run (``model_dir``), as a
    number: ``best`` and ``last`` resolve as ``evaluate --epoch`` does
    (:func:`~dlscaffold.records.checkpoint.resolve_epoch`, then :func:`epoch_number`), a number must be saved.

    Raises:
        UserError: one line naming ``what`` when the run holds no such weights of ``name``.
    """
    from dlscaffold.records.checkpoint import resolve_epoch, saved_epochs  # imports torch

    if isinstance(epoch, int):
        if model_weights(model_dir, name, epoch) is None:
            saved = ", ".join(map(str, saved_epochs(model_dir, name))) or "none"
            raise UserError(f"{what}: found {epoch}; {model_dir} holds {name} weights for epochs: {saved}")
        return epoch
    try:
        number = epoch_number(_run_of(model_dir), resolve_epoch(model_dir, [name], epoch, what))
    except UserError as exc:  # e.g. "last" in a folder without weights: name the key
        raise UserError(*(p if p.startswith(what) else f"{what}: found {epoch}; {p}" for p in exc.problems)) from None
    if not isinstance(number, int):
        saved = ", ".join(map(str, saved_epochs(model_dir, name))) or "none"
        raise UserError(
            f"{what}: found {BEST}, but no run.json beside {model_dir} records which epoch {name}_best.pt "
            f"holds; use a number: it holds {name} weights for epochs: {saved}"
        )
    return number


def model_weights(model_dir: Path, name: str, epoch: int) -> Path | None:
    """The file with ``name``'s weights after ``epoch`` in an earlier run: ``<name>_<epoch:06d>.pt``,
    or ``<name>_best.pt`` when ``epoch`` is the run's best and was saved only as that (``save_every``
    skipped it); None when the run holds neither."""
    from dlscaffold.records.checkpoint import weights_path  # imports torch

    saved, best = weights_path(model_dir, name, epoch), weights_path(model_dir, name, BEST)
    if saved.is_file():
        return saved
    return best if best.is_file() and epoch_number(_run_of(model_dir), BEST) == epoch else None


def _run_of(model_dir: Path) -> Path:
    """The run folder of a ``model_dir``: the folder itself, or the run its ``checkpoints`` folder is in."""
    return model_dir if (model_dir / RUN_INFO_FILE).is_file() else model_dir.parent
