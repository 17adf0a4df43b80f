"""A tiny three-model project for the runtime's tests: encoder -> classifier, encoder -> decoder."""

from torch import nn


class Encoder(nn.Module):
    def __init__(self, in_dim: int, enc_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, enc_dim))

    def forward(self, features):
        return {"encoding": self.net(features)}


class Classifier(nn.Module):
    def __init__(self, enc_dim: int, num_classes: int = 3):
        super().__init__()
        self.head = nn.Linear(enc_dim, num_classes)

    def forward(self, encoding):
        return {"class_logits": self.head(encoding)}


class Decoder(nn.Module):
    def __init__(self, enc_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Linear(enc_dim, out_dim)

    def forward(self, encoding):
        return {"reconstruction": self.net(encoding)}


def get_ref_model_dict():
    return {"Encoder": Encoder, "Classifier": Classifier, "Decoder": Decoder}
