"""Random 3x32x32 'images' in ten classes; the dataset_path folder only has to exist."""

import numpy as np
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        rng = np.random.default_rng(0)
        self.images = rng.random((60, 3, 32, 32))
        self.labels = rng.integers(0, 10, size=60)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "class_idx": self.labels[i]}
