"""Numbers in a config, and the epoch vocabulary.

:data:`Int` and :data:`Float` are the schema's number types: never true/false (pydantic would read
it as 1/0), integers within int64 (a whole float such as ``1e3`` is 1000), floats within a float's
range. :func:`parse_epoch` is the one reader of ``best``, ``last`` or a saved epoch number, for
``--epoch``, ``load_run(epoch=...)`` and ``info_flow.<Model>.epoch`` (:func:`saved_epoch`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator

from dlscaffold.errors import UserError

INT64_MAX = 2**63 - 1


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
