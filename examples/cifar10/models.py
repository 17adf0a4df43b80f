"""CIFAR-10 models: the older deep_learning tool's Cifar10Classifier, and Cifar10ResNet, the recommended start.

Both take ``image`` (B, 3, 32, 32), normalised by ``CustomDataSet.transform_batch``, and return
``{"class_logits": (B, 10)}``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlscaffold.modules import CONV2DN, ResNetFCN


class Cifar10Classifier(nn.Module):
    """The older deep_learning tool's example model: a CONV2DN image processor, then ResNet-style dense layers.

    Args:
        image_size: ``[C, H, W]`` of the input images, ``[3, 32, 32]``.
        encoding_size: ``[C, H, W]`` the image processor maps to, e.g. ``[64, 1, 1]``.
        num_resnet_layers: layers of the ``ResNetFCN`` classifier.
    """

    def __init__(self, image_size, encoding_size, num_resnet_layers):
        super().__init__()
        self.image_processor = CONV2DN(tuple(image_size), tuple(encoding_size), nonlinear=True)
        self.encoding_classifier = ResNetFCN(math.prod(encoding_size), 10, num_resnet_layers)

    def forward(self, image):
        encoding = self.image_processor(image).flatten(1)  # (B, C*H*W)
        return {"class_logits": self.encoding_classifier(encoding)}


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: the unit everything below is built from."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BatchNorm's shift is the bias
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``x + f(x)`` with two ``conv_bn`` units at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class Cifar10ResNet(nn.Module):
    """A compact ResNet-9 (the DAWNBench design of Page, 2018) at a width that trains on a CPU.

    prep conv -> [conv, pool, residual] -> [conv, pool] -> [conv, pool, residual] -> max-pool ->
    linear. Max-pooling rather than strided convolutions keeps it cheap; the output logits are
    scaled down (``logit_scale``), which steadies training at high learning rates.

    Args:
        widths: channels of the prep layer and the three stages.
        logit_scale: multiplies the logits.
        flip_tta: at evaluation, average the logits of each image and its mirror image.
    """

    def __init__(self, widths=(32, 64, 128, 256), logit_scale: float = 0.125, flip_tta: bool = True):
        super().__init__()
        prep, w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(3, prep),  # (B, prep, 32, 32)
            conv_bn(prep, w1), nn.MaxPool2d(2), Residual(w1),  # (B, w1, 16, 16)
            conv_bn(w1, w2), nn.MaxPool2d(2),  # (B, w2, 8, 8)
            conv_bn(w2, w3), nn.MaxPool2d(2), Residual(w3),  # (B, w3, 4, 4)
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),  # (B, w3)
        )
        self.classifier = nn.Linear(w3, 10, bias=False)
        self.logit_scale, self.flip_tta = logit_scale, flip_tta
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPUs and recent GPUs

    def logits(self, image):
        return self.classifier(self.features(image)) * self.logit_scale

    def forward(self, image):
        logits = self.logits(image)  # (B, 10)
        if self.flip_tta and not self.training:
            logits = (logits + self.logits(image.flip(3))) / 2
        return {"class_logits": logits}


def get_ref_model_dict():
    return {"Cifar10Classifier": Cifar10Classifier, "Cifar10ResNet": Cifar10ResNet}
