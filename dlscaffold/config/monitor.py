"""Which logged value picks a run's best epoch, and in which direction."""

from __future__ import annotations

from dlscaffold.config.names import metric_name
from dlscaffold.config.schema import Config

TOTAL = "total"  # training_params.monitor: the weighted sum of the losses
TOTAL_LOSS = "total_loss"  # ... as metrics.jsonl rows and the trackers log it
NONE = "none"  # training_params.monitor: no best epoch (no <Model>_best.pt, no early stopping), e.g. for a GAN


def logs_total(config: Config) -> bool:
    """Whether a run logs ``total_loss`` (the objective): with two or more losses, or ``monitor: total``."""
    return sum(len(spec.losses) for spec in config.info_flow.values()) > 1 or config.training_params.monitor == TOTAL


def monitored(config: Config) -> tuple[str | None, str]:
    """``(name, mode)`` of the value that picks the best epoch: ``training_params.monitor`` (``total``:
    ``total_loss``), or the first loss of the first trained model; ``min`` for a loss or the total,
    ``max`` for an eval by default. ``(None, "min")`` for ``monitor: none``: the run has no best epoch."""
    tp = config.training_params
    if tp.monitor == NONE:
        return None, "min"
    losses = [metric_name(m, k, t) for m, spec in config.info_flow.items() for k, t in spec.losses.items()]
    trained_first = [
        metric_name(m, k, t) for m, spec in config.info_flow.items() if spec.train for k, t in spec.losses.items()
    ]
    name = TOTAL_LOSS if tp.monitor == TOTAL else tp.monitor or (trained_first + losses + [""])[0]
    return name, tp.monitor_mode or ("min" if name in (*losses, TOTAL_LOSS) else "max")
