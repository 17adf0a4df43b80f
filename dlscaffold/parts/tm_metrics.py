"""``torchmetrics.<Class>`` evals: the name prefix, the class lookup and building one metric.

torchmetrics (and torch) are imported only when a metric is looked up, so the pre-run checks can
import this module before anything heavy is loaded.
"""

from __future__ import annotations

from typing import Any

from dlscaffold.errors import UserError, did_you_mean, first_line

TORCHMETRICS = "torchmetrics."  # the prefix of an eval that names a torchmetrics.Metric class
_NOT_METRICS = ("Metric", "CompositionalMetric")  # exported base classes, not metrics one configures


def is_torchmetric(name: str) -> bool:
    """Whether a loss or eval name names a torchmetrics class (``torchmetrics.<Class>``)."""
    return name.startswith(TORCHMETRICS)


def torchmetrics_class(name: str) -> type:
    """The ``torchmetrics.Metric`` class that ``torchmetrics.<Class>`` names.

    Raises:
        UserError: one line, with a did-you-mean, when torchmetrics exports no such Metric class.
    """
    try:
        import torchmetrics
    except ImportError:
        raise UserError(f"'{name}': torchmetrics is not installed; pip install torchmetrics") from None
    names = [
        n
        for n, obj in vars(torchmetrics).items()
        if not n.startswith("_")
        and n not in _NOT_METRICS
        and isinstance(obj, type)
        and issubclass(obj, torchmetrics.Metric)
    ]
    wanted = name[len(TORCHMETRICS) :]
    if wanted not in names:
        choices = [TORCHMETRICS + n for n in names]
        raise UserError(
            f"unknown torchmetrics metric '{name}'; {did_you_mean(name, choices)}expected a Metric "
            "class that torchmetrics exports, e.g. torchmetrics.Accuracy, torchmetrics.F1Score, "
            "torchmetrics.AUROC, torchmetrics.MeanSquaredError"
        )
    return getattr(torchmetrics, wanted)


def build_metric(name: str, init_args: dict[str, Any], path: str) -> Any:
    """``torchmetrics.<Class>(**init_args)`` on the CPU; arguments it rejects are one line.

    Raises:
        UserError: an unknown class, or ``init_args`` the class's constructor refuses.
    """
    cls = torchmetrics_class(name)
    try:
        return cls(**init_args)
    except Exception as exc:  # torchmetrics constructors validate their arguments
        shown = ", ".join(f"{k}={v!r}" for k, v in init_args.items())
        raise UserError(
            f"{path}.init_args: {name}({shown}) failed: {first_line(exc)}; "
            "see the class's arguments in the torchmetrics documentation"
        ) from None
