"""Transformers sized by their feature width: Transformer and TransformerComparer.

The number of attention heads follows from ``input_size`` (see ``choose_nhead``): the largest
divisor of ``input_size`` between ``min_nhead`` (default 2) and ``max_nhead`` (default 8). The
lower bound 2 is the older deep_learning tool's: a width with no such divisor (a prime above 8, say) is more often
a typo than a wish for single-head attention, so it is an error unless ``min_nhead=1`` is passed.

Tensors are batch-first: ``(N, T, E)`` with ``E = input_size``. Padding masks are ``(N, T)``
booleans, True where a position is padding (and is ignored), as in ``torch.nn``. Weights keep
torch's initialisation (Xavier uniform inside ``nn.Transformer``, the layers' own elsewhere).
"""

from __future__ import annotations

import torch
from torch import nn

from dlscaffold.modules.dropout import MCDropout


def choose_nhead(input_size: int, max_nhead: int = 8, min_nhead: int = 2) -> int:
    """The largest divisor of ``input_size`` in ``[min_nhead, max_nhead]``.

    Args:
        input_size: Feature width ``E``; each head attends over ``E / nhead`` features.
        max_nhead: Most heads allowed.
        min_nhead: Fewest heads allowed; pass 1 to allow single-head attention.

    Returns:
        The number of heads.

    Raises:
        ValueError: If an argument is not a positive integer, ``min_nhead > max_nhead``, or no
            divisor lies in range; the message names the nearest widths that would work.

    Example:
        >>> choose_nhead(64), choose_nhead(12), choose_nhead(13, min_nhead=1)
        (8, 6, 1)
    """
    for name, value in (
        ("input_size", input_size),
        ("max_nhead", max_nhead),
        ("min_nhead", min_nhead),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if min_nhead > max_nhead:
        raise ValueError(f"min_nhead ({min_nhead}) must not exceed max_nhead ({max_nhead})")

    def heads(width: int) -> int | None:
        return next((h for h in range(max_nhead, min_nhead - 1, -1) if width % h == 0), None)

    nhead = heads(input_size)
    if nhead is not None:
        return nhead
    below = next((n for n in range(input_size - 1, 0, -1) if heads(n)), None)
    # A multiple of max_nhead always works, so this search ends within max_nhead steps.
    above = next(n for n in range(input_size + 1, input_size + max_nhead + 1) if heads(n))
    works = ", ".join(str(n) for n in (below, above) if n is not None)
    hint = "; or pass min_nhead=1 for single-head attention" if min_nhead > 1 else ""
    raise ValueError(
        f"input_size {input_size} has no divisor between {min_nhead} and {max_nhead}, so it "
        f"cannot be split evenly over attention heads; sizes that work: {works}{hint}"
    )


class Transformer(nn.Module):
    """Encoder-decoder transformer (``nn.Transformer``) sized by ``input_size``.

    Args:
        input_size: Feature width ``E`` of source and target.
        num_enc_layers: Encoder layers.
        num_dec_layers: Decoder layers.
        max_nhead: Most attention heads (see ``choose_nhead``).
        min_nhead: Fewest attention heads (see ``choose_nhead``).
        dim_feedforward: Width of each layer's feed-forward network.
        dropout_prob: Dropout inside the transformer layers.
        activation: ``"relu"`` or ``"gelu"``.

    Attributes:
        nhead: The number of attention heads chosen.

    Raises:
        ValueError: If ``input_size`` has no head count in range or a layer count is below 1.

    Example:
        >>> net = Transformer(16, num_enc_layers=1, num_dec_layers=1, dim_feedforward=32)
        >>> net(torch.zeros(2, 5, 16), torch.zeros(2, 3, 16)).shape
        torch.Size([2, 3, 16])
    """

    def __init__(
        self,
        input_size: int,
        num_enc_layers: int,
        num_dec_layers: int,
        *,
        max_nhead: int = 8,
        min_nhead: int = 2,
        dim_feedforward: int = 2048,
        dropout_prob: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        for name, value in (("num_enc_layers", num_enc_layers), ("num_dec_layers", num_dec_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.input_size = input_size
        self.nhead = choose_nhead(input_size, max_nhead, min_nhead)
        self.model = nn.Transformer(
            d_model=input_size,
            nhead=self.nhead,
            num_encoder_layers=num_enc_layers,
            num_decoder_layers=num_dec_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout_prob,
            activation=activation,
            batch_first=True,
        )

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """(N, S, E) source, (N, T, E) target -> (N, T, E).

        Args:
            source: The encoder's input.
            target: The decoder's input.
            src_key_padding_mask: (N, S), True at padded source positions; also hides them
                from the decoder's cross-attention.
            tgt_key_padding_mask: (N, T), True at padded target positions.
            causal: Let target position t attend only to positions <= t.
        """
        tgt_mask = None
        if causal:
            tgt_mask = nn.Transformer.generate_square_subsequent_mask(
                target.shape[1], device=target.device, dtype=target.dtype
            )  # (T, T), -inf above the diagonal
        return self.model(
            source,
            target,
            tgt_mask=tgt_mask,
            src_key_padding_mask=src_key_padding_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=src_key_padding_mask,
            tgt_is_causal=causal,
        )


class TransformerComparer(nn.Module):
    """A decoder stack that compares a sequence with itself: each layer uses its input as memory.

    Every layer is (MC) dropout, then ``nn.TransformerDecoderLayer(x, memory=x)``: self-attention
    and cross-attention over the same sequence, with padded positions masked in both. The older tool
    used it to compare long time series with themselves.

    Args:
        input_size: Feature width ``E``.
        num_layers: Decoder layers.
        max_nhead: Most attention heads (see ``choose_nhead``).
        min_nhead: Fewest attention heads (see ``choose_nhead``).
        dim_feedforward: Width of each layer's feed-forward network.
        dropout: Add dropout before each layer (on top of the layers' internal dropout).
        dropout_prob: Dropout probability, for both.
        uc: Keep the added dropout active in eval mode (MC dropout); see ``set_uc``.

    Attributes:
        nhead: The number of attention heads chosen.

    Raises:
        ValueError: If ``input_size`` has no head count in range or ``num_layers`` is below 1.

    Example:
        >>> net = TransformerComparer(16, num_layers=2)
        >>> net(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        input_size: int,
        num_layers: int,
        *,
        max_nhead: int = 8,
        min_nhead: int = 2,
        dim_feedforward: int = 128,
        dropout: bool = True,
        dropout_prob: float = 0.1,
        uc: bool = False,
    ):
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        self.input_size = input_size
        self.nhead = choose_nhead(input_size, max_nhead, min_nhead)
        self.drops = nn.ModuleList(
            MCDropout(dropout_prob, uc=uc) if dropout else nn.Identity() for _ in range(num_layers)
        )
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(input_size, self.nhead, dim_feedforward, dropout=dropout_prob, batch_first=True)
            for _ in range(num_layers)
        )

    def forward(self, seq: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, E) -> (N, T, E); ``padding_mask`` is (N, T), True at padded positions."""
        out = seq
        for drop, layer in zip(self.drops, self.layers, strict=False):
            out = drop(out)
            # The sequence is its own memory, so the same mask hides padding in both attentions.
            out = layer(out, out, tgt_key_padding_mask=padding_mask, memory_key_padding_mask=padding_mask)
        return out
