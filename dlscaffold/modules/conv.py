"""Convolution stacks built from the sizes they map between: CONV2DN, DECONV2DN, CONV1DN, DECONV1DN.

Each module computes its layers with ``plan_conv`` (see ``dlscaffold.modules.plan`` for the rule)
and keeps them as ``module.plan``; ``module.blocks[i]`` is the ``nn.Sequential`` built from
``module.plan[i]``: the convolution, then BatchNorm, LeakyReLU(0.1) and dropout, in that order.
The last convolution stays linear (no norm, activation or dropout) unless ``nonlinear=True``,
because its output is usually an encoding or logits. A convolution followed by BatchNorm has no
bias (the norm's shift replaces it).

Initialisation: Kaiming normal with the LeakyReLU gain, biases 0, BatchNorm weight 1 / bias 0
(see ``dlscaffold.modules.weight_init``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from dlscaffold.modules.dropout import MCDropout
from dlscaffold.modules.plan import LayerSpec, plan_conv
from dlscaffold.modules.weight_init import LEAKY_RELU_SLOPE, init_weights

# (spatial dims, transposed) -> layer class
_CONVS = {
    (1, False): nn.Conv1d,
    (1, True): nn.ConvTranspose1d,
    (2, False): nn.Conv2d,
    (2, True): nn.ConvTranspose2d,
}
_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_POOLS = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


def build_conv_blocks(
    plan: Sequence[LayerSpec],
    *,
    nonlinear: bool,
    batchnorm: bool,
    dropout: bool,
    dropout_prob: float,
    uc: bool,
) -> nn.Sequential:
    """Build one ``nn.Sequential`` per plan entry, chained in an ``nn.Sequential``."""
    last_conv = max(i for i, spec in enumerate(plan) if spec.kind != "pool")
    blocks = []
    for i, spec in enumerate(plan):
        dims = len(spec.output_shape) - 1
        if spec.kind == "pool":
            blocks.append(nn.Sequential(OrderedDict(pool=_POOLS[dims](spec.output_shape[1:]))))
            continue
        activate = i != last_conv or nonlinear
        norm = activate and batchnorm
        conv_class = _CONVS[dims, spec.kind == "deconv"]
        extra = {"output_padding": spec.output_padding} if spec.kind == "deconv" else {}
        layers = OrderedDict(
            conv=conv_class(
                spec.in_channels,
                spec.out_channels,
                kernel_size=spec.kernel,
                stride=spec.stride,
                padding=spec.padding,
                bias=not norm,
                **extra,
            )
        )
        if norm:
            layers["norm"] = _NORMS[dims](spec.out_channels)
        if activate:
            layers["act"] = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        if activate and dropout:
            layers["drop"] = MCDropout(dropout_prob, channelwise=True, uc=uc)
        blocks.append(nn.Sequential(layers))
    return nn.Sequential(*blocks)


def _check_input(x: torch.Tensor, input_size: tuple[int, ...], owner: str) -> None:
    if tuple(x.shape[1:]) != input_size:
        raise ValueError(f"{owner} expects (N, {', '.join(map(str, input_size))}), got {tuple(x.shape)}")


class _ConvStack(nn.Module):
    """What the four stacks share: build ``blocks`` from the plan, check the input's shape."""

    spatial_dims: int
    transposed: bool

    def __init__(
        self,
        input_size: Sequence[int],
        output_size: Sequence[int],
        *,
        nonlinear: bool = False,
        batchnorm: bool = True,
        dropout: bool = False,
        dropout_prob: float = 0.5,
        uc: bool = False,
        adaptive_pool: bool = False,
    ):
        super().__init__()
        self.plan = plan_conv(
            input_size,
            output_size,
            transposed=self.transposed,
            spatial_dims=self.spatial_dims,
            adaptive_pool=adaptive_pool,
        )
        self.input_size = self.plan[0].input_shape
        self.output_size = self.plan[-1].output_shape
        self.blocks = build_conv_blocks(
            self.plan, nonlinear=nonlinear, batchnorm=batchnorm, dropout=dropout,
            dropout_prob=dropout_prob, uc=uc,
        )  # fmt: skip
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *spatial_in) -> (N, C_out, *spatial_out)."""
        _check_input(x, self.input_size, type(self).__name__)
        return self.blocks(x)


class CONV2DN(_ConvStack):
    """2-D convolution stack from ``(C, H, W)`` down to ``(C, H, W)``.

    Strides come from the prime factors of ``H_in / H_out`` and ``W_in / W_out``; channels grow
    or shrink in powers of two between ``C_in`` and ``C_out``.

    Args:
        input_size: ``(C, H, W)`` of the input, without the batch dimension.
        output_size: ``(C, H, W)`` of the output, without the batch dimension.
        nonlinear: Add BatchNorm / activation / dropout after the last layer too.
        batchnorm: Add BatchNorm after each convolution (except a linear last one).
        dropout: Add channel dropout after each activation.
        dropout_prob: Probability of dropping a channel.
        uc: Keep dropout active in eval mode (MC dropout); see ``set_uc``.
        adaptive_pool: Serve a spatial ratio the strides 2, 3, 5, 7 cannot reach by stopping at
            the nearest workable size above the request and pooling adaptively onto it.

    Attributes:
        plan: The ``LayerSpec`` list the module was built from.
        blocks: One ``nn.Sequential`` per plan entry.

    Raises:
        ValueError: If the sizes cannot be served; the message names the sizes that would work.

    Example:
        >>> net = CONV2DN((3, 32, 32), (64, 1, 1))
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 64, 1, 1])
    """

    spatial_dims, transposed = 2, False


class DECONV2DN(_ConvStack):
    """2-D transposed-convolution stack from ``(C, H, W)`` up to ``(C, H, W)``.

    The mirror of ``CONV2DN``: ``DECONV2DN(b, a)`` has the layers of ``CONV2DN(a, b)`` in
    reverse order with inputs and outputs swapped, so it maps ``b`` back onto ``a``.

    Args:
        input_size: ``(C, H, W)`` of the input, without the batch dimension.
        output_size: ``(C, H, W)`` of the output, without the batch dimension.
        nonlinear, batchnorm, dropout, dropout_prob, uc, adaptive_pool: as for ``CONV2DN``.

    Attributes:
        plan: The ``LayerSpec`` list the module was built from.
        blocks: One ``nn.Sequential`` per plan entry.

    Raises:
        ValueError: If the sizes cannot be served; the message names the sizes that would work.

    Example:
        >>> net = DECONV2DN((64, 1, 1), (3, 32, 32))
        >>> net(torch.zeros(2, 64, 1, 1)).shape
        torch.Size([2, 3, 32, 32])
    """

    spatial_dims, transposed = 2, True


class CONV1DN(_ConvStack):
    """1-D convolution stack from ``(C, L)`` down to ``(C, L)``, e.g. for short time series.

    Args:
        input_size: ``(C, L)`` of the input, without the batch dimension.
        output_size: ``(C, L)`` of the output, without the batch dimension.
        nonlinear, batchnorm, dropout, dropout_prob, uc, adaptive_pool: as for ``CONV2DN``.

    Attributes:
        plan: The ``LayerSpec`` list the module was built from.
        blocks: One ``nn.Sequential`` per plan entry.

    Raises:
        ValueError: If the sizes cannot be served; the message names the sizes that would work.

    Example:
        >>> net = CONV1DN((4, 30), (16, 1))
        >>> net(torch.zeros(2, 4, 30)).shape
        torch.Size([2, 16, 1])
    """

    spatial_dims, transposed = 1, False


class DECONV1DN(_ConvStack):
    """1-D transposed-convolution stack from ``(C, L)`` up to ``(C, L)``; the mirror of ``CONV1DN``.

    Args:
        input_size: ``(C, L)`` of the input, without the batch dimension.
        output_size: ``(C, L)`` of the output, without the batch dimension.
        nonlinear, batchnorm, dropout, dropout_prob, uc, adaptive_pool: as for ``CONV2DN``.

    Attributes:
        plan: The ``LayerSpec`` list the module was built from.
        blocks: One ``nn.Sequential`` per plan entry.

    Raises:
        ValueError: If the sizes cannot be served; the message names the sizes that would work.

    Example:
        >>> net = DECONV1DN((16, 1), (4, 30))
        >>> net(torch.zeros(2, 16, 1)).shape
        torch.Size([2, 4, 30])
    """

    spatial_dims, transposed = 1, True
