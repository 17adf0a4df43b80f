"""Passes over data without gradients, shared by training (validation) and ``dlscaffold evaluate``.

:class:`Sums` accumulates sample-weighted sums on the device; :func:`evaluate_batch` computes every
loss and eval of one batch; :func:`run_epoch` does a whole split. ``torchmetrics.<Class>`` evals are
updated with every batch and computed once at the end of the pass (exact over the split; they have no
per-sample values, so :class:`Sums` never sees them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dlscaffold.parts.device import Placement
from dlscaffold.parts.device_data import DeviceLoader
from dlscaffold.parts.distributed import all_reduce_sum
from dlscaffold.parts.flow import Flow, batch_size_of
from dlscaffold.parts.precision import Precision
from dlscaffold.parts.tta import Views
from dlscaffold.run.progress import Progress


class Sums:
    """Sample-weighted sums of per-sample values, kept on the device.

    Adding never synchronises with the GPU; only :meth:`means` reads values back (a ``.item()`` per
    step would stall the GPU pipeline).
    """

    def __init__(self, names: list[str], device: torch.device):
        self.names = names
        # float64 keeps long epochs' sums exact; Apple's MPS has no float64
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.totals = torch.zeros(len(names), dtype=self.dtype, device=device)
        self.count = 0

    def add(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        self.add_totals(self.batch_totals(values, batch_size), batch_size)

    def batch_totals(self, values: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        """One batch's sums of ``values``, in this object's order and dtype: what :meth:`add` adds.
        Computed once, they can go into several ``Sums`` of the same names (the epoch's, the log window's)."""
        # A scalar is a batch mean: weigh it by the batch size so epoch values are sample means.
        totals = [v.detach().sum() if v.dim() else v.detach() * batch_size for v in map(values.get, self.names)]
        return torch.stack(totals).to(self.dtype)

    def add_totals(self, totals: torch.Tensor, batch_size: int) -> None:
        """Add what :meth:`batch_totals` gave for a batch of ``batch_size`` points."""
        self.totals += totals
        self.count += batch_size

    def state_dict(self) -> dict[str, Any]:
        """The sums so far (a mid-epoch checkpoint resumes them exactly)."""
        return {"names": list(self.names), "totals": self.totals.cpu(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["names"] == self.names:
            self.totals = state["totals"].to(self.totals.device, self.totals.dtype)
            self.count = int(state["count"])

    def means(self, across_ranks: bool = True) -> dict[str, float]:
        """Sample means; under data-parallel training, over every rank's samples (one collective)."""
        count = torch.tensor([float(self.count)], dtype=self.dtype, device=self.totals.device)
        packed = torch.cat([self.totals, count])
        if across_ranks:
            all_reduce_sum(packed)
        totals, count = packed[:-1], packed[-1]
        values = (totals / count).tolist()  # note: the one GPU sync point; 0/0 (every step skipped) is NaN
        return dict(zip(self.names, values, strict=True))


def rank_position(ranks: list[dict[str, Any]], rank: int, world_size: int, flow: Flow) -> dict[str, Any]:
    """This rank's running sums, log window and torchmetrics states (``sums``, ``window``,
    ``metrics``) from a mid-epoch checkpoint's ``ranks``, one entry per process of the session that
    saved it.

    The same number of processes: each rank its own. Another number (an elastic resume): every saved
    rank's combined into rank 0's, and fresh ones (None) for the others. Epoch values are reduced
    over every rank (:meth:`Sums.means` sums them; torchmetrics syncs its states), so they come out
    as an uninterrupted run's: exactly for the sums and for torchmetrics states that are summed,
    concatenated, or kept as a minimum or maximum (:func:`merged_metrics` says what is approximate).
    The log window's values, rank 0's alone, then cover every saved rank's points.
    """
    if len(ranks) == world_size:
        return ranks[rank]
    if rank > 0:
        return {"sums": None, "window": None, "metrics": None}
    return {
        "sums": combined_sums([r["sums"] for r in ranks]),
        "window": combined_sums([r["window"] for r in ranks]),
        "metrics": merged_metrics(flow, [r["metrics"] or {} for r in ranks]),
    }


def combined_sums(states: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Several :meth:`Sums.state_dict` as one: the totals and counts added."""
    states = [s for s in states if s is not None]
    if not states:
        return None
    totals = torch.stack([s["totals"] for s in states]).sum(dim=0)
    return {"names": list(states[0]["names"]), "totals": totals, "count": sum(int(s["count"]) for s in states)}


def merged_metrics(flow: Flow, states: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' torchmetrics states (:meth:`~dlscaffold.parts.flow.Flow.metrics_state_dict`)
    as one process's, each state reduced as torchmetrics reduces it across processes: list states
    concatenated, tensors stacked and reduced with the metric's ``dist_reduce_fx`` (added,
    concatenated, minimum, maximum, mean or the metric's own function); update counts added.
    Approximate: a state without a reduction keeps the first process's value, and a state averaged
    over processes (``mean``, or a function of the metric's own that is not a sum) when it is later
    spread over more processes than hold points."""
    from torchmetrics.utilities.data import dim_zero_cat

    merged = {}
    for t in flow.metrics:
        saved = [s[t.name] for s in states if s.get(t.name)]
        if not saved:
            continue
        merged[t.name] = {"_update_count": sum(int(s.get("_update_count", 0)) for s in saved)}
        for key in t.metric._defaults:
            values, reduce = [s[key] for s in saved], t.metric._reductions.get(key)
            if isinstance(values[0], list):
                merged[t.name][key] = [v for value in values for v in value]
            elif reduce is dim_zero_cat:
                merged[t.name][key] = torch.cat([v.reshape(1) if v.dim() == 0 else v for v in values])
            elif callable(reduce):
                merged[t.name][key] = reduce(torch.stack(values))
            else:
                merged[t.name][key] = values[0]
    return merged


def evaluate_batch(
    flow: Flow,
    batch: dict[str, Any],
    precision: Precision,
    seen: Callable[[dict[str, Any], dict], None] | None = None,
    views: Views | None = None,
) -> dict[str, torch.Tensor]:
    """Every loss and eval of one batch (the caller sets eval mode and no_grad).

    Returns the per-sample values; the batch is also added to the torchmetrics evals' state
    (:meth:`~dlscaffold.parts.flow.Flow.update_metrics`), which the caller resets and computes.
    """
    with precision.forward_context():
        outputs = flow.forward(batch, needed_only=True) if views is None else views.forward(flow, batch)
        values = flow.values(flow.losses + flow.evals, batch, outputs)
    flow.update_metrics(batch, outputs)  # outside autocast: metric state in full precision
    if seen is not None:  # e.g. the first validation batch's log_images
        seen(batch, outputs)
    return values


@torch.no_grad()
def run_epoch(
    flow: Flow,
    loader: Any,
    placement: Placement,
    precision: Precision,
    transform: Callable,
    progress: Progress,
    label: str,
    first_batch: Callable[[dict[str, Any], dict], None] | None = None,
    views: Views | None = None,
) -> tuple[dict[str, float], int]:
    """Every loss and eval over ``loader`` in eval mode (``views``: with test-time augmentation).

    Returns:
        The sample means of the losses and evals, with the torchmetrics evals' values over the whole
        pass after them; and the sample count.
    """
    flow.set_mode(training=False)
    flow.reset_metrics()
    sums, move = Sums(flow.term_names, placement.device), batch_mover(loader, placement)
    for i, batch in enumerate(progress.track(loader, label)):
        batch = transform(move(batch), False)
        values = evaluate_batch(flow, batch, precision, first_batch if i == 0 else None, views)
        sums.add(values, batch_size_of(batch))
    return {**sums.means(), **flow.compute_metrics()}, sums.count


def batch_mover(loader: Any, placement: Placement) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What brings ``loader``'s batches to the device: ``placement.move``, or nothing for the batches
    of a :class:`~dlscaffold.parts.device_data.DeviceLoader`, which are there already (unless the
    placement also changes their memory format)."""
    on_device = isinstance(loader, DeviceLoader) and not placement.channels_last
    return _as_it_is if on_device else placement.move


def _as_it_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch
