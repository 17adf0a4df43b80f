"""Which spatial sizes a stack of strided (transposed) convolutions can map between.

Pure Python (no torch). A conv stack shrinks a spatial size only by products of the strides 2, 3,
5 and 7 (the older deep_learning tool's heuristic), so ``n -> m`` is served when ``m`` divides ``n`` and ``n / m`` has
no prime factor above 7; a transposed stack serves the mirror image, ``m -> n``. Everything else
gets a ``ValueError`` that says why and names the nearest sizes that would work.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SUPPORTED_PRIMES = (2, 3, 5, 7)

# How many alternatives an error message lists: enough to pick from, short enough for one line.
_MAX_OUTPUT_SUGGESTIONS = 8
_MAX_INPUT_SUGGESTIONS = 4


def prime_factors(n: int) -> list[int]:
    """Prime factors of ``n`` with repeats, largest first.

    Args:
        n: A positive integer.

    Returns:
        The factors, e.g. ``12 -> [3, 2, 2]``; ``1 -> []``.
    """
    factors = []
    p = 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return sorted(factors, reverse=True)


def is_served_ratio(ratio: int) -> bool:
    """True when every prime factor of ``ratio`` is one of 2, 3, 5, 7 (so is ``1``)."""
    return all(p in SUPPORTED_PRIMES for p in prime_factors(ratio))


def conv_sizes(size_in: int) -> list[int]:
    """Sizes a conv stack can reach from ``size_in``: divisors ``d`` with a served ``size_in / d``.

    Example:
        >>> conv_sizes(32)
        [1, 2, 4, 8, 16, 32]
    """
    divisors = set()
    for d in range(1, math.isqrt(size_in) + 1):
        if size_in % d == 0:
            divisors.update((d, size_in // d))
    return sorted(d for d in divisors if is_served_ratio(size_in // d))


def deconv_sizes(size_in: int, up_to: int) -> list[int]:
    """Sizes a transposed-conv stack can reach from ``size_in``, up to ``up_to``.

    Example:
        >>> deconv_sizes(3, 30)
        [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    """
    return [size_in * m for m in _smooth_numbers(up_to // size_in)]


def _smooth_numbers(limit: int) -> list[int]:
    """All numbers in [1, limit] whose prime factors are 2, 3, 5 or 7, ascending."""
    found = {1}
    frontier = [1]
    while frontier:
        grown = [n * p for n in frontier for p in SUPPORTED_PRIMES if n * p <= limit]
        frontier = [n for n in grown if n not in found]
        found.update(frontier)
    return sorted(n for n in found if n <= limit)


def _nearest(candidates: Iterable[int], target: int, count: int) -> list[int]:
    """The ``count`` candidates closest to ``target``, in ascending order."""
    closest = sorted(set(candidates), key=lambda n: (abs(n - target), n))[:count]
    return sorted(closest)


def _joined(sizes: list[int]) -> str:
    return ", ".join(str(s) for s in sizes)


def check_dim(name: str, size_in: int, size_out: int, *, transposed: bool, adaptive_pool: bool) -> int:
    """Check that one spatial dimension can be served; return the size the layers will reach.

    Args:
        name: The dimension's name for messages (``"H"``, ``"W"``, ``"L"``).
        size_in: The input size of this dimension.
        size_out: The requested output size.
        transposed: True for a transposed (upsampling) stack.
        adaptive_pool: Whether an unserved ratio may be reached by stopping at the nearest
            served size above ``size_out`` and pooling adaptively onto ``size_out``.

    Returns:
        ``size_out`` when the ratio is served, otherwise (only with ``adaptive_pool``) the
        smallest served size above it.

    Raises:
        ValueError: If the pair cannot be served; the message names the sizes that would work.
    """
    big, small = (size_out, size_in) if transposed else (size_in, size_out)
    if small > big:
        # Pooling cannot help a stack that goes the wrong way: point at the twin module instead.
        verb, twin = ("shrink", "CONV") if transposed else ("enlarge", "DECONV")
        what = "a transposed convolution" if transposed else "a convolution"
        reason = f"{what} cannot {verb} a size (use the {twin} modules)"
        raise ValueError(_message(name, size_in, size_out, reason, transposed, pool_hint=False))
    ratio = big // small
    if big % small:
        reason = f"{big}/{small} is not an integer"
    elif not is_served_ratio(ratio):
        reason = f"{big}/{small} = {ratio} has the prime factor {prime_factors(ratio)[0]} (strides are 2, 3, 5 and 7)"
    else:
        return size_out
    if not adaptive_pool:
        raise ValueError(_message(name, size_in, size_out, reason, transposed, pool_hint=True))
    if transposed:
        return min(s for s in deconv_sizes(size_in, 2 * size_out) if s >= size_out)
    return min(s for s in conv_sizes(size_in) if s >= size_out)


def _message(name: str, size_in: int, size_out: int, reason: str, transposed: bool, pool_hint: bool) -> str:
    """One line: what failed, why, which outputs work from this input, which inputs reach it."""
    if transposed:
        outputs = deconv_sizes(size_in, max(2 * size_out, 8 * size_in))
        inputs = conv_sizes(size_out)
    else:
        outputs = conv_sizes(size_in)
        inputs = deconv_sizes(size_out, max(2 * size_in, 8 * size_out))
    outputs = _nearest(outputs, size_out, _MAX_OUTPUT_SUGGESTIONS)
    inputs = _nearest(inputs, size_in, _MAX_INPUT_SUGGESTIONS)
    text = (
        f"cannot map {name} {size_in} -> {size_out}: {reason}; "
        f"sizes that work: {_joined(outputs)}; "
        f"inputs that reach {size_out}: {_joined(inputs)}"
    )
    if pool_hint:
        text += f"; or pass adaptive_pool=True to pool onto {size_out}"
    return text
