"""Numerical precision of a run, as one small object the training step calls.

In the spirit of Lightning Fabric's precision plugins: the step asks the precision for its forward
context, lets it do ``backward(loss)`` and ``step(optimizers)``, and never branches on fp32 / bf16 /
fp16 itself. The object owns the gradient scaler (fp16) and its state goes into the trainer
checkpoint, so a resumed fp16 run continues exactly.

- ``fp32``: plain float32.
- ``bf16``: forward and losses under ``torch.autocast`` with bfloat16 (CPU or GPU); no scaling.
- ``fp16``: autocast with float16 and a ``torch.amp.GradScaler``; steps with inf/NaN gradients are
  skipped by the scaler (and counted), the scale adapts.
- ``auto``: bf16 where the device computes it natively, fp32 elsewhere (:func:`choose`).

A CPU without native bf16 (AVX2 only, common in laptops and older servers) emulates it: a bf16
convolution there is an order of magnitude slower than fp32. :func:`choose` says so at the start of
a training run, and evaluates such a run in fp32 (its weights are fp32 already) unless asked not to.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

try:  # torch's registries of global optimizer step hooks, read by step()
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

    _GLOBAL_STEP_HOOKS = (_global_optimizer_pre_hooks, _global_optimizer_post_hooks)
except ImportError:  # a torch without them: every step through torch's wrapper
    _GLOBAL_STEP_HOOKS = ({None: None}, {None: None})

_NOTHING = contextlib.nullcontext()  # a context that does nothing (reusable)
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of native bfloat16 arithmetic: x86's AVX-512 BF16 and AMX, Arm's BF16.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
# Set to 0 or 1 to say whether the CPU computes bf16 natively, where detection cannot tell (or to try).
CPU_BF16_ENV = "DLSCAFFOLD_CPU_BF16"


def native_bf16(device: torch.device) -> bool | None:
    """Whether ``device`` computes bfloat16 natively; None where that cannot be told."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return None
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return None
    flags = {f for line in lines if line.startswith(("flags", "Features")) for f in line.partition(":")[2].split()}
    if not flags:
        return None
    return bool(flags & _BF16_FLAGS) and not _kernels_capped()


# oneDNN's instruction-set caps below its bf16 kernels (ONEDNN_MAX_CPU_ISA): convolutions then emulate bf16
_ONEDNN_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def _kernels_capped() -> bool:
    """Whether PyTorch was told to use kernels below the CPU's bf16 instructions: ATen's through
    ``ATEN_CPU_CAPABILITY`` (``get_cpu_capability`` then says AVX2 or less), oneDNN's through
    ``ONEDNN_MAX_CPU_ISA``. Such a process computes bf16 as an AVX2-only CPU does (emulated)."""
    capability = torch.backends.cpu.get_cpu_capability()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    return capability in ("DEFAULT", "NO AVX", "AVX2") or onednn in _ONEDNN_BELOW_BF16


def choose(name: str, device: torch.device, training: bool, keep: bool = False) -> tuple[str, str | None]:
    """The precision a run computes in, and one line to print about it (None: nothing to say).

    Args:
        name: ``training_params.precision``.
        device: where the run computes.
        training: a training run (else evaluation: ``evaluate``, ``load_run``).
        keep: evaluate in ``name`` even where it is slow (the user asked for it).
    """
    native = native_bf16(device)
    if name == "auto":
        chosen = "bf16" if native else "fp32"
        why = "native" if native else "not native" if native is False else "not known to be native"
        return chosen, f"note: precision: auto computes in {chosen} (bf16 is {why} on this {_device_text(device)})"
    slow = device.type == "cpu" and (name == "fp16" or (name == "bf16" and native is False))
    if not slow:
        return name, None
    if not training and not keep:
        return "fp32", (
            f"note: evaluating in fp32, not {name}: this {_device_text(device)} has no native {name}, which runs "
            "several times slower; the weights are fp32 already "
            f"(training_params.precision={name} evaluates as trained)"
        )
    return name, (
        f"warning: precision: {name} on this {_device_text(device)} (no native {name}) is emulated and runs several "
        "times slower than fp32 (convolutions 10-20x); set training_params.precision: fp32, or auto"
    )


def _device_text(device: torch.device) -> str:
    if device.type == "cpu":
        return f"CPU ({torch.backends.cpu.get_cpu_capability()})"
    return f"{device.type} device"


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
        # Only fp16 scales; without it the scaler is never called (a disabled one would only pass
        # calls through), and the step below reads the same for every precision.
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        # Whether losses are scaled (fp16): an inf gradient with a finite loss is then an overflow at
        # the current scale, a normal event the scaler answers by skipping the step.
        self.scaled = self.scaler.is_enabled()
        self.skipped_steps = 0

    def forward_context(self) -> AbstractContextManager:
        """The context forward passes and losses run in."""
        if self.dtype is None:
            return _NOTHING
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(
        self, loss: torch.Tensor, inputs: list[torch.Tensor] | None = None, retain_graph: bool = False
    ) -> None:
        """``loss.backward()`` (scaled under fp16); ``inputs``: only these tensors accumulate gradients."""
        (self.scaler.scale(loss) if self.scaled else loss).backward(inputs=inputs, retain_graph=retain_graph)

    def unscale(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Turn the scaled gradients back into true ones (fp16; inf where they overflowed)."""
        if self.scaled:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)

    def step(self, optimizers: list[torch.optim.Optimizer], finite: bool) -> bool:
        """Step every optimizer and zero its gradients; returns False when the scaler skipped the
        step (``finite`` False: fp16 gradients overflowed; the scale is lowered, the count kept)."""
        for optimizer in optimizers:
            if self.scaled:
                self.scaler.step(optimizer)  # skipped by the scaler when it saw an inf
            else:
                step(optimizer)
            zero_grad(optimizer)
        if self.scaled:
            self.scaler.update()
        if not finite:
            self.skipped_steps += 1
        return finite

    def skip(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Drop a step's gradients without applying them (and forget the scaler's record of it)."""
        for optimizer in optimizers:
            zero_grad(optimizer)
        if self.scaled:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``: its parameters' gradients become None. Done here
    for torch's own optimizers, without the profiler annotation and dispatch around torch's loop (a
    few microseconds a step); an optimizer class with a ``zero_grad`` of its own gets it called."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None


def step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``. torch wraps every optimizer's ``step`` in a profiler annotation and its
    step hooks: the annotation alone costs some 15 µs a step on a CPU, profiler running or not. Where
    the wrapper has nothing else to do (no step hooks, neither the optimizer's own nor global ones,
    no profiler running, and no wrapper on the instance, such as an LR scheduler's counter of steps),
    the step itself is called: the same computation. Otherwise, ``optimizer.step()``."""
    inner = getattr(type(optimizer).step, "__wrapped__", None)
    if (
        inner is None
        or "step" in vars(optimizer)
        or getattr(optimizer, "_optimizer_step_pre_hooks", True)
        or getattr(optimizer, "_optimizer_step_post_hooks", True)
        or _GLOBAL_STEP_HOOKS[0]
        or _GLOBAL_STEP_HOOKS[1]
        or torch._C._autograd._profiler_enabled()
    ):
        optimizer.step()
    else:
        inner(optimizer)
