"""The dataset: ``CustomDataSet(cfg)`` holds every point; the runtime splits it.

The runtime builds ``CustomDataSet(cfg)`` once (``cfg`` is the validated config.yml as a dict,
with paths made absolute), splits ``range(len(dataset))`` into train / val / dev index lists from
the seed, and sets that split as ``dataset.idx_dict`` (saved with every run as ``idx_dict.json``;
reuse one with ``dataloading_params.idx_dict_path``). ``__getitem__(i)`` returns one point as a
dict of named values: NumPy arrays, numbers or tensors. The runtime stacks them into batches
(floats -> float32, integers -> int64) and hands them to models, losses and evals by name.

Two patterns cover most datasets.

1. In memory (below): load everything in ``__init__``; ``__getitem__`` indexes arrays. Good for
   anything that fits in RAM, like scikit-learn's 8x8 digits (1797 images).

2. One file per point, for data that does not fit in memory: ``__init__`` only lists the files;
   index ``i`` maps to a file, and ``__getitem__`` reads it (raise ``num_workers`` to read in
   parallel)::

       from pathlib import Path

       class CustomDataSet(torch.utils.data.Dataset):
           def __init__(self, cfg):
               root = Path(cfg["dataloading_params"]["dataset_path"])  # absolute already
               self.files = sorted(root.glob("*.npz"))                  # index i -> a file

           def __len__(self):
               return len(self.files)

           def __getitem__(self, i):
               with np.load(self.files[i]) as point:
                   return {"image": point["image"], "class_idx": int(point["label"])}

A dataset with a fixed test set may also define ``test_indices()`` (a list of indices): those
points stay out of train / val / dev, and ``python evaluate.py RUN --split test`` reads them.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits


class CustomDataSet(torch.utils.data.Dataset):
    """scikit-learn's bundled 8x8 handwritten digits, scaled to [0, 1]."""

    def __init__(self, cfg):
        digits = load_digits()  # ships with scikit-learn: no download, no dataset_path needed
        self.images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
        self.labels = digits.target.astype(np.int64)  # (N,)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "class_idx": self.labels[i]}
