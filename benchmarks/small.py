"""What does dlscaffold cost per step for small models? Per-step training time of ``dlscaffold train``
against a hand-written loop, where a step takes a millisecond or a few and the runtime's own work
per step weighs most.

Recipes (``benchmarks/README.md``, "Small models"):

- ``digits``: the template's project (``template/config.yml``, ``models.py``, ``dataloader.py``,
  ``training_utils.py``, copied into the runs' folder as a new project holds them): its
  ``DigitClassifier`` on scikit-learn's 8x8 digits, batch 64, label-smoothed cross entropy and
  accuracy every step, Adam, TensorBoard every 10 steps, validation every epoch, a checkpoint every
  5 epochs and after the last.
- ``mean_teacher``: ``benchmarks/project_mean_teacher``: a 26K-parameter MLP on the same digits, batch
  64, its exponential moving average (``ema_of``) updated after every step, cross entropy plus a
  consistency loss and both models' accuracies, TensorBoard every 50 steps, validation every epoch.

Each recipe runs on two data paths: ``device`` (``dataloading_params.device_data: true``; the
hand-written loop stacks the tensors on the device once and selects batches by index) and
``loader`` (a DataLoader over the project's dataset in both arms, reading whole batches through its
``__getitems__``). The other arm is ``benchmarks/handwritten_small.py``, which reads the sizes and
settings from the same config.yml.

Timing is ``benchmarks/overhead.py``'s (whose helpers this file imports): whole processes, a short
(E1 epochs) and a long (E2 epochs) one, the arms alternated, R repeats. An arm's per-step time is
``(median long wall - median short wall) / (steps of the long run - steps of the short run)``: start-up
and the first steps' warm-up cancel; what happens once an epoch (validation, the epoch's records and
checkpoints) counts, shared out over the epoch's steps. The same difference of the processes' CPU
time is printed beside it. The ratios dlscaffold / hand-written are printed per recipe and data
path; nothing is asserted.

    python benchmarks/small.py --threads 1                       # both recipes, both data paths
    python benchmarks/small.py --recipe mean_teacher --data device
    python benchmarks/small.py --quick                           # a smoke test (seconds per process)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead import ARMS, machine, per_epoch, record, timed_run, train_command  # noqa: E402  (benchmarks/overhead.py)

TEMPLATE_FILES = ("config.yml", "models.py", "dataloader.py", "training_utils.py")
RECIPES = {"digits": "the template's DigitClassifier", "mean_teacher": "an MLP with an EMA teacher"}
DATA = ("device", "loader")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=(*RECIPES, "all"), default="all")
    parser.add_argument("--data", choices=(*DATA, "all"), default="all", help="device: device_data; loader: DataLoader")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    # 5: with 3, the mean teacher's ratio moved by up to 0.04 between invocations on a 2-core VM (each
    # process's start-up varies by some 20 ms, a twentieth of its 920 extra steps' time)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each (arm, length)")
    parser.add_argument(
        "--epochs", type=int, nargs=2, default=(2, 42), metavar=("E1", "E2"), help="epochs of the short and long run"
    )
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both arms (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="epochs 1 vs 2, one repeat: a smoke test")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = (1, 2), 1
    if not 0 < args.epochs[0] < args.epochs[1]:
        parser.error("--epochs E1 E2: expected 0 < E1 < E2")
    if args.repeats < 1:
        parser.error("--repeats: expected at least 1")
    args.recipes = list(RECIPES) if args.recipe == "all" else [args.recipe]
    args.paths = list(DATA) if args.data == "all" else [args.data]
    return args


def projects(folder: Path) -> dict[str, Path]:
    """Each recipe's project folder: the template's files copied (as a new project holds them), and
    the mean teacher's own."""
    digits = folder / "digits_project"
    digits.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        shutil.copy2(HERE.parent / "template" / name, digits / name)
    return {"digits": digits, "mean_teacher": HERE / "project_mean_teacher"}


def command(arm: str, recipe: str, data: str, epochs: int, project: Path, device: str, out: Path) -> list[str]:
    """The command line of one run; both arms read their sizes from the project's config.yml."""
    if arm == "dlscaffold":
        device_data = f"dataloading_params.device_data={'true' if data == 'device' else 'false'}"
        return train_command(project / "config.yml", epochs, out, device, device_data)
    return [
        sys.executable,
        str(HERE / "handwritten_small.py"),
        "--recipe",
        recipe,
        "--project",
        str(project),
        "--epochs",
        str(epochs),
        *(["--device-data"] if data == "device" else []),
        "--device",
        device,
        "--out",
        str(out),
    ]


def steps_of(arm: str, output: str, out: Path) -> int | None:
    """The optimizer steps a run took: the hand-written loop prints them; a dlscaffold run's last
    ``metrics.jsonl`` row holds them."""
    if arm == "handwritten":
        found = re.search(r"^steps: (\d+)", output, re.MULTILINE)
        return int(found.group(1)) if found else None
    rows = [json.loads(line) for path in out.glob("*/metrics.jsonl") for line in path.read_text().splitlines()]
    return max((row["step"] for row in rows if isinstance(row.get("step"), int)), default=None)


def accuracy_of(output: str) -> float | None:
    """The trained model's last validation accuracy (both arms end with a ``Final val:`` line)."""
    found = re.search(r"Final val:[\s\S]*?(?:Student|DigitClassifier)/Accuracy (\S+)", output)
    return float(found.group(1)) if found else None


def measure(args: argparse.Namespace, recipe: str, data: str, project: Path, folder: Path) -> dict[str, dict]:
    """Every (repeat, length, arm) of one recipe and data path, arms alternated; per arm the wall and
    CPU seconds and steps of the short and long runs, the long runs' accuracy, the load after each."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    keys = ("short", "long", "short_cpu", "long_cpu", "short_steps", "long_steps", "accuracy", "load")
    results = {arm: {key: [] for key in keys} for arm in ARMS}
    for repeat in range(args.repeats):
        arms = ARMS if repeat % 2 == 0 else ARMS[::-1]  # neither arm always goes first
        for length, epochs in zip(("short", "long"), args.epochs, strict=True):
            for arm in arms:
                out = folder / f"{recipe}_{data}_{arm}_{length}_{repeat}"
                wall, cpu, output = timed_run(command(arm, recipe, data, epochs, project, args.device, out), env)
                results[arm][f"{length}_steps"].append(steps_of(arm, output, out))
                accuracy = accuracy_of(output) if length == "long" else None
                label = f"{recipe}/{data} repeat {repeat + 1}/{args.repeats}  {arm:<11} {epochs} epoch(s)"
                record(results[arm], length, wall, cpu, accuracy, label, width=6)
    return results


def summarise(results: dict[str, dict]) -> dict[str, dict]:
    """Per arm: the per-step wall and CPU time (ms), the single repeats' range, the start-up."""
    summary = {}
    for arm, r in results.items():
        steps = [lo - sh for sh, lo in zip(r["short_steps"], r["long_steps"], strict=True) if None not in (sh, lo)]
        extra = steps[0] if steps and len(set(steps)) == 1 else None  # the same number in every repeat
        if extra is None or extra <= 0:
            sys.exit(f"{arm}: the runs' steps could not be read, or differ between repeats: {r}")
        wall, low, high = per_epoch(r["short"], r["long"], extra)
        has_cpu = None not in r["short_cpu"] + r["long_cpu"]
        summary[arm] = {
            "per_step_ms": 1000 * wall,
            "per_step_min_ms": 1000 * low,
            "per_step_max_ms": 1000 * high,
            "per_step_cpu_ms": 1000 * per_epoch(r["short_cpu"], r["long_cpu"], extra)[0] if has_cpu else None,
            "steps_per_run": {"short": r["short_steps"][0], "long": r["long_steps"][0]},
            "startup_s": statistics.median(r["short"]) - wall * r["short_steps"][0],
            "short_median_s": statistics.median(r["short"]),
            "long_median_s": statistics.median(r["long"]),
            "final_val_accuracy": r["accuracy"][-1],
        }
    return summary


def ratio(summary: dict[str, dict], key: str = "per_step_ms") -> float | None:
    dl, hw = summary["dlscaffold"][key], summary["handwritten"][key]
    if dl is None or hw is None or dl <= 0 or hw <= 0:
        return None  # not measured, or noise larger than the steps' time (--quick)
    return dl / hw


def report(name: str, summary: dict[str, dict], args: argparse.Namespace) -> str:
    def num(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    e1, e2 = args.epochs
    steps = summary["dlscaffold"]["steps_per_run"]
    lines = [
        f"{name}: {args.device}, epochs {e1} vs {e2} ({steps['short']} vs {steps['long']} steps), "
        f"{args.repeats} repeat(s)",
        f"{'arm':<12}{'short':>9}{'long':>9}{'per step':>11}{'[min, max]':>18}{'CPU/step':>11}{'start-up':>10}"
        f"{'val acc':>9}",
    ]
    for arm, s in summary.items():
        lines.append(
            f"{arm:<12}{s['short_median_s']:>7.1f} s{s['long_median_s']:>7.1f} s{s['per_step_ms']:>8.3f} ms"
            f"   [{s['per_step_min_ms']:6.3f}, {s['per_step_max_ms']:6.3f}]{num(s['per_step_cpu_ms'], 3):>8} ms"
            f"{s['startup_s']:>8.1f} s{num(s['final_val_accuracy'], 4):>9}"
        )
    lines.append(f"ratio {name} dlscaffold/handwritten (per-step time): {num(ratio(summary), 3)}")
    lines.append(
        f"ratio {name} dlscaffold/handwritten (per-step CPU time): {num(ratio(summary, 'per_step_cpu_ms'), 3)}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = machine(args)
    print(
        f"machine: {info['cpu']}, {info.get('gpu', 'no GPU used')}, torch {info['torch']} "
        f"({info['torch_threads']} threads), dlscaffold {info['dlscaffold']}",
        flush=True,
    )
    done: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dlscaffold_small_") as tmp:
        folder = args.keep or Path(tmp)
        found = projects(folder)
        for recipe in args.recipes:
            for data in args.paths:
                results = measure(args, recipe, data, found[recipe], folder)
                summary = summarise(results)
                done[f"{recipe}/{data}"] = {"walls_s": results, "summary": summary}
                print(report(f"{recipe}/{data}", summary, args), flush=True)
    print("ratios dlscaffold/handwritten (per-step time; CPU time):")
    for name, result in done.items():
        result["ratio"], result["cpu_ratio"] = ratio(result["summary"]), ratio(result["summary"], "per_step_cpu_ms")
        shown = [f"{value:.3f}" if value is not None else "n/a" for value in (result["ratio"], result["cpu_ratio"])]
        print(f"  {name:<22} {shown[0]:>7}  {shown[1]:>7}")
    if args.json:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"options": options, "machine": info, "results": done}, indent=2))


if __name__ == "__main__":
    main()
