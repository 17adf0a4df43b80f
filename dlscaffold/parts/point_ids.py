"""Point identities: a reused split follows its points, not their places in today's listing.

A dataset index says where a point stands in the dataset's listing (e.g. ``sorted(glob)``), and a
changed data folder (a file renamed, added or removed) moves points to other indices. A
``CustomDataSet`` may therefore define ``point_id(i) -> str``, a short string naming point ``i``
for good (its file's path relative to ``dataset_path``, a record key). With it, a split records
its points' ids beside their indices, under ``"ids"`` (one list per split, aligned with the index
list); without it, a cheap ``"fingerprint"`` of the dataset (its length and class; no item is
read). Every reuse of a saved split (``--resume``, ``idx_dict_path``, seed groups and sweeps,
``evaluate``, ``load_run``) goes through :func:`reuse_split`: the ids are looked up among today's
points, each split keeps its saved order, a point found at another index is taken from there (one
note line), and a point that is gone is one error line. A reuse that cannot be checked (the dataset
has no ``point_id``, or the saved split has no ids) prints one warning line and keeps the indices.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from dlscaffold.data import SPLITS
from dlscaffold.errors import UserError, first_line
from dlscaffold.parts.distributed import world_from_env

IDS, FINGERPRINT = "ids", "fingerprint"
NAMED = (*SPLITS, "test")  # the splits a split file may hold, in the order they are written
SHOWN = 5  # missing points an error names


def point_index(dataset: Any) -> dict[str, int] | None:
    """Today's index of every point by its id (``dataset.point_id(i)`` for each index, in order),
    or None when the dataset defines no ``point_id``.

    Raises:
        UserError: ``point_id`` raises, returns something other than a string, or gives two points
            the same id.
    """
    method = getattr(dataset, "point_id", None)
    if not callable(method):
        return None
    name = type(dataset).__name__
    found: dict[str, int] = {}
    for i in range(len(dataset)):
        try:
            point = method(i)
        except Exception as exc:  # the project's code
            raise UserError(
                f"{name}.point_id({i}) failed: {first_line(exc)}; it must return point {i}'s id, a short string "
                "(e.g. its file's path relative to dataset_path)"
            ) from exc
        if not isinstance(point, str):
            raise UserError(
                f"{name}.point_id({i}) returned {type(point).__name__}; expected a string naming the point "
                "(e.g. its file's path relative to dataset_path)"
            )
        if point in found:
            raise UserError(
                f"{name}.point_id: points {found[point]} and {i} have the same id '{point}'; expected one id per point"
            )
        found[point] = i
    return found


def record_identity(idx_dict: dict[str, Any], dataset: Any, by_id: dict[str, int] | None) -> None:
    """Add to ``idx_dict`` (in place, as its last key) what identifies its points: the ids of every
    split (``by_id`` from :func:`point_index`), or without ``point_id`` the dataset's fingerprint."""
    idx_dict.pop(IDS, None)
    idx_dict.pop(FINGERPRINT, None)
    if by_id is None:
        cls = type(dataset)
        idx_dict[FINGERPRINT] = {"points": len(dataset), "class": cls.__qualname__}
        return
    names = list(by_id)  # by index: point_index inserts them in order
    idx_dict[IDS] = {s: [names[i] for i in idx_dict[s]] for s in NAMED if isinstance(idx_dict.get(s), list)}


def reuse_split(
    saved: dict[str, Any], dataset: Any, by_id: dict[str, int] | None, keep: Collection[str] = ()
) -> dict[str, Any]:
    """A copy of the saved split for today's dataset: with ids on both sides, each split's indices
    are its ids' indices today (in the saved order), ``num_points`` the dataset's length, and one
    note line counts the points that moved; otherwise the indices as saved, with one warning line
    that a changed data folder cannot be detected. Splits named in ``keep`` are left as saved (the
    project gives them anew, e.g. ``test`` from ``test_indices()``).

    Raises:
        UserError: a point of the split is not in the dataset any more (one line naming the first
            few ids and the count).
    """
    idx_dict = dict(saved)
    ids = saved.get(IDS)
    if by_id is None or not isinstance(ids, dict):
        _warn(_unchecked(dataset, by_id))
        return idx_dict
    moved, missing = set(), []
    for name in NAMED:
        if name in keep or not isinstance(saved.get(name), list):
            continue
        for old, point in zip(saved[name], ids[name], strict=True):  # as long: checked by ids_problem
            new = by_id.get(point)
            if new is None:
                missing.append((old, point))
            elif new != old:
                moved.add(point)
        idx_dict[name] = [by_id.get(point) for point in ids[name]]
    missing = [point for _, point in sorted(set(missing))]  # in the order they were listed
    if missing:
        count = f"{len(missing)} points of the split are" if len(missing) != 1 else "1 point of the split is"
        raise UserError(
            f"idx_dict: {count} not in the dataset any more: {', '.join(missing[:SHOWN])} ({len(missing)} missing); "
            "restore them, or train a new split"
        )
    _note(_changes(len(moved), saved.get("num_points"), len(by_id)))
    idx_dict["num_points"] = len(by_id)
    return idx_dict


def ids_problem(idx_dict: dict[str, Any]) -> str | None:
    """What is wrong with a saved split's ``ids``, in one line (None when they are sound or absent):
    a list of strings for each index list the split holds, as long as it."""
    ids = idx_dict.get(IDS)
    if ids is None:
        return None
    if not isinstance(ids, dict):
        return f"'ids' is {type(ids).__name__}; expected a dict of id lists by split, or no 'ids'"
    for name in NAMED:
        indices = idx_dict.get(name)
        names = ids.get(name)
        if not isinstance(indices, list):
            continue
        if not isinstance(names, list) or len(names) != len(indices) or not all(isinstance(n, str) for n in names):
            return f"'ids' of split '{name}': expected a list of {len(indices)} strings, one per index of '{name}'"
    return None


def _changes(moved: int, recorded: Any, points: int) -> str | None:
    """The note on a split that follows its ids, or None when nothing changed."""
    where = "its id is at another index" if moved == 1 else "their ids are at other indices"
    parts = [f"{moved} point{'s' * (moved != 1)} moved ({where} now)"] if moved else []
    if isinstance(recorded, int) and recorded != points:
        parts.append(f"the dataset has {points} points now, {recorded} when the split was made")
    return f"idx_dict: {' and '.join(parts)}; the split follows the ids" if parts else None


def _unchecked(dataset: Any, by_id: dict[str, int] | None) -> str:
    name = type(dataset).__name__
    if by_id is None:
        return (
            f"warning: {name} defines no point_id(i), so a changed data folder (renamed, added or removed files) "
            "cannot be detected when this split is reused; define point_id (docs/data.md)"
        )
    return (
        "warning: the reused split records no point ids (it was saved by an older version, or for a dataset "
        "without point_id), so a changed data folder (renamed, added or removed files) cannot be detected; "
        "its indices are used as they are, and a run that saves the split records their ids from now on"
    )


def _warn(line: str) -> None:
    logging.getLogger("dlscaffold").warning(line)  # other ranks of a data-parallel run say nothing


def _note(line: str | None) -> None:
    if line is not None and world_from_env().main:
        print(line, flush=True)
