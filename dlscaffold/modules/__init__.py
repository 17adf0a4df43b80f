"""Network modules generated from the tensor sizes they map between (the older deep_learning tool's CONV2DN family).

Each class is a plain ``torch.nn.Module`` whose ``forward`` takes a tensor and returns a tensor;
user models compose them. The conv and fully-connected ones expose the layers they were built
from as ``module.plan`` (``LayerSpec`` / ``LinearSpec`` dataclasses), computed by the pure
functions ``plan_conv``, ``plan_fcn`` and ``plan_resnet_fcn``; ``dlscaffold arch`` prints them.

* ``CONV2DN``, ``DECONV2DN`` (``conv.py``): ``input_size=(C, H, W)``, ``output_size=(C, H, W)``.
* ``CONV1DN``, ``DECONV1DN`` (``conv.py``): the same with ``(C, L)`` sizes.
* ``FCN``, ``ResNetFCN`` (``dense.py``): ``input_size``, ``output_size``, ``num_layers``.
* ``Embedding`` (``embedding.py``): ``num_embed``, ``embed_dim``.
* ``Transformer`` (``transformer.py``): ``input_size``, ``num_enc_layers``, ``num_dec_layers``.
* ``TransformerComparer`` (``transformer.py``): ``input_size``, ``num_layers``.

The size rules live in ``plan.py`` (layers) and ``sizes.py`` (which sizes can be served, and the
errors naming the ones that would work); initialisation in ``weight_init.py``; MC dropout in
``dropout.py``.

Names are loaded on first use, so ``dlscaffold.modules.plan`` can be read without importing torch.

Example:
    >>> from dlscaffold.modules import CONV2DN, ResNetFCN
    >>> encoder = CONV2DN((3, 32, 32), (64, 1, 1))
    >>> [spec.stride for spec in encoder.plan]
    [(2, 2), (2, 2), (2, 2), (2, 2), (2, 2)]
    >>> classifier = ResNetFCN(64, 10, num_layers=3)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

# public name -> submodule that defines it
_EXPORTS = {
    "CONV2DN": "conv",
    "DECONV2DN": "conv",
    "CONV1DN": "conv",
    "DECONV1DN": "conv",
    "FCN": "dense",
    "ResNetFCN": "dense",
    "Embedding": "embedding",
    "Transformer": "transformer",
    "TransformerComparer": "transformer",
    "choose_nhead": "transformer",
    "MCDropout": "dropout",
    "set_uc": "dropout",
    "init_weights": "weight_init",
    "LayerSpec": "plan",
    "LinearSpec": "plan",
    "plan_conv": "plan",
    "plan_fcn": "plan",
    "plan_resnet_fcn": "plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, visible to type checkers and IDEs
    from dlscaffold.modules.conv import CONV1DN, CONV2DN, DECONV1DN, DECONV2DN
    from dlscaffold.modules.dense import FCN, ResNetFCN
    from dlscaffold.modules.dropout import MCDropout, set_uc
    from dlscaffold.modules.embedding import Embedding
    from dlscaffold.modules.plan import (
        LayerSpec,
        LinearSpec,
        plan_conv,
        plan_fcn,
        plan_resnet_fcn,
    )
    from dlscaffold.modules.transformer import Transformer, TransformerComparer, choose_nhead
    from dlscaffold.modules.weight_init import init_weights
