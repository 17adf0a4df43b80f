"""The mean-teacher benchmark's model: a small MLP on the 8x8 digits (26,122 parameters with the
default sizes). Its ``Teacher`` is ``ema_of: Student`` in config.yml, a copy the runtime averages.
Plain PyTorch: the hand-written loop imports this file too.
"""

from __future__ import annotations

import torch
from torch import nn


class Student(nn.Module):
    """``image (B, 1, 8, 8)`` -> ``class_logits (B, num_classes)``: flatten, then linear layers with ReLU."""

    def __init__(self, in_features: int = 64, hidden: tuple[int, ...] = (128, 128), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"class_logits": self.net(image)}


def get_ref_model_dict():
    return {"Student": Student}
