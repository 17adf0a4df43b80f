"""How the rest of the runtime names what a config holds: the sources of ``inputs`` (the dataset,
the trainer's clock, a model's tensor), the name a loss or eval is logged under, ``run_notes`` as
part of a run folder's name, and a config as dotted keys.
"""

from __future__ import annotations

import re
from typing import Any

RUN_NOTES_BYTES = 100  # the most of run_notes a run folder's name takes

# Source names in info_flow inputs: tensors of the dataset's items, and the trainer's clock
# ({epoch: trainer} and {step: trainer}: the current epoch, from 1, and global step).
DATASET = "dataset"
TRAINER = "trainer"
TRAINER_TENSORS = ("epoch", "step")


def metric_name(model: str, key: str, term: Any) -> str:
    """``<Model>/<logging_name>``: the name a loss or eval is logged under (``logging_name``
    defaults to the entry's key) in metrics.jsonl, the trackers, ``monitor`` and ``evaluate``."""
    return f"{model}/{term.logging_name or key}"


def safe_run_notes(text: str) -> str:
    """``run_notes`` as part of a folder name: every run of characters other than letters, digits,
    ``.``, ``-`` and ``_`` becomes ``_``, and a long note is cut (not refused) to at most
    :data:`RUN_NOTES_BYTES` bytes of UTF-8, never inside a character."""
    notes = re.sub(r"[^\w.-]+", "_", text.strip()).strip("_")
    return notes.encode("utf-8")[:RUN_NOTES_BYTES].decode("utf-8", "ignore").rstrip("_")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one dict with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); an empty
    mapping and every other value (lists too) are kept as they are. The MLflow params, the config
    changes an update lists and ``load_runs``' ``config.*`` columns are these keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def split_source(source: str, models: Any = ()) -> tuple[str, str | None]:
    """An ``inputs`` source as (where from, tensor name): ``"Encoder"`` -> ``("Encoder", None)``
    (the tensor named like the argument), ``"Encoder.latent"`` -> ``("Encoder", "latent")``,
    ``"dataset.image"`` -> ``("dataset", "image")``. A model in ``models`` whose name holds a dot is
    that model."""
    if source in models or "." not in source:
        return source, None
    where, _, tensor = source.partition(".")
    return where, tensor
