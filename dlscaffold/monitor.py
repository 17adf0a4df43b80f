"""Which logged value picks a run's best epoch, and in which direction."""

from __future__ import annotations

from dlscaffold.config import Config, metric_name


def monitored(config: Config) -> tuple[str, str]:
    """``(name, mode)`` of the value that picks the best epoch: ``training_params.monitor``, or the
    first loss of the first trained model; ``min`` for a loss, ``max`` for an eval by default."""
    tp = config.training_params
    losses = [metric_name(m, k, t) for m, spec in config.info_flow.items() for k, t in spec.losses.items()]
    trained_first = [
        metric_name(m, k, t) for m, spec in config.info_flow.items() if spec.train for k, t in spec.losses.items()
    ]
    name = tp.monitor or (trained_first + losses + [""])[0]
    return name, tp.monitor_mode or ("min" if name in losses else "max")
