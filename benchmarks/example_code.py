"""The CIFAR-10 example's files, imported for the benchmark projects (not copied), so that both arms
of a benchmark and the example run the same classes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent


def load(path: Path, key: str):
    """The Python file ``path`` as module ``key`` (the runtime imports a project's own files as
    ``models`` and ``dataloader``, so other projects' files need names of their own)."""
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def example(name: str):
    """The CIFAR-10 example's ``models`` or ``dataloader`` module."""
    return load(BENCHMARKS.parent / "examples" / "cifar10" / f"{name}.py", f"dlscaffold_benchmark_cifar10_{name}")
