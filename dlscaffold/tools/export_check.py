"""Export a :class:`~dlscaffold.tools.export_piece.FlowPiece`, run the written file, compare.

:func:`export_program` traces the piece with ``torch.export`` (a dynamic batch dimension) and says
in one line why a model does not export; :func:`save` writes the program as ``.pt2`` or converts it
to ONNX (the dynamo-based exporter); :func:`runner` runs the saved file as a user would load it
(``torch.export.load(...).module()`` or an onnxruntime session); :func:`compare` holds it against
the run's own outputs within :data:`TOLERANCES`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from dlscaffold.errors import CodeError, UserError, first_line

EXPORTED_PROGRAM, ONNX = "exported-program", "onnx"
SUFFIXES = {EXPORTED_PROGRAM: ".pt2", ONNX: ".onnx"}
# (atol, rtol): an output passes where |export - eager| <= atol + rtol * |eager| everywhere (as
# torch.isclose). An exported program runs the same kernels as the eager models; ONNX Runtime fuses
# and reorders float operations, so its results differ in the last digits.
TOLERANCES = {EXPORTED_PROGRAM: (1e-5, 1e-4), ONNX: (1e-4, 1e-3)}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# What torch raises when a branch or a size depends on a tensor's values, not only on shapes.
DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "DataDependentOutputException", "PendingUnbackedSymbolNotFound")

Case = tuple[int, list[torch.Tensor], list[torch.Tensor]]  # (batch size, inputs, the eager outputs)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Keep the exporters' chatter (warnings, log lines, the partial graph torch prints on standard
    error when tracing fails) off the console: what matters is said in one line after."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # torch's and the ONNX exporter's (onnxscript's) log lines
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


def export_program(module: torch.nn.Module, args: list[torch.Tensor], label: str) -> Any:
    """``torch.export.export`` of ``module`` on ``args``, the first dimension of every input that
    holds the batch dynamic (one ``torch.export.Dim``); one line when it does not export."""
    batch, size = torch.export.Dim("batch"), len(args[0]) if args and args[0].dim() else 0
    dynamic = tuple({0: batch} if a.dim() and len(a) == size else None for a in args)
    try:
        with quiet_torch():
            return torch.export.export(module, tuple(args), dynamic_shapes=(dynamic,))
    except Exception as exc:
        raise UserError(_export_problem(label, exc)) from exc


def _export_problem(label: str, exc: BaseException) -> str:
    """Why ``label`` did not export, and what to do, in one line."""
    chain, seen = [], exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    where = next((e.where for e in chain if isinstance(e, CodeError)), None)
    place = f" in {where}" if where else ""
    deepest = chain[-1]
    if any(type(e).__name__ in DATA_DEPENDENT or "data-dependent" in str(e) for e in chain):
        return (
            f"{label} does not export: control flow{place} depends on a tensor's values "
            f"({first_line(deepest, with_type=False)}); rewrite the branch with torch.cond or state what "
            "holds with torch._check(...), or export a smaller piece (--model / --outputs)"
        )
    if any("Constraints violated" in str(e) for e in chain):
        return (
            f"{label} does not export with a dynamic batch size: its code{place} fixes the batch "
            "dimension to the traced one; take sizes from the input (x.shape[0], -1 in view/reshape)"
        )
    return f"{label} does not export{place}: {first_line(deepest)}; rerun with --debug for the traceback"


def save(fmt: str, program: Any, path: Path, input_names: list[str], output_names: list[str]) -> None:
    """Write ``program``: ``torch.export.save`` (``.pt2``) or the dynamo-based ONNX exporter."""
    if fmt == EXPORTED_PROGRAM:
        torch.export.save(program, str(path))
        return
    try:
        with quiet_torch():
            onnx_program = torch.onnx.export(
                program, (), input_names=input_names, output_names=output_names, dynamo=True, verbose=False
            )
            onnx_program.save(str(path))
    except Exception as exc:
        raise UserError(
            f"the ONNX exporter failed on the exported program: {first_line(exc)}; "
            "try --format exported-program, or rerun with --debug for the traceback"
        ) from exc


def runner(fmt: str, path: Path, input_names: list[str]) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """A function that runs the written file on a list of inputs and returns its outputs, as tensors."""
    if fmt == EXPORTED_PROGRAM:
        module = torch.export.load(str(path)).module()

        def run_program(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
            with torch.no_grad():
                found = module(*inputs)
            return list(found) if isinstance(found, (tuple, list)) else [found]

        return run_program
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]  # an input the graph never reads is left out

    def run_onnx(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs, strict=True)}
        return [torch.from_numpy(o) for o in session.run(None, {name: feeds[name] for name in wanted})]

    return run_onnx


def compare(fmt: str, run: Callable, cases: list[Case], names: list[str], label: str) -> dict[str, Any]:
    """Run the written file on every case and hold it against the eager outputs.

    Returns:
        ``{"batch_sizes", "tolerance": {"atol", "rtol"}, "max_abs_diff", "max_rel_diff", "outputs":
        {name: {"max_abs_diff", "max_rel_diff"}}}``, the largest differences over all cases.

    Raises:
        UserError: one line naming the output, the batch size, the differences and the tolerance
            when an output is over the tolerance (or has another shape or dtype).
    """
    atol, rtol = TOLERANCES[fmt]
    per_output = {name: [0.0, 0.0] for name in names}
    for size, inputs, expected in cases:
        for name, got, want in zip(names, run(inputs), expected, strict=True):
            want = want.detach().cpu()
            got = got.detach().cpu()
            if got.shape != want.shape or got.dtype != want.dtype:
                raise UserError(
                    f"the {fmt} export of {label} gives {name} as {_kind(got)} at batch size {size}, the run's "
                    f"models {_kind(want)}; nothing was written"
                )
            abs_diff, rel_diff, close = _difference(got, want, atol, rtol)
            per_output[name] = [max(per_output[name][0], abs_diff), max(per_output[name][1], rel_diff)]
            if not close:
                raise UserError(
                    f"the {fmt} export of {label} differs from the run's models: {name} at batch size {size}: "
                    f"max abs diff {abs_diff:.3g}, max rel diff {rel_diff:.3g}, over the tolerance "
                    f"atol {atol:g} + rtol {rtol:g} * |value|; nothing was written"
                )
    return {
        "batch_sizes": [size for size, _, _ in cases],
        "tolerance": {"atol": atol, "rtol": rtol},
        "max_abs_diff": max((v[0] for v in per_output.values()), default=0.0),
        "max_rel_diff": max((v[1] for v in per_output.values()), default=0.0),
        "outputs": {name: {"max_abs_diff": a, "max_rel_diff": r} for name, (a, r) in per_output.items()},
    }


def _difference(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(largest |got - want|, largest |got - want| / |want|, whether all are within the tolerance);
    NaN matches NaN; integer and bool outputs must be equal."""
    if not (want.is_floating_point() or want.is_complex()):
        same = torch.equal(got, want)
        return (0.0, 0.0, True) if same else (float("inf"), float("inf"), False)
    if want.numel() == 0:
        return 0.0, 0.0, True
    close = bool(torch.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True).all())
    both_nan = torch.isnan(got) & torch.isnan(want)
    diff = torch.where(both_nan, torch.zeros_like(want), (got - want).abs()).double()
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / want.abs().double())
    return float(diff.max()), float(rel.max()), close


def _kind(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"
