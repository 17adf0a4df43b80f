"""Embedding: a thin ``nn.Embedding``, built from sizes like the rest of the module library."""

from __future__ import annotations

import torch
from torch import nn


class Embedding(nn.Module):
    """A lookup table of ``num_embed`` vectors of ``embed_dim`` entries each.

    Weights keep ``nn.Embedding``'s initialisation (standard normal).

    Args:
        num_embed: Number of categories (rows of the table).
        embed_dim: Size of each embedding vector.
        padding_idx: A category whose vector stays zero and gets no gradient (e.g. padding).
        max_norm: Renormalise looked-up vectors whose norm exceeds this.
        scale_grad_by_freq: Scale gradients by the inverse frequency of the indices in a batch.
        sparse: Produce sparse gradients (needs an optimizer that accepts them).

    Example:
        >>> embed = Embedding(10, 4)
        >>> embed(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 4])
    """

    def __init__(
        self,
        num_embed: int,
        embed_dim: int,
        *,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ):
        super().__init__()
        for name, value in (("num_embed", num_embed), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_embed = num_embed
        self.embed_dim = embed_dim
        self.embed = nn.Embedding(
            num_embed,
            embed_dim,
            padding_idx=padding_idx,
            max_norm=max_norm,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
        )

    def forward(self, idxs: torch.Tensor) -> torch.Tensor:
        """(*) integer indices -> (*, embed_dim)."""
        return self.embed(idxs)
