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

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizers: list[torch.optim.Optimizer], params: list[torch.nn.Parameter],
             clip_norm: float | None, loss: torch.Tensor) -> str:
        """Unscale, check, clip (on true gradients), step every optimizer and zero its gradients.

        A step whose loss or gradients are not finite is never applied. Returns ``"applied"``,
        ``"scaled_skip"`` (fp16: the gradients overflowed at the current scale, a normal event the
        scaler answers by lowering the scale) or ``"nonfinite"`` (the loss, or an fp32/bf16 gradient,
        is NaN/inf; the gradients are left in place for the caller to inspect and zero).
        """
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)  # fp16: true gradients (inf where they overflowed)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
        finite = torch.isfinite(loss.detach()) & torch.isfinite(norm)
        # note: one host read per step, the same sync torch's GradScaler makes before every step
        if not bool(finite):
            if self.scaler.is_enabled() and bool(torch.isfinite(loss.detach())):
                for optimizer in optimizers:
                    self.scaler.step(optimizer)  # skipped by the scaler (it saw the inf)
                    optimizer.zero_grad(set_to_none=True)
                self.scaler.update()
                self.skipped_steps += 1
                return "scaled_skip"
            return "nonfinite"
        if clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(params, clip_norm, norm)
        for optimizer in optimizers:
            self.scaler.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        return "applied"

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
