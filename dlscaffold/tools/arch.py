"""The layer plan of a size-driven module, as a table, without training anything.

:func:`plan_table` backs ``dlscaffold arch`` (declared in :mod:`dlscaffold.cli`, which prints the
table)::

    dlscaffold arch conv2d --input 3,32,32 --output 64,1,1
    dlscaffold arch resnetfcn --input 64 --output 10 --num-layers 3

The table shows one row per entry of ``module.plan`` with the parameters of the block built from
it, and the total, which equals ``sum(p.numel() for p in module.parameters())``. Sizes the
heuristic cannot serve raise a :class:`~dlscaffold.errors.UserError` naming sizes that would work.

torch and rich are imported inside :func:`plan_table`, so importing this module, and so starting
the CLI, stays cheap.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from dlscaffold.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from rich.table import Table
    from torch import nn


class ArchKind(str, enum.Enum):
    """The module kinds ``dlscaffold arch`` can plan."""

    conv2d = "conv2d"
    deconv2d = "deconv2d"
    conv1d = "conv1d"
    deconv1d = "deconv1d"
    fcn = "fcn"
    resnetfcn = "resnetfcn"


_CLASS_NAMES = {
    ArchKind.conv2d: "CONV2DN",
    ArchKind.deconv2d: "DECONV2DN",
    ArchKind.conv1d: "CONV1DN",
    ArchKind.deconv1d: "DECONV1DN",
    ArchKind.fcn: "FCN",
    ArchKind.resnetfcn: "ResNetFCN",
}
_DENSE = (ArchKind.fcn, ArchKind.resnetfcn)
# Options that only some kinds take, so that a misplaced one is an error, not silently ignored.
_OPTION_KINDS = {
    "adaptive_pool": (ArchKind.conv2d, ArchKind.deconv2d, ArchKind.conv1d, ArchKind.deconv1d),
    "num_layers": _DENSE,
    "hidden_size": (ArchKind.fcn,),
}
# Short names for the parts of a block in the "layers" column; others show as they are named.
_PART_NAMES = {"norm": "bn"}


def plan_table(
    kind: ArchKind | str,
    input_size: str,
    output_size: str,
    num_layers: int | None = None,
    hidden_size: int | None = None,
    batchnorm: bool | None = None,
    nonlinear: bool = False,
    dropout: bool = False,
    adaptive_pool: bool = False,
) -> Table:
    """The layers a module of ``kind`` would build between the comma-separated sizes, as a rich table.

    Options left at their defaults (None, False) are not passed on: each module keeps its own
    default, and an option a kind does not take is an error only when it is given. Raises
    :class:`UserError` for sizes or options that do not fit.
    """
    kinds = [k.value for k in ArchKind]
    if str(getattr(kind, "value", kind)) not in kinds:
        raise UserError(
            f"unknown module kind '{kind}'; {did_you_mean(str(kind), kinds)}expected one of: {', '.join(kinds)}"
        )
    kind = ArchKind(getattr(kind, "value", kind))
    options: dict[str, object] = {"nonlinear": nonlinear, "dropout": dropout}
    if batchnorm is not None:
        options["batchnorm"] = batchnorm
    if adaptive_pool:
        options["adaptive_pool"] = True
    if num_layers is not None:
        options["num_layers"] = num_layers
    if hidden_size is not None:
        options["hidden_size"] = hidden_size
    try:
        size_in = _parse_size(input_size, "--input")
        size_out = _parse_size(output_size, "--output")
        module = _build(kind, size_in, size_out, options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    title = f"{_CLASS_NAMES[kind]} {_shape(size_in)} -> {_shape(size_out)}"
    return _dense_table(module, title) if kind in _DENSE else _conv_table(module, title)


def _parse_size(text: str, flag: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``."""
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if not size or min(size) < 1:
        raise ValueError(f"{flag} {text!r} is not a comma-separated list of positive integers")
    return size


def _build(kind: ArchKind, size_in: tuple[int, ...], size_out: tuple[int, ...], options: dict) -> nn.Module:
    """Build the module the command describes; ValueError for sizes or options that do not fit."""
    for name, kinds in _OPTION_KINDS.items():
        if name in options and kind not in kinds:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} applies to {', '.join(k.value for k in kinds)} only")
    if kind in _DENSE and (len(size_in) != 1 or len(size_out) != 1):
        raise ValueError(
            f"{kind.value} sizes are feature counts, e.g. --input 64 --output 10; "
            f"got --input {_shape(size_in)} --output {_shape(size_out)}"
        )
    import dlscaffold.modules as modules  # imports torch: only when the command runs

    module_class = getattr(modules, _CLASS_NAMES[kind])
    if kind in _DENSE:
        num_layers = options.pop("num_layers", 2)
        return module_class(size_in[0], size_out[0], num_layers, **options)
    return module_class(size_in, size_out, **options)


def _shape(size: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in size)


def _count(block: nn.Module) -> int:
    return sum(p.numel() for p in block.parameters())


def _parts(block: nn.Module, first: str) -> str:
    """``conv+bn+act``: the block's parts, with its first part named ``first``."""
    names = [name for name, _ in block.named_children()]
    return "+".join([first] + [_PART_NAMES.get(n, n) for n in names[1:]])


def _table(title: str, *headers: str) -> Table:
    """A table with the given column headers and a right-aligned "params" column last."""
    from rich.table import Table

    table = Table(title=title)
    for header in headers:
        table.add_column(header, no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    return table


def _conv_table(module: nn.Module, title: str) -> Table:
    table = _table(title, "#", "layers", "channels", "kernel", "stride", "pad", "output")
    for i, (spec, block) in enumerate(zip(module.plan, module.blocks, strict=True)):
        table.add_row(
            str(i),
            _parts(block, spec.kind),
            f"{spec.in_channels}->{spec.out_channels}",
            _shape(spec.kernel) or "-",
            _shape(spec.stride) or "-",
            _shape(spec.padding) or "-",
            _shape(spec.output_shape),
            f"{_count(block):,}",
            end_section=i == len(module.plan) - 1,
        )
    table.add_row("", "total", "", "", "", "", "", f"{_count(module):,}")
    return table


def _dense_table(module: nn.Module, title: str) -> Table:
    table = _table(title, "#", "kind", "layers", "features")
    for i, (spec, block) in enumerate(zip(module.plan, module.blocks, strict=True)):
        table.add_row(
            str(i),
            spec.kind,
            _parts(block, "linear"),
            f"{spec.in_features}->{spec.out_features}",
            f"{_count(block):,}",
            end_section=i == len(module.plan) - 1,
        )
    table.add_row("", "total", "", "", f"{_count(module):,}")
    return table
