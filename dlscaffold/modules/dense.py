"""Fully-connected stacks built from the widths they map between: FCN and ResNetFCN.

Each hidden layer is Linear, then BatchNorm (if asked), LeakyReLU(0.1) and dropout (if asked);
the last layer stays linear unless ``nonlinear=True``. ``module.plan`` lists the layers as
``LinearSpec`` and ``module.blocks[i]`` is the ``nn.Sequential`` built from ``module.plan[i]``.

Initialisation: Kaiming normal with the LeakyReLU gain, biases 0, BatchNorm weight 1 / bias 0
(see ``dlscaffold.modules.weight_init``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from dlscaffold.modules.dropout import MCDropout
from dlscaffold.modules.plan import LinearSpec, plan_fcn, plan_resnet_fcn
from dlscaffold.modules.weight_init import LEAKY_RELU_SLOPE, init_weights


def build_dense_block(
    spec: LinearSpec,
    *,
    activate: bool,
    batchnorm: bool,
    dropout: bool,
    dropout_prob: float,
    uc: bool,
) -> nn.Sequential:
    """Linear -> [BatchNorm] -> LeakyReLU -> [dropout]; just Linear when ``activate`` is False."""
    norm = activate and batchnorm
    # A Linear followed by BatchNorm needs no bias: the norm's shift replaces it.
    layers = OrderedDict(linear=nn.Linear(spec.in_features, spec.out_features, bias=not norm))
    if norm:
        layers["norm"] = nn.BatchNorm1d(spec.out_features)
    if activate:
        layers["act"] = nn.LeakyReLU(LEAKY_RELU_SLOPE)
    if activate and dropout:
        layers["drop"] = MCDropout(dropout_prob, uc=uc)
    return nn.Sequential(layers)


def _check_input(x: torch.Tensor, input_size: int, owner: str) -> None:
    if x.dim() != 2 or x.shape[1] != input_size:
        raise ValueError(f"{owner} expects (N, {input_size}), got {tuple(x.shape)}")


class FCN(nn.Module):
    """Fully-connected stack from ``input_size`` to ``output_size`` features.

    Hidden layers are ``hidden_size`` wide, by default ``max(input_size, output_size)`` (the
    older deep_learning tool's rule: never narrower than either end).

    Args:
        input_size: Input features.
        output_size: Output features.
        num_layers: Number of linear layers (1 = a single ``nn.Linear``).
        hidden_size: Width of the hidden layers; default ``max(input_size, output_size)``.
        nonlinear: Add BatchNorm / activation / dropout after the last layer too.
        batchnorm: Add BatchNorm1d after each hidden linear layer.
        dropout: Add dropout after each activation.
        dropout_prob: Probability of dropping an element.
        uc: Keep dropout active in eval mode (MC dropout); see ``set_uc``.

    Attributes:
        plan: The ``LinearSpec`` list the module was built from.
        blocks: One ``nn.Sequential`` per plan entry.

    Raises:
        ValueError: If a size or ``num_layers`` is not a positive integer.

    Example:
        >>> net = FCN(64, 10, num_layers=3)
        >>> net(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        num_layers: int,
        *,
        hidden_size: int | None = None,
        nonlinear: bool = False,
        batchnorm: bool = True,
        dropout: bool = False,
        dropout_prob: float = 0.5,
        uc: bool = False,
    ):
        super().__init__()
        self.plan = plan_fcn(input_size, output_size, num_layers, hidden_size)
        self.input_size = input_size
        self.output_size = output_size
        last = len(self.plan) - 1
        self.blocks = nn.Sequential(
            *(
                build_dense_block(
                    spec,
                    activate=i != last or nonlinear,
                    batchnorm=batchnorm,
                    dropout=dropout,
                    dropout_prob=dropout_prob,
                    uc=uc,
                )  # fmt: skip
                for i, spec in enumerate(self.plan)
            )
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, input_size) -> (N, output_size)."""
        _check_input(x, self.input_size, type(self).__name__)
        return self.blocks(x)


class ResNetFCN(nn.Module):
    """Residual fully-connected stack: ``num_layers - 1`` blocks ``x + f(x)``, then a projection.

    Each residual block is ``input_size`` wide (the skip connection needs equal widths) and
    ``f`` is Linear -> [BatchNorm] -> LeakyReLU -> [dropout]; the last layer is a Linear onto
    ``output_size`` (linear unless ``nonlinear=True``). With ``num_layers=1`` it is one Linear.

    Args:
        input_size: Input features (also the width of the residual stream).
        output_size: Output features.
        num_layers: Number of linear layers, the projection included.
        nonlinear: Add BatchNorm / activation / dropout after the projection too.
        batchnorm: Add BatchNorm1d inside each residual block (off by default, as in the older deep_learning tool).
        dropout: Add dropout after each activation.
        dropout_prob: Probability of dropping an element.
        uc: Keep dropout active in eval mode (MC dropout); see ``set_uc``.

    Attributes:
        plan: The ``LinearSpec`` list the module was built from.
        blocks: One ``nn.Sequential`` per plan entry.

    Raises:
        ValueError: If a size or ``num_layers`` is not a positive integer.

    Example:
        >>> net = ResNetFCN(64, 10, num_layers=3)
        >>> net(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        num_layers: int,
        *,
        nonlinear: bool = False,
        batchnorm: bool = False,
        dropout: bool = False,
        dropout_prob: float = 0.5,
        uc: bool = False,
    ):
        super().__init__()
        self.plan = plan_resnet_fcn(input_size, output_size, num_layers)
        self.input_size = input_size
        self.output_size = output_size
        self.blocks = nn.ModuleList(
            build_dense_block(
                spec,
                activate=spec.kind == "residual" or nonlinear,
                batchnorm=batchnorm,
                dropout=dropout,
                dropout_prob=dropout_prob,
                uc=uc,
            )  # fmt: skip
            for spec in self.plan
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, input_size) -> (N, output_size)."""
        _check_input(x, self.input_size, type(self).__name__)
        for spec, block in zip(self.plan, self.blocks, strict=False):
            x = x + block(x) if spec.kind == "residual" else block(x)  # (N, input_size) until last
        return x
