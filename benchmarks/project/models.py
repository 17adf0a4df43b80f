"""The benchmark's model: the CIFAR-10 example's ``Cifar10ResNet``, imported from
``examples/cifar10/models.py`` (not copied), so that both arms of the benchmark and the example train
the same class.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from example_code import example  # noqa: E402  (benchmarks/example_code.py)

Cifar10ResNet = example("models").Cifar10ResNet


def get_ref_model_dict():
    return {"Cifar10ResNet": Cifar10ResNet}
