"""The non-finite guard's test: whether a step's losses and gradients are all finite.

:class:`FiniteCheck` answers with one fused kernel over every tensor and one host read. The kernel
is the one torch's gradient scaler uses to find overflowed gradients
(``torch._amp_foreach_non_finite_check_and_unscale_``), called with a scale of 1: it raises a flag
where a value is NaN or inf and writes every value back as it was (``x * 1`` is ``x``, bit for bit).
On a CPU that is a third of the time of a gradient norm followed by a test of the norm, which is
what a step without clipping paid for its guard before. A device without that kernel, or gradients
it does not take (sparse, tensor subclasses), fall back to testing the total norm.
"""

from __future__ import annotations

from typing import Any

import torch


class FiniteCheck:
    """``FiniteCheck()(tensors)``: whether every value of ``tensors`` is finite (one host read)."""

    def __init__(self) -> None:
        # Whether the fused kernel serves: decided at the first call, from the tensors' kinds (a
        # step's gradients are of the same kinds every step), and turned off if the kernel fails.
        self.fused: bool | None = None
        self.flag: torch.Tensor | None = None  # the kernel sets it to 1 for a NaN or inf (reset after)
        self.one: torch.Tensor | None = None  # the scale the kernel multiplies by
        self.view: Any = None  # on a CPU, the flag's memory as a NumPy array

    def __call__(self, tensors: list[torch.Tensor]) -> bool:
        if not tensors:
            return True
        if self.fused is None:
            devices = {t.device for t in tensors}
            self.fused = len(devices) == 1 and all(_plain_float(t) for t in tensors)
            if self.fused:
                self.flag, self.one = torch.zeros(1, device=tensors[0].device), torch.ones(1, device=tensors[0].device)
                # On a CPU the flag is read through a NumPy view of its memory: no tensor call a step.
                self.view = self.flag.numpy() if self.flag.device.type == "cpu" else None
        if self.fused:
            try:
                torch._amp_foreach_non_finite_check_and_unscale_(tensors, self.flag, self.one)
            except (NotImplementedError, RuntimeError):  # no such kernel here (or another device): the norm
                self.fused = False
            else:  # the flag stays 0 while every step is finite: no reset needed
                if not (self.view[0] if self.view is not None else bool(self.flag)):
                    return True
                self.flag.zero_()
                return False
        norm = torch.nn.utils.get_total_norm([t.detach() for t in tensors])
        return bool(torch.isfinite(norm))


def _plain_float(tensor: torch.Tensor) -> bool:
    """A dense floating-point tensor (no subclass): what the fused kernel takes."""
    return type(tensor) is torch.Tensor and tensor.layout == torch.strided and tensor.is_floating_point()
