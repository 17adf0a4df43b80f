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


# ----------------------------------------------------------------------------- the fast recipe


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the shift is learned), a tiny eps and a short memory
    of the running statistics (``momentum``: torch's, the weight of the newest batch)."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)  # stays 1: the next convolution can scale


class DiracConv(nn.Conv2d):
    """3x3 convolution without bias whose first ``in_channels`` filters start as the identity
    (``dirac_``), so that a freshly built network passes its input through."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:in_channels])


class ConvGroup(nn.Module):
    """conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU; halves the image size."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float):
        super().__init__()
        self.conv1, self.pool = DiracConv(in_channels, out_channels), nn.MaxPool2d(2)
        self.norm1 = ShiftOnlyBatchNorm(out_channels, bn_momentum)
        self.conv2 = DiracConv(out_channels, out_channels)
        self.norm2 = ShiftOnlyBatchNorm(out_channels, bn_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Cifar10Airbench(nn.Module):
    """The airbench94 network (Keller Jordan's cifar10-airbench, 2024): 2x2 patch whitening, three
    conv groups, max-pool, a linear layer and scaled-down logits; 1.97 M parameters at the
    default widths.

    The whitening layer's weights are not trained: :meth:`init_from_data` sets them from the
    training images' 2x2 patches (the eigenvectors of their covariance, scaled to unit variance,
    and their negatives), before the first epoch. Its bias is trained in the first epochs only
    (``param_groups`` ``epochs`` in ``config_fast.yml``).

    Args:
        widths: channels of the three conv groups.
        bn_momentum: torch's BatchNorm momentum (airbench's 0.6 in its own convention is 0.4 here).
        logit_scale: multiplies the logits.
        whiten_eps: added to the patch covariance's eigenvalues before scaling by them.
    """

    def __init__(self, widths=(64, 256, 256), bn_momentum: float = 0.4, logit_scale: float = 1 / 9, whiten_eps=5e-4):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)  # 2x2 patches, 12 directions x 2 signs
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.groups = nn.Sequential(
            ConvGroup(24, widths[0], bn_momentum),  # (B, w0, 15, 15)
            ConvGroup(widths[0], widths[1], bn_momentum),  # (B, w1, 7, 7)
            ConvGroup(widths[1], widths[2], bn_momentum),  # (B, w2, 3, 3)
        )
        self.head = nn.Linear(widths[2], 10, bias=False)
        self.logit_scale, self.whiten_eps = logit_scale, whiten_eps
        self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def init_from_data(self, image):
        """Whitening weights from the 2x2 patches of ``image`` (N, 3, 32, 32), normalised images."""
        c, (h, w) = image.shape[1], self.whiten.weight.shape[2:]
        patches = image.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        covariance = patches.T @ patches / len(patches)  # (12, 12)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first
        scaled = (eigenvectors / torch.sqrt(eigenvalues + self.whiten_eps).unsqueeze(1)).reshape(-1, c, h, w)
        self.whiten.weight.copy_(torch.cat([scaled, -scaled]))

    def forward(self, image):
        x = nn.functional.gelu(self.whiten(image))  # (B, 24, 31, 31)
        x = self.groups(x)  # (B, w2, 3, 3)
        x = nn.functional.max_pool2d(x, 3).flatten(1)  # (B, w2)
        return {"class_logits": self.head(x) * self.logit_scale}  # (B, 10)


def get_ref_model_dict():
    return {"Cifar10Classifier": Cifar10Classifier, "Cifar10ResNet": Cifar10ResNet, "Cifar10Airbench": Cifar10Airbench}
