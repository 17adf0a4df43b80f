"""The fast benchmark's model: the CIFAR-10 example's ``Cifar10Airbench``, imported from
``examples/cifar10/models.py`` (not copied), so that both arms and the example train the same class.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from example_code import example  # noqa: E402  (benchmarks/example_code.py)

Cifar10Airbench = example("models").Cifar10Airbench


def get_ref_model_dict():
    return {"Cifar10Airbench": Cifar10Airbench}
