"""A stand-in for the seed's example: a Cifar10Classifier with the seed's init_args."""

import math

from torch import nn


class Cifar10Classifier(nn.Module):
    def __init__(self, image_size, encoding_size, num_resnet_layers):
        super().__init__()
        channels, enc = image_size[0], encoding_size[0]
        self.image_processor = nn.Sequential(
            nn.Conv2d(channels, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, enc, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(encoding_size[1:]),
        )
        width = enc * math.prod(encoding_size[1:])
        self.encoding_classifier = nn.Sequential(
            *[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(num_resnet_layers)],
            nn.Linear(width, 10),
        )

    def forward(self, image):
        encoding = self.image_processor(image).flatten(1)  # (B, C*H*W)
        return {"class_logits": self.encoding_classifier(encoding)}


def get_ref_model_dict():
    return {"Cifar10Classifier": Cifar10Classifier}
