"""``dlscaffold export RUN``: one model of a run, or a piece of its ``info_flow``, for deployment, checked.

:func:`export_run` loads the run (:func:`dlscaffold.load_run`, in fp32), takes the piece to export
(:mod:`~dlscaffold.tools.export_piece`: ``--model NAME`` alone, or the models ``--outputs
Model.tensor ...`` need, as one module), traces it with ``torch.export`` (a dynamic batch dimension),
writes it as an ExportedProgram (``.pt2``) or ONNX into a temporary folder, runs that file on the
run's own validation samples at batch sizes 1, 7 and all (up to 16) and compares with its eager outputs
(:mod:`~dlscaffold.tools.export_check`). Only a file that passes is moved into place, with
``<stem>.export.json`` beside it recording what it is and how it was checked (docs/export.md).

torch is imported inside :func:`export_run`, so importing this module, and so starting the CLI,
stays cheap.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlscaffold._version import __version__
from dlscaffold.errors import UserError, did_you_mean
from dlscaffold.records.rundir import write_text_atomic
from dlscaffold.records.runfiles import check_run_dir, parse_epoch
from dlscaffold.records.summaries import to_json

FORMATS = {"exported-program": ".pt2", "onnx": ".onnx"}  # as export_check.SUFFIXES, without torch
EXPORTS_FOLDER = "exports"  # inside the run folder: the default place of the files


def export_run(
    run_dir: Path,
    model: str | None,
    outputs: list[str],
    fmt: str,
    epoch: str | None,
    output: Path | None,
    project_dir: Path | None,
    device: str | None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export ``model`` (alone) or the piece of the run's flow that computes ``outputs``, check it on
    the run's validation samples and write it with its ``export.json``.

    Args:
        run_dir: a run folder printed by ``dlscaffold train``.
        model: one model, exported alone: a tensor it reads from another model is an input of the
            export (checked with what the run's flow computes for it).
        outputs: ``Model.tensor`` names (instead of ``model``): the models they need, routed as in
            training, as one program taking the dataset's tensors and returning these, in this order.
        fmt: ``exported-program`` (``torch.export``, ``.pt2``) or ``onnx``.
        epoch: ``best``, ``last`` or a saved epoch's number; None: ``best``, or ``last`` for a run
            trained with ``monitor: none`` (which has no best epoch), as :func:`dlscaffold.load_run`.
        output: the file to write; default ``<run>/exports/<model or outputs>-<epoch>.pt2|.onnx``.
        project_dir: the project's code, taken as is (default: the one the run recorded).
        device: where to trace and check (default ``cpu``).
        echo: where its lines go.

    Returns:
        The record written as ``export.json`` (docs/export.md lists its fields).

    Raises:
        UserError: one line: options that do not fit, not a run folder, an epoch without weights, an
            unknown model or output, an input that is no tensor, a model that does not export, a
            missing ONNX package, an export over the tolerance (then nothing is written).
    """
    requested = _check_options(model, outputs, fmt, epoch, output)
    run_dir = check_run_dir(run_dir)
    from dlscaffold.tools import export_piece as pieces  # imports torch

    run = _load(run_dir, requested, device, project_dir)
    requested = run.requested_epoch  # None resolved: best, or last for a run without a monitor
    echo(f"Exporting epoch {run.epoch} of {run_dir} with the code of the project in {run.project_dir}")
    batch = pieces.sample_batch(run, echo)
    piece = pieces.choose_piece(run.flow, model, outputs, batch)
    destination = _destination(output, run_dir, piece.label, requested, fmt)
    record = {
        "run_dir": str(run_dir),
        "epoch": run.epoch,
        "requested_epoch": requested,
        "model": model,
        "requested_outputs": None if model is not None else list(dict.fromkeys(outputs)),
        "models": piece.models,
        "device": str(run.device),
        **_export_and_check(run, piece, batch, fmt, destination, echo),
    }
    write_text_atomic(_record_path(destination), to_json(record) + "\n")
    echo(f"Wrote {destination} and {_record_path(destination).name} beside it")
    return record


def _load(run_dir: Path, epoch: int | str | None, device: str | None, project_dir: Path | None) -> Any:
    """The run at ``epoch`` in fp32 (:func:`dlscaffold.load_run`), on ``device`` (default the CPU)."""
    from dlscaffold.api import load_run

    try:
        return load_run(run_dir, epoch=epoch, device=device or "cpu", project=project_dir, precision="fp32")
    except UserError as exc:  # load_run names its argument; here it is the option
        raise UserError(*(f"--{p}" if p.startswith("epoch: ") else p for p in exc.problems)) from exc


def _check_options(
    model: str | None, outputs: list[str], fmt: str, epoch: str | None, output: Path | None
) -> int | str | None:
    """Refuse options that do not fit, before anything is loaded; returns the parsed epoch."""
    if (model is None) == (not outputs):
        raise UserError(
            "export: pass either --model NAME (one model) or --outputs MODEL.TENSOR ... (a piece of the flow), "
            + ("not both" if model is not None else "e.g. --model Encoder or --outputs Decoder.reconstruction")
        )
    if fmt not in FORMATS:
        raise UserError(f"--format: found '{fmt}'; {did_you_mean(fmt, FORMATS)}expected one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise UserError(f"--format onnx needs {', '.join(missing)} (not installed): pip install 'dlscaffold[onnx]'")
    if output is not None and output.suffix != FORMATS[fmt]:
        raise UserError(
            f"--output {output}: an {fmt} file ends in {FORMATS[fmt]}; name it so, or choose the --format that "
            "fits the name"
        )
    return None if epoch is None else parse_epoch(epoch, "--epoch")


def _destination(output: Path | None, run_dir: Path, label: str, epoch: int | str, fmt: str) -> Path:
    """``--output``, or ``<run>/exports/<label>-<epoch><suffix>``."""
    if output is not None:
        return Path(output).expanduser().resolve()
    return run_dir / EXPORTS_FOLDER / f"{label}-{epoch}{FORMATS[fmt]}"


def _record_path(destination: Path) -> Path:
    """``export.json`` beside the file: ``Encoder-best.pt2`` -> ``Encoder-best.export.json``."""
    return destination.with_name(destination.stem + ".export.json")


def _export_and_check(run: Any, piece: Any, batch: dict, fmt: str, destination: Path, echo: Callable) -> dict:
    """Trace, write to a temporary folder, run the file on the check cases; move it into place only
    when every output is within the tolerance. Returns the record's fields about the file."""
    import torch

    from dlscaffold.tools import export_check as check
    from dlscaffold.tools.export_piece import FlowPiece, check_cases, tensor_name

    cases = check_cases(run.flow, piece, batch)
    example = cases[-1][1]  # the whole sample batch: no dimension of size 1 to specialise on
    size = cases[-1][0]
    inputs = [_describe(tensor_name(*t), x, size, t[0]) for t, x in zip(piece.inputs, example, strict=True)]
    outputs = [_describe(f"{m}.{t}", x, size) for (m, t), x in zip(piece.outputs, cases[-1][2], strict=True)]
    echo("inputs:  " + ", ".join(_shown(d) for d in inputs))
    echo("outputs: " + ", ".join(_shown(d) for d in outputs))
    program = check.export_program(FlowPiece(run.flow, piece).eval(), example, piece.label)
    in_names, out_names = [d["name"] for d in inputs], [d["name"] for d in outputs]
    with tempfile.TemporaryDirectory(prefix="dlscaffold-export-") as tmp:
        written = Path(tmp) / destination.name
        check.save(fmt, program, written, in_names, out_names)
        result = check.compare(fmt, check.runner(fmt, written, in_names), cases, out_names, piece.label)
        echo(
            f"Checked against the run's models on {size} validation samples at batch sizes "
            f"{', '.join(map(str, result['batch_sizes']))}: max abs diff {result['max_abs_diff']:.3g}, "
            f"max rel diff {result['max_rel_diff']:.3g} (tolerance atol {result['tolerance']['atol']:g}, "
            f"rtol {result['tolerance']['rtol']:g})"
        )
        _move_into_place(Path(tmp), destination)
    return {
        "format": fmt,
        "file": destination.name,
        "inputs": inputs,
        "outputs": outputs,
        "check": {"samples": size, **result},
        "versions": _versions(fmt, torch.__version__),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _move_into_place(folder: Path, destination: Path) -> None:
    """Move what the exporter wrote (the file, and an ONNX model's external data beside it) next to
    ``destination``; each file is copied under a temporary name and renamed, so none is ever partial."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        final = destination.parent / path.name
        partial = final.with_name(final.name + ".partial")
        shutil.move(str(path), partial)
        os.replace(partial, final)


def _describe(name: str, tensor: Any, batch_size: int, source: str | None = None) -> dict[str, Any]:
    """An input's or output's name, shape (``"batch"`` for the dynamic first dimension) and dtype."""
    shape: list[Any] = list(tensor.shape)
    if shape and shape[0] == batch_size:
        shape[0] = "batch"
    found = {"name": name, "shape": shape, "dtype": str(tensor.dtype).removeprefix("torch.")}
    return found if source is None else {**found, "source": source}


def _shown(described: dict[str, Any]) -> str:
    """``features float32 [batch, 8]``."""
    return f"{described['name']} {described['dtype']} [{', '.join(map(str, described['shape']))}]"


def _versions(fmt: str, torch_version: str) -> dict[str, str]:
    """The versions that made and checked the file."""
    versions = {"dlscaffold": __version__, "torch": torch_version}
    if fmt == "onnx":
        import onnx
        import onnxruntime
        import onnxscript

        versions.update(onnx=onnx.__version__, onnxscript=onnxscript.__version__, onnxruntime=onnxruntime.__version__)
    return versions
