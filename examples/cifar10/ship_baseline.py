"""Copy a finished run into ``baseline/``: the shipped, portable reference model.

``python ship_baseline.py runs/<run>`` keeps the run's split, metrics and config, rewrites the
config's paths relative to ``baseline/`` (so it works from any checkout), and stores the last
epoch's weights in float16 (half the size; ``load_state_dict`` casts them back to float32).
``dlscaffold evaluate baseline --split test`` then scores it.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent


def ship(run_dir: Path, dest: Path = HERE / "baseline") -> None:
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    config["dataloading_params"]["dataset_path"] = "../data/cifar10-jpg"
    config["logging_params"]["logging_dir"] = "../runs"
    epoch = config["training_params"]["max_training_epochs"]
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "checkpoints").mkdir(parents=True)
    (dest / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (dest / "run.json").write_text(json.dumps({"project_dir": ".."}, indent=2))
    for name in ("idx_dict.json", "metrics.jsonl"):
        shutil.copy(run_dir / name, dest / name)
    for model in config["info_flow"]:
        weights = torch.load(run_dir / "checkpoints" / f"{model}_{epoch:06d}.pt", weights_only=True)
        half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
        torch.save(half, dest / "checkpoints" / f"{model}_{epoch:06d}.pt")
    print(f"shipped {run_dir} epoch {epoch} to {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python ship_baseline.py RUN_DIR")
    ship(Path(sys.argv[1]))
