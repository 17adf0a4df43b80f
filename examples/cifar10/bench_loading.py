"""Does data loading keep up with training? Images per second of each, measured in one process.

``python bench_loading.py [config.yml]`` times (1) the DataLoader with the runtime's collation plus
``transform_batch`` (augmentation and normalisation) over 10,240 training images and (2) training
steps of the configured model on the same batches, then prints the share of a training step that
data preparation takes. Loading runs in the training process here (``num_workers: 0``), so that
share is time the model waits.
"""

import sys
import time
from pathlib import Path

import torch

from dlscaffold.data import make_loader
from dlscaffold.prepare import prepare
from dlscaffold.run.builder import build_run
from dlscaffold.run.trainer import build_trainer

HERE = Path(__file__).resolve().parent
IMAGES = 10_240


def main(config_path: Path) -> None:
    prepared = prepare(config_path, [], HERE)
    tp, dl = prepared.config.training_params, prepared.config.dataloading_params
    run = build_run(prepared, {}, device="cpu")  # the runtime's own dataset, split and models
    loader = make_loader(
        run.dataset, run.idx_dict["train"][:IMAGES], dl.batch_size, True, tp.seed, dl.num_workers, pin_memory=False
    )

    start = time.perf_counter()
    batches = [run.transform(batch, True) for batch in loader]
    loading = IMAGES / (time.perf_counter() - start)

    trainer = build_trainer(run, len(batches))  # the runtime's own training step
    run.flow.set_mode(training=True)
    start, seen = None, 0
    for i, batch in enumerate(batches):
        if i == 2:  # the first steps warm up kernels
            start, seen = time.perf_counter(), 0
        trainer.train_step(batch)
        seen += len(batch["class_idx"])
    training = seen / (time.perf_counter() - start)
    print(f"data loading + augmentation: {loading:8.0f} images/s")
    print(f"training steps ({tp.precision}):    {training:8.0f} images/s  ({torch.get_num_threads()} threads)")
    print(f"data preparation is {100 * training / loading:.1f}% of a training step's time")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "config.yml")
