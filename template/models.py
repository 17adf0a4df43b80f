"""The project's models: plain ``torch.nn.Module`` classes that the runtime builds from config.yml.

The runtime builds each model listed under ``info_flow`` as ``Model(**init_args)``, calls
``forward`` with the tensors named in its ``inputs`` as keyword arguments, and reads the returned
dict of named tensors (other models, losses and evals refer to them by name).

To add a model: write its class below, add it to ``get_ref_model_dict()``, and give it an entry
under ``info_flow`` in config.yml. ``dlscaffold.modules`` builds networks from the sizes they map
between (``CONV2DN``, ``DECONV2DN``, ``CONV1DN``, ``FCN``, ``ResNetFCN``, ``Transformer``, ...);
``dlscaffold arch conv2d --input 1,8,8 --output 64,1,1`` prints the layers such a module gets.
"""

import torch
from torch import nn

from dlscaffold.modules import CONV2DN, ResNetFCN


class DigitClassifier(nn.Module):
    """Classify an image: a 3x3 convolution stem, a CONV2DN encoder, then residual linear layers.

    The stem lifts the image to ``stem_channels`` at full resolution; CONV2DN then plans the
    strided convolutions from ``(stem_channels, H, W)`` down to a ``(C, 1, 1)`` encoding, and
    ResNetFCN maps the ``C`` encoding features to class scores.

    Args:
        image_size: ``[C, H, W]`` of the input images.
        stem_channels: channels of the first (full-resolution) convolution.
        encoding_size: ``[C, 1, 1]`` of the encoding the convolutions produce.
        num_classes: number of classes to score.
        num_resnet_layers: linear layers of the classifier (the last one projects to classes).
    """

    def __init__(
        self, image_size=(1, 8, 8), stem_channels=16, encoding_size=(64, 1, 1), num_classes=10, num_resnet_layers=2
    ):
        super().__init__()
        channels, height, width = image_size
        self.stem = nn.Sequential(
            nn.Conv2d(channels, stem_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.LeakyReLU(0.1),
        )
        self.image_processor = CONV2DN((stem_channels, height, width), encoding_size)
        self.encoding_classifier = ResNetFCN(encoding_size[0], num_classes, num_resnet_layers)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.stem(image)  # (B, 1, 8, 8) -> (B, stem_channels, 8, 8)
        encoding = self.image_processor(features).flatten(1)  # (B, C, 1, 1) -> (B, C)
        return {"class_logits": self.encoding_classifier(encoding)}  # (B, num_classes)


def get_ref_model_dict():
    """Model classes by the name config.yml's ``info_flow`` uses for them."""
    return {"DigitClassifier": DigitClassifier}
