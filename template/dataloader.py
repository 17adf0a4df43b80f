"""The dataset: ``CustomDataSet(cfg)`` holds every point; the runtime splits it.

The runtime builds ``CustomDataSet(cfg)`` once (``cfg`` is the validated config.yml as a dict,
with paths made absolute), splits ``range(len(dataset))`` into train / val / dev index lists from
the seed, and sets that split as ``dataset.idx_dict`` (saved with every run as ``idx_dict.json``;
reuse one with ``dataloading_params.idx_dict_path``). ``__getitem__(i)`` returns one point as a
dict of named values: NumPy arrays, numbers or tensors. The runtime stacks them into batches
(floats -> float32, integers -> int64) and hands them to models, losses and evals by name.

In memory (below): load everything in ``__init__``; ``__getitem__`` indexes arrays. Good for
anything that fits in RAM, like scikit-learn's 8x8 digits (1797 images). ``__getitems__(indices)``
is optional: it returns a whole batch as a dict of batched arrays (what stacking ``__getitem__`` of
those indices gives), so the loader indexes each array once per batch instead of building a dict
per point; for small models that saves a good share of each step. Leave it out when points are read
from disk one by one.

For data that does not fit, ``__init__`` only finds the points and ``__getitem__`` reads one from
disk; dlscaffold's docs/data.md has a complete, tested ``CustomDataSet`` for each layout:

- one HDF5 file per point (the older deep_learning tool's layout): ``__getitem__`` opens, reads and
  closes one file; ``point_id(i)`` names the point by its path, to keep a saved split right;
- one large HDF5 file, opened on the first ``__getitem__`` of each process, never in ``__init__``;
- a ``.npy`` array read through ``np.load(path, mmap_mode="r")``, mapped the same way;
- a folder of images, one subfolder per class, decoded with Pillow.

Raise ``dataloading_params.num_workers`` to read in parallel processes; each opens its own files.

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

    def __getitems__(self, indices):
        # a batch at once: the same values as __getitem__ point by point, one indexing per array
        return {"image": self.images[indices], "class_idx": self.labels[indices]}

    def point_id(self, i):
        # What point i is, recorded in idx_dict.json so that a reused split finds its points even when
        # the data's listing changes (for files: the path relative to dataset_path). The bundled
        # digits never change order, so the index names them.
        return f"digits/{i}"
