"""``precision`` that fits the machine: ``auto`` resolves to bf16 only where it is native, bf16 on a
CPU without native bf16 is said in one line at the start of training, and evaluating such a run
computes in fp32 there unless asked otherwise. ``DLSCAFFOLD_CPU_BF16`` stands in for the CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_dirs, write_config

from dlscaffold.parts.precision import CPU_BF16_ENV, choose, native_bf16

CPU = torch.device("cpu")


@pytest.mark.parametrize(("flag", "native"), [("1", True), ("0", False)])
def test_the_environment_says_whether_the_cpu_has_native_bf16(monkeypatch, flag: str, native: bool) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, flag)
    assert native_bf16(CPU) is native
    assert choose("auto", CPU, training=True)[0] == ("bf16" if native else "fp32")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU's flags from /proc/cpuinfo")
def test_kernels_capped_below_bf16_count_as_no_native_bf16(monkeypatch) -> None:
    """ONEDNN_MAX_CPU_ISA=AVX2 (with ATEN_CPU_CAPABILITY=avx2) makes a bf16 CPU compute as an AVX2 one."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert native_bf16(CPU) in (False, None)
    assert choose("auto", CPU, training=True)[0] == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert native_bf16(CPU) is _flags_say_bf16()


def _flags_say_bf16() -> bool | None:
    text = Path("/proc/cpuinfo").read_text()
    flags = {
        f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split(":")[1].split()
    }
    capped = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2")
    return (bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) and not capped) if flags else None


def test_slow_precisions_are_said_in_training_and_replaced_in_evaluation(monkeypatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    name, line = choose("bf16", CPU, training=True)
    assert name == "bf16" and line.startswith("warning: precision: bf16 on this CPU") and "\n" not in line
    assert choose("bf16", CPU, training=False) == ("fp32", choose("bf16", CPU, training=False)[1])
    assert choose("bf16", CPU, training=False, keep=True)[0] == "bf16"
    assert choose("fp16", CPU, training=True)[1].startswith("warning: precision: fp16")
    assert choose("fp32", CPU, training=True) == ("fp32", None)
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert choose("bf16", CPU, training=True) == ("bf16", None)
    assert choose("bf16", CPU, training=False) == ("bf16", None)


def _run(toy: Path, precision: str, native: str) -> tuple[Path, str]:
    config = write_config(
        toy, f"{precision}.yml", training_params__precision=precision, training_params__max_training_epochs=1
    )
    done = run_cli("train", str(config), cwd=toy, env={**os.environ, CPU_BF16_ENV: native})
    assert done.returncode == 0, done.stdout + done.stderr
    return run_dirs(toy)[-1], done.stderr


def test_a_bf16_run_without_native_bf16_warns_once_and_evaluates_in_fp32(toy: Path) -> None:
    run, stderr = _run(toy, "bf16", "0")
    assert [line for line in stderr.splitlines() if "precision: bf16" in line] == [
        next(line for line in stderr.splitlines() if line.startswith("warning: precision: bf16 on this CPU"))
    ]
    env = {**os.environ, CPU_BF16_ENV: "0"}

    def evaluate(name: str, *overrides: str) -> tuple[dict, str]:
        done = run_cli("evaluate", str(run), "--epoch", "last", "--json", name, *overrides, cwd=toy, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads((toy / name).read_text())["metrics"], done.stderr

    plain, said = evaluate("plain.json")
    assert "note: evaluating in fp32, not bf16" in said
    forced, _ = evaluate("forced.json", "training_params.precision=fp32")
    assert plain == forced  # fp32 either way
    _, said = evaluate("asked.json", "training_params.precision=bf16")
    assert "note: evaluating in fp32" not in said


def test_auto_trains_in_fp32_without_native_bf16_and_bf16_with_it(toy: Path) -> None:
    fp32_run, stderr = _run(toy, "auto", "0")
    assert "note: precision: auto computes in fp32" in stderr
    reference, _ = _run(toy, "fp32", "0")
    for name in ("Encoder", "Classifier", "Decoder"):
        got = torch.load(fp32_run / "checkpoints" / f"{name}_000001.pt", weights_only=True)
        want = torch.load(reference / "checkpoints" / f"{name}_000001.pt", weights_only=True)
        assert all(torch.equal(got[k], want[k]) for k in want)
    _, stderr = _run(toy, "auto", "1")
    assert "note: precision: auto computes in bf16" in stderr
