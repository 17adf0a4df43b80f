"""Dropout that can stay on at evaluation time, for Monte-Carlo dropout (the older deep_learning tool's ``uc``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MCDropout(nn.Module):
    """Dropout with an ``uc`` switch that keeps it active in eval mode.

    With ``uc=False`` this is ordinary dropout: active in ``train()``, identity in ``eval()``.
    With ``uc=True`` it also drops in ``eval()``, so repeated forward passes of a trained model
    sample from its MC-dropout predictive distribution.

    Args:
        p: Probability of dropping an element (or a channel), in [0, 1).
        channelwise: Drop whole channels of an ``(N, C, *spatial)`` tensor (one draw per sample
            and channel, as ``Dropout1d``/``Dropout2d`` do) instead of single elements.
        uc: Keep dropout active in eval mode.

    Raises:
        ValueError: If ``p`` is not in [0, 1).
    """

    def __init__(self, p: float = 0.5, *, channelwise: bool = False, uc: bool = False):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {p!r}")
        self.p = p
        self.channelwise = channelwise
        self.uc = uc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training or self.uc) or self.p == 0.0:
            return x
        if not self.channelwise:
            return F.dropout(x, self.p, training=True)
        # One keep/drop draw per (sample, channel), broadcast over the spatial dims: (N, C, 1, ...).
        mask_shape = x.shape[:2] + (1,) * (x.dim() - 2)
        keep = F.dropout(x.new_ones(mask_shape), self.p, training=True)  # 0 or 1 / (1 - p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, channelwise={self.channelwise}, uc={self.uc}"


def set_uc(module: nn.Module, uc: bool) -> None:
    """Switch MC-dropout on or off in every ``MCDropout`` inside ``module``.

    Example:
        >>> net = FCN(8, 2, 2, dropout=True)  # doctest: +SKIP
        >>> set_uc(net, True)                 # doctest: +SKIP
    """
    for child in module.modules():
        if isinstance(child, MCDropout):
            child.uc = uc
