"""The benchmark's model: the CIFAR-10 example's ``Cifar10ResNet``, imported from
``examples/cifar10/models.py`` (not copied), so that both arms of the benchmark and the example train
the same class.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10" / "models.py"
_NAME = "dlscaffold_benchmark_cifar10_models"  # not "models": the runtime imports this file under that name


def _example_models():
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_NAME, _EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]


Cifar10ResNet = _example_models().Cifar10ResNet


def get_ref_model_dict():
    return {"Cifar10ResNet": Cifar10ResNet}
