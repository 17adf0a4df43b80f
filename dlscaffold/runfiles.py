"""A finished run folder as commands name it: the folder itself, and its epochs (``best|last|N``).

:func:`parse_epoch` is the one reader of the epoch vocabulary, for ``--epoch`` of the CLI,
:func:`dlscaffold.evaluate.evaluate` and :func:`dlscaffold.load_run`; which weights a parsed
epoch means in a given run is :func:`dlscaffold.checkpoint.resolve_epoch`. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

from dlscaffold.errors import UserError
from dlscaffold.rundir import is_run_dir, read_run_info

BEST, LAST = "best", "last"


def check_run_dir(run_dir: Path) -> Path:
    """The run folder, absolute; a one-line :class:`UserError` when ``run_dir`` is not one."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not is_run_dir(run_dir):
        raise UserError(
            f"{run_dir}: not a run folder (no config.yml and idx_dict.json in it); "
            "pass a folder printed by dlscaffold train"
        )
    return run_dir


def parse_epoch(value: int | str, what: str = "--epoch") -> int | str:
    """``"best"``, ``"last"`` or a saved epoch number (an int, or its digits as text).

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
    raise UserError(f"{what}: found {shown}; expected a saved epoch number, {BEST} or {LAST}")


def epoch_number(run_dir: Path, epoch: int | str) -> int | str:
    """The number of a saved epoch: for ``"best"`` the epoch ``run.json`` records as best (``"best"``
    itself when it records none)."""
    if epoch != BEST:
        return epoch
    best = read_run_info(run_dir).get("best")
    number = best.get("epoch") if isinstance(best, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else epoch
