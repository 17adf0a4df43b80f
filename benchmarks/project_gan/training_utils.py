"""The GAN benchmark's losses: dcgan/main.py's binary cross entropy terms (``nn.BCELoss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """errD = errD_real + errD_fake: the real batch against label 1, the fakes against label 0."""
    real = F.binary_cross_entropy(real_score, torch.ones_like(real_score))
    return real + F.binary_cross_entropy(fake_score, torch.zeros_like(fake_score))


def generator_loss(fake_score: torch.Tensor) -> torch.Tensor:
    """errG: the fakes against label 1."""
    return F.binary_cross_entropy(fake_score, torch.ones_like(fake_score))


def get_project_loss_and_eval_dict():
    return {"DiscriminatorLoss": discriminator_loss, "GeneratorLoss": generator_loss}, {}
