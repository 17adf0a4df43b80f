"""Copy a finished run into ``baseline/`` (or another folder here): a shipped, portable reference model.

``python ship_baseline.py runs/<run> [DEST]`` (DEST: ``baseline``, the default, or e.g.
``baseline_fast``) keeps the run's split, metrics and config, rewrites the config's paths relative
to DEST (so it works from any checkout), and stores the last epoch's weights in float16 (half the
size; ``load_state_dict`` casts them back to float32). An EMA model that nothing reads and whose
weights equal its source's at that epoch (``config_fast.yml``'s Lookahead, written back into
``Cifar10Airbench`` at the last step) is left out of the copy. DEST's ``run.json`` records this
folder as the project (``".."``) with the SHA-256 of its code files, so that
``dlscaffold evaluate DEST --split test`` scores it from anywhere while the code is unchanged.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
import yaml

from dlscaffold.project.provenance import code_hashes

HERE = Path(__file__).resolve().parent
KEPT = ("status", "completed_epoch", "train_seconds", "dlscaffold_version", "models")  # of run.json


def ship(run_dir: Path, dest: Path = HERE / "baseline") -> None:
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    config["dataloading_params"]["dataset_path"] = "../data/cifar10-jpg"
    config["logging_params"]["logging_dir"] = "../runs"
    epoch = config["training_params"]["max_training_epochs"]
    weights = {
        model: torch.load(run_dir / "checkpoints" / f"{model}_{epoch:06d}.pt", weights_only=True)
        for model in config["info_flow"]
    }
    for model in [m for m, spec in config["info_flow"].items() if redundant(m, spec, config, weights)]:
        del config["info_flow"][model], weights[model]
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "checkpoints").mkdir(parents=True)
    (dest / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = json.loads((run_dir / "run.json").read_text())
    record = {"project_dir": "..", "project_files": code_hashes(HERE), **{k: info[k] for k in KEPT if k in info}}
    record["models"] = {m: v for m, v in record.get("models", {}).items() if m in config["info_flow"]}
    versions = info.get("provenance", {})
    record["provenance"] = {k: versions[k] for k in ("python", "torch", "dlscaffold", "device_name") if k in versions}
    (dest / "run.json").write_text(json.dumps(record, indent=2))
    for name in ("idx_dict.json", "metrics.jsonl"):
        shutil.copy(run_dir / name, dest / name)
    for model, state in weights.items():
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        torch.save(half, dest / "checkpoints" / f"{model}_{epoch:06d}.pt")
    print(f"shipped {run_dir} epoch {epoch} ({', '.join(weights)}) to {dest}")


def redundant(model: str, spec: dict, config: dict, weights: dict) -> bool:
    """An EMA model that nothing reads and whose weights equal its source's."""
    source, flow = spec.get("ema_of"), config["info_flow"]
    terms = [term for s in flow.values() for kind in ("losses", "evals") for term in (s.get(kind) or {}).values()]
    sources = [*(src for s in flow.values() for src in (s.get("inputs") or {}).values())]
    sources += [src for term in terms for src in (term.get("inputs") or {}).values()]
    sources += config["training_params"].get("tta_outputs") or []
    if source is None or any(str(src).split(".")[0] == model for src in sources):
        return False
    mine, theirs = weights[model], weights[source]
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python ship_baseline.py RUN_DIR [DEST]")
    ship(Path(sys.argv[1]), HERE / (sys.argv[2] if len(sys.argv) == 3 else "baseline"))
