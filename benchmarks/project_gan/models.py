"""The GAN benchmark's models: a DCGAN (as in pytorch/examples' dcgan/main.py) for 32x32 RGB images.

``widths`` (``init_args``) are the discriminator's channels from the image up, ``[64, 128, 256]`` by
default (dcgan/main.py's ndf = ngf = 64, with one layer fewer for 32x32 images); the generator mirrors
them (``256 -> 128 -> 64`` on the way up to the image). Weights are initialised
as dcgan/main.py does (convolutions N(0, 0.02), BatchNorm weights N(1, 0.02)). Plain PyTorch: the
hand-written loop imports this file too.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

NOISE_DIM = 100  # dcgan/main.py's nz; the dataset's noise vectors have this size


def weights_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """noise ``(B, NOISE_DIM, 1, 1)`` -> ``{"fake": (B, 3, 32, 32)}`` in [-1, 1]:
    ConvTranspose2d/BatchNorm/ReLU from 4x4 up, Tanh."""

    def __init__(self, widths=(64, 128, 256)):
        super().__init__()
        up = list(widths)[::-1]
        layers = [nn.ConvTranspose2d(NOISE_DIM, up[0], 4, 1, 0, bias=False), nn.BatchNorm2d(up[0]), nn.ReLU(True)]
        for c_in, c_out in pairwise(up):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(up[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"fake": self.main(noise)}


class Discriminator(nn.Module):
    """Images ``(B, 3, 32, 32)`` -> the probability that each is real: Conv2d/BatchNorm/LeakyReLU down
    to 4x4, Sigmoid."""

    def __init__(self, widths=(64, 128, 256)):
        super().__init__()
        widths = list(widths)
        layers = [nn.Conv2d(3, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)``: one pass over one batch (BatchNorm in train mode normalises it on its own)."""
        return self.main(images).view(-1)

    def forward(self, image: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        # two passes, the real batch and the fakes, as dcgan/main.py makes them
        return {"real_score": self.score(image), "fake_score": self.score(fake)}


def get_ref_model_dict():
    return {"Generator": Generator, "Discriminator": Discriminator}
