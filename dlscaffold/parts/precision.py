"""Numerical precision of a run, as one small object the training step calls.

In the spirit of Lightning Fabric's precision plugins: the step asks the precision for its forward
context, lets it do ``backward(loss)`` and ``step(optimizers)``, and never branches on fp32 / bf16 /
fp16 itself. The object owns the gradient scaler (fp16) and its state goes into the trainer
checkpoint, so a resumed fp16 run continues exactly.

- ``fp32``: plain float32.
- ``bf16``: forward and losses under ``torch.autocast`` with bfloat16 (CPU or GPU); no scaling.
- ``fp16``: autocast with float16 and a ``torch.amp.GradScaler``; steps with inf/NaN gradients are
  skipped by the scaler (and counted), the scale adapts.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Forward context, backward and optimizer step for one precision.

    Args:
        name: ``fp32``, ``bf16`` or ``fp16``.
        device: the device the run computes on (autocast and the scaler are per device type).
    """

    def __init__(self, name: str, device: torch.device):
        self.name = name
        self.device_type = device.type
        self.dtype = _DTYPES[name]
        # A disabled GradScaler is a no-op (scale returns the loss, step just steps), so the step
        # below reads the same for every precision.
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        self.skipped_steps = 0

    def forward_context(self) -> AbstractContextManager:
        """The context forward passes and losses run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(
        self, loss: torch.Tensor, inputs: list[torch.Tensor] | None = None, retain_graph: bool = False
    ) -> None:
        """``loss.backward()`` (scaled under fp16); ``inputs``: only these tensors accumulate gradients."""
        self.scaler.scale(loss).backward(inputs=inputs, retain_graph=retain_graph)

    @property
    def scaled(self) -> bool:
        """Whether losses are scaled (fp16): an inf gradient with a finite loss is then an overflow
        at the current scale, a normal event the scaler answers by skipping the step."""
        return self.scaler.is_enabled()

    def unscale(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Turn the scaled gradients back into true ones (fp16; inf where they overflowed)."""
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)

    def step(self, optimizers: list[torch.optim.Optimizer], finite: bool) -> bool:
        """Step every optimizer and zero its gradients; returns False when the scaler skipped the
        step (``finite`` False: fp16 gradients overflowed; the scale is lowered, the count kept)."""
        for optimizer in optimizers:
            self.scaler.step(optimizer)  # skipped by the scaler when it saw an inf
            optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        if not finite:
            self.skipped_steps += 1
        return finite

    def skip(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Drop a step's gradients without applying them (and forget the scaler's record of it)."""
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
