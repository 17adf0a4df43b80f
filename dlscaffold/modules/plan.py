"""Layer plans: the layers a size-driven module builds, as plain data (no torch).

``plan_conv`` computes the layers of the conv family (``CONV2DN``, ``DECONV2DN``, ``CONV1DN``,
``DECONV1DN``); ``plan_fcn`` and ``plan_resnet_fcn`` the widths of the fully-connected ones. The
modules build exactly these plans and expose them as ``module.plan``, so tests, docs and
``dlscaffold arch`` all read the same thing.

The conv rule (the older deep_learning tool's heuristic, made exact):

* Each spatial ratio ``in / out`` is split into prime factors (largest first); each factor ``k``
  (2, 3, 5 or 7) becomes one layer with stride ``k``, kernel ``k + 2`` and padding 1, which maps a
  size ``n`` divisible by ``k`` onto exactly ``n / k`` (``(n + 2 - (k + 2)) // k + 1``).
  Other pairs raise ``ValueError`` (see ``dlscaffold.modules.sizes``).
* Channels change in steps through the powers of two between ``2 * C_in`` and ``C_out``
  (``3 -> 8 -> 16 -> 32 -> 64``); shrinking is the mirror image (``64 -> 32 -> 16 -> 8 -> 3``).
* The stack has as many layers as the longest of these lists; the shorter lists are spread
  evenly over it, with stride-1 layers (kernel 3, padding 1) and unchanged channels in the gaps.
  Growing channels change early, shrinking ones late, so no layer is narrower than it must be.
* A transposed plan is the mirror of the conv plan for the reverse mapping: the same layers in
  reverse order with inputs and outputs swapped. A transposed convolution with kernel ``k + 2``,
  stride ``k`` and padding 1 maps ``n`` onto exactly ``n * k``, so no output padding is needed.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dlscaffold.modules.sizes import check_dim, prime_factors

_DIM_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a conv-family plan. Shapes exclude the batch dimension.

    Attributes:
        kind: ``"conv"``, ``"deconv"`` (transposed convolution) or ``"pool"`` (adaptive average
            pooling, only with ``adaptive_pool=True``).
        in_channels: Channels into the layer.
        out_channels: Channels out of the layer.
        kernel: Kernel size per spatial dimension; ``()`` for ``"pool"``.
        stride: Stride per spatial dimension; ``()`` for ``"pool"``.
        padding: Padding per spatial dimension; ``()`` for ``"pool"``.
        output_padding: Output padding per spatial dimension (transposed convolutions); always
            zeros under this kernel rule, kept so a spec maps one-to-one onto torch's arguments.
        input_shape: ``(C, *spatial)`` into the layer.
        output_shape: ``(C, *spatial)`` out of the layer.
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class LinearSpec:
    """One layer of a fully-connected plan.

    Attributes:
        kind: ``"linear"`` or ``"residual"`` (``x + f(x)``, so ``in_features == out_features``).
        in_features: Width into the layer.
        out_features: Width out of the layer.
    """

    kind: str
    in_features: int
    out_features: int


def _as_size(value: object, name: str) -> tuple[int, ...]:
    """Read a size given as a sequence of positive integers (a YAML list or a tuple).

    Raises:
        ValueError: If ``value`` is not a non-empty sequence of positive integers.
    """
    is_sequence = isinstance(value, Sequence) and not isinstance(value, str)
    if not is_sequence or not value or not all(_is_positive_int(v) for v in value):
        raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def plan_conv(
    input_size: Sequence[int],
    output_size: Sequence[int],
    *,
    transposed: bool = False,
    spatial_dims: int | None = None,
    adaptive_pool: bool = False,
) -> list[LayerSpec]:
    """Plan the layers that map ``input_size`` onto ``output_size``.

    Args:
        input_size: ``(C, *spatial)``, e.g. ``(3, 32, 32)``.
        output_size: ``(C, *spatial)``, e.g. ``(64, 1, 1)``.
        transposed: Plan transposed convolutions (upsampling) instead of convolutions.
        spatial_dims: If given, the number of spatial dimensions both sizes must have.
        adaptive_pool: Serve a spatial ratio the strides cannot reach by stopping at the nearest
            workable size above the request and appending an adaptive average pool onto it.

    Returns:
        One ``LayerSpec`` per layer; the last one's ``output_shape`` equals ``output_size``.

    Raises:
        ValueError: If a size is malformed or a spatial pair cannot be served; the message
            names the sizes that would work.

    Example:
        >>> [s.output_shape for s in plan_conv((3, 8, 8), (16, 2, 2))]
        [(8, 4, 4), (16, 2, 2)]
    """
    size_in = _as_size(input_size, "input_size")
    size_out = _as_size(output_size, "output_size")
    for name, size in (("input_size", size_in), ("output_size", size_out)):
        if spatial_dims is not None and len(size) != spatial_dims + 1:
            layout = ", ".join(("C",) + _dim_names(spatial_dims))
            raise ValueError(f"{name} must have {spatial_dims + 1} entries ({layout}), got {size}")
    if len(size_in) != len(size_out) or len(size_in) < 2:
        raise ValueError(
            f"input_size {size_in} and output_size {size_out} must both be (C, *spatial) "
            "with the same number of spatial dimensions"
        )
    names = _dim_names(len(size_in) - 1)
    reached = tuple(
        check_dim(n, i, o, transposed=transposed, adaptive_pool=adaptive_pool)
        for n, i, o in zip(names, size_in[1:], size_out[1:], strict=False)
    )
    stack_out = (size_out[0], *reached)
    if transposed:
        layers = _mirror(_conv_layers(stack_out, size_in))
    else:
        layers = _conv_layers(size_in, stack_out)
    if stack_out != size_out:
        channels = size_out[0]
        layers.append(LayerSpec("pool", channels, channels, (), (), (), (), stack_out, size_out))
    return layers


def _dim_names(spatial_dims: int) -> tuple[str, ...]:
    return _DIM_NAMES.get(spatial_dims, tuple(f"dim{i}" for i in range(spatial_dims)))


def _conv_layers(size_in: tuple[int, ...], size_out: tuple[int, ...]) -> list[LayerSpec]:
    """The conv layers for a pair already known to be served."""
    strides_per_dim = [prime_factors(i // o) for i, o in zip(size_in[1:], size_out[1:], strict=False)]
    steps = _channel_steps(size_in[0], size_out[0])
    num_layers = max([len(steps), 1] + [len(s) for s in strides_per_dim])
    # strides[d][i]: the stride of layer i along spatial dimension d.
    strides = [_spread(s, num_layers, fill=1) for s in strides_per_dim]
    channels = _channel_schedule(size_in[0], size_out[0], num_layers)
    layers, shape = [], size_in
    for i, out_channels in enumerate(channels):
        stride = tuple(s[i] for s in strides)
        out_shape = (out_channels, *(n // k for n, k in zip(shape[1:], stride, strict=False)))
        layers.append(
            LayerSpec(
                kind="conv",
                in_channels=shape[0],
                out_channels=out_channels,
                kernel=tuple(k + 2 for k in stride),
                stride=stride,
                padding=(1,) * len(stride),
                output_padding=(0,) * len(stride),
                input_shape=shape,
                output_shape=out_shape,
            )
        )
        shape = out_shape
    return layers


def _mirror(layers: list[LayerSpec]) -> list[LayerSpec]:
    """The transposed twin: reverse order, inputs and outputs swapped."""
    return [
        replace(
            s,
            kind="deconv",
            in_channels=s.out_channels,
            out_channels=s.in_channels,
            input_shape=s.output_shape,
            output_shape=s.input_shape,
        )
        for s in reversed(layers)
    ]


def _channel_steps(c_in: int, c_out: int) -> list[int]:
    """Widths the channels pass through after ``c_in``: 3, 64 -> [8, 16, 32, 64] and back."""
    if c_in == c_out:
        return []
    if c_in > c_out:
        return list(reversed([c_out] + _channel_steps(c_out, c_in)))[1:]
    width = 1
    while width < 2 * c_in:
        width *= 2
    steps = []
    while width < c_out:
        steps.append(width)
        width *= 2
    return steps + [c_out]


def _channel_schedule(c_in: int, c_out: int, num_layers: int) -> list[int]:
    """Out-channels of each of ``num_layers`` layers."""
    if c_in > c_out:
        # Mirror of growing c_out -> c_in, so a shrinking stack keeps its width for longest.
        grown = _channel_schedule(c_out, c_in, num_layers)
        return list(reversed([c_out] + grown[:-1]))
    changes = _spread(_channel_steps(c_in, c_out), num_layers, fill=None)
    schedule, width = [], c_in
    for change in changes:
        width = width if change is None else change
        schedule.append(width)
    return schedule


def _spread(values: list, length: int, fill: object) -> list:
    """Place ``values`` evenly (in order) over ``length`` slots; the other slots get ``fill``."""
    slots = [fill] * length
    for j, value in enumerate(values):
        slots[j * length // len(values)] = value
    return slots


def plan_fcn(input_size: int, output_size: int, num_layers: int, hidden_size: int | None = None) -> list[LinearSpec]:
    """Plan a fully-connected stack; hidden layers are ``hidden_size`` wide.

    Args:
        input_size: Input features.
        output_size: Output features.
        num_layers: Number of linear layers (at least 1).
        hidden_size: Hidden width; default ``max(input_size, output_size)`` (the older deep_learning tool's rule).

    Returns:
        One ``LinearSpec`` per linear layer.

    Raises:
        ValueError: If a size or ``num_layers`` is not a positive integer.

    Example:
        >>> [(s.in_features, s.out_features) for s in plan_fcn(64, 10, 3)]
        [(64, 64), (64, 64), (64, 10)]
    """
    _check_dense(input_size, output_size, num_layers)
    hidden = max(input_size, output_size) if hidden_size is None else hidden_size
    if not _is_positive_int(hidden):
        raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
    widths = [input_size] + [hidden] * (num_layers - 1) + [output_size]
    return [LinearSpec("linear", a, b) for a, b in zip(widths, widths[1:], strict=False)]


def plan_resnet_fcn(input_size: int, output_size: int, num_layers: int) -> list[LinearSpec]:
    """Plan a residual fully-connected stack: ``num_layers - 1`` residual blocks, then a projection.

    The residual blocks keep the input width (``x + f(x)`` needs equal widths); the last layer
    projects onto ``output_size``.

    Raises:
        ValueError: If a size or ``num_layers`` is not a positive integer.

    Example:
        >>> [s.kind for s in plan_resnet_fcn(64, 10, 3)]
        ['residual', 'residual', 'linear']
    """
    _check_dense(input_size, output_size, num_layers)
    blocks = [LinearSpec("residual", input_size, input_size) for _ in range(num_layers - 1)]
    return blocks + [LinearSpec("linear", input_size, output_size)]


def _check_dense(input_size: object, output_size: object, num_layers: object) -> None:
    for name, value in (
        ("input_size", input_size),
        ("output_size", output_size),
        ("num_layers", num_layers),
    ):
        if not _is_positive_int(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
