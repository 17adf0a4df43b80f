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
        # A scalar is a batch mean: weigh it by the batch size so epoch values are sample means.
        totals = [v.detach().sum() if v.dim() else v.detach() * batch_size for v in map(values.get, self.names)]
        self.totals += torch.stack(totals).to(self.dtype)
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
    sums = Sums(flow.term_names, placement.device)
    for i, batch in enumerate(progress.track(loader, label)):
        batch = transform(placement.move(batch), False)
        values = evaluate_batch(flow, batch, precision, first_batch if i == 0 else None, views)
        sums.add(values, batch_size_of(batch))
    return {**sums.means(), **flow.compute_metrics()}, sums.count
