"""Generated data: three Gaussian blobs in 8 dimensions (in memory, the seed's first pattern)."""

import numpy as np
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        rng = np.random.default_rng(0)
        num_points = cfg["dataloading_params"].get("dataset_path") and 300 or 240
        centers = rng.normal(0.0, 2.0, size=(3, 8))
        self.labels = rng.integers(0, 3, size=num_points)
        self.features = centers[self.labels] + rng.normal(0.0, 1.0, size=(num_points, 8))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"features": self.features[i], "class_idx": self.labels[i]}
