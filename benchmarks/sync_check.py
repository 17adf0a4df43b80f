"""Host synchronisations per training step of the fast recipe on a GPU.

Trains ``benchmarks/project_fast/config.yml`` (the CIFAR-10 example's fast recipe on synthetic
images) in this process on CUDA with ``torch.cuda.set_sync_debug_mode("warn")``, records the source
line of every operation that made the host wait for the GPU, and counts them per line. A line that
synchronises at every step (as often as there are steps, or more) is a per-step sync; the others
(start-up, log points every ``log_every`` steps, epoch ends: validation, checkpoints) are not. Exit 0
when no line is a per-step sync, 1 otherwise; 2 without CUDA.

    python benchmarks/sync_check.py [--epochs 3] [--points 20480] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--points", type=int, default=20480)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from dlscaffold.cli import main as dlscaffold

    if not torch.cuda.is_available():
        print("sync check: no CUDA device here; it needs a GPU", file=sys.stderr)
        return 2
    sites: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' hook
        if "synchroniz" in str(message):
            sites[f"{filename}:{lineno}"] += 1

    with tempfile.TemporaryDirectory() as logs, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        code = dlscaffold(
            [
                "train",
                str(HERE / "project_fast" / "config.yml"),
                f"training_params.max_training_epochs={args.epochs}",
                f"dataloading_params.dataset_args.num_points={args.points}",
                f"logging_params.logging_dir={logs}",
                "--device",
                "cuda",
            ]
        )
        torch.cuda.set_sync_debug_mode("default")
    if code != 0:
        print(f"sync check: the run failed (exit {code})", file=sys.stderr)
        return code
    steps = args.epochs * -(-round(args.points * 0.95) // 1024)
    per_step = {site: n for site, n in sites.items() if n >= steps}
    for site, n in sites.most_common():
        print(f"{n:6d}  {site}{'   <- every step' if site in per_step else ''}")
    print(f"sync check: {steps} steps; {len(per_step)} source line(s) synchronise at every step")
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "sites": dict(sites), "per_step": per_step}, indent=2))
    return 1 if per_step else 0


if __name__ == "__main__":
    sys.exit(main())
