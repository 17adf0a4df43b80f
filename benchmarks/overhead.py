"""What does dlscaffold cost? Per-epoch training time of ``dlscaffold train`` against a hand-written loop.

Both arms do the same work (``benchmarks/README.md``). ``--recipe resnet`` (the default): the
CIFAR-10 example's ``Cifar10ResNet`` on synthetic CIFAR-shaped data, cross entropy and accuracy
every step, Adam, TensorBoard every 50 steps, validation and a checkpoint every epoch; arm
``dlscaffold`` is ``python -m dlscaffold train benchmarks/project/config.yml ...``, arm
``handwritten`` is ``python benchmarks/handwritten.py ...``. ``--recipe fast``: the example's
``config_fast.yml`` recipe (``Cifar10Airbench``, data on the device, Lookahead, test-time
augmentation in validation, bf16) on the same kind of data; ``benchmarks/project_fast/config.yml``
against ``benchmarks/handwritten_fast.py``. ``--recipe gan``: a DCGAN on synthetic 32x32 images in
ordered update phases (the discriminator's step, then the generator's through the updated
discriminator), ``benchmarks/project_gan/config.yml`` against ``benchmarks/handwritten_gan.py`` (the
training step of pytorch/examples' dcgan/main.py). ``--recipe accumulate``: the resnet recipe with
batches of 16 and 4 batches an optimizer step (``training_params.accumulate=4`` against
``handwritten.py --accumulate 4``).

Each arm runs as whole processes, a short one (E1 epochs) and a long one (E2 epochs), the arms
alternated (short A, short B, long A, long B; the next repeat starts with B), R times. The per-epoch
time of an arm is ``(median long wall - median short wall) / (E2 - E1)``: start-up (imports, data
generation, the first-step warm-up, compilation) is in both runs and cancels. The same difference
of the processes' CPU time (user + system) is printed beside it: on a shared machine it is less
disturbed by other work than wall time. The ratios dlscaffold / handwritten are printed; nothing is
asserted. With ``--compile`` one untimed run of each arm goes first, to fill torch.compile's caches.

    python benchmarks/overhead.py                                  # fp32 on the CPU
    python benchmarks/overhead.py --precision bf16 --compile       # autocast bf16, torch.compile
    python benchmarks/overhead.py --device cuda --precision bf16   # on a GPU
    python benchmarks/overhead.py --quick                          # a smoke test (seconds per process)
    python benchmarks/overhead.py --recipe fast                    # the fast recipe (bf16)
    python benchmarks/overhead.py --recipe gan                     # the DCGAN recipe (fp32)
    python benchmarks/overhead.py --recipe accumulate              # the resnet recipe, 4 batches a step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import resource  # CPU time of the child processes (Unix)
except ImportError:  # pragma: no cover - Windows
    resource = None

HERE = Path(__file__).resolve().parent
ARMS = ("dlscaffold", "handwritten")
# Per recipe: the dlscaffold arm's project, the hand-written arm's script, the models --widths sets, the
# precision the recipe trains in (absent: --precision and --compile apply), further arguments of each
# arm, and the default sizes (--points, --batch-size, --widths) and the sizes of --quick.
RECIPES = {
    "resnet": {
        "project": HERE / "project",
        "handwritten": HERE / "handwritten.py",
        "models": ("Cifar10ResNet",),
        "sizes": {"points": 5120, "batch_size": 64, "widths": "32,64,128,256"},
        "quick": {"points": 1280, "batch_size": 64, "widths": "8,16,32,64"},
    },
    "fast": {
        "project": HERE / "project_fast",
        "handwritten": HERE / "handwritten_fast.py",
        "models": ("Cifar10Airbench",),
        "precision": "bf16",
        "sizes": {"points": 10752, "batch_size": 1024, "widths": "64,256,256"},
        "quick": {"points": 1280, "batch_size": 128, "widths": "8,16,16"},
    },
    "gan": {
        "project": HERE / "project_gan",
        "handwritten": HERE / "handwritten_gan.py",
        "models": ("Generator", "Discriminator"),
        "precision": "fp32",
        "sizes": {"points": 2560, "batch_size": 64, "widths": "64,128,256"},
        "quick": {"points": 320, "batch_size": 64, "widths": "8,16,32"},
    },
    "accumulate": {
        "project": HERE / "project",
        "handwritten": HERE / "handwritten.py",
        "models": ("Cifar10ResNet",),
        "args": {"dlscaffold": ["training_params.accumulate=4"], "handwritten": ["--accumulate", "4"]},
        "sizes": {"points": 5120, "batch_size": 16, "widths": "32,64,128,256"},
        "quick": {"points": 640, "batch_size": 16, "widths": "8,16,32,64"},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="resnet",
        help="resnet: the example's Cifar10ResNet with Adam; fast: its config_fast.yml recipe (bf16); gan: a DCGAN in "
        "two update phases (fp32); accumulate: resnet with batch 16 and 4 batches an optimizer step",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default=None, help="resnet and accumulate only [fp32]"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in both arms")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (arm, length)")
    parser.add_argument(
        "--epochs", type=int, nargs=2, default=(1, 3), metavar=("E1", "E2"), help="epochs of the short and the long run"
    )
    parser.add_argument(
        "--points",
        type=int,
        help="synthetic points (resnet, accumulate: 5120, 80%% train; fast: 10752, 95%%; gan: 2560, 80%%)",
    )
    parser.add_argument("--batch-size", type=int, help="resnet: 64; fast: 1024; gan: 64; accumulate: 16")
    parser.add_argument(
        "--widths",
        help="the model's widths (the example's: resnet, accumulate 32,64,128,256; fast 64,256,256; gan 64,128,256, "
        "the discriminator's, mirrored by the generator)",
    )
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both arms (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    fixed = recipe.get("precision")
    if fixed and (args.compile or args.precision not in (None, fixed)):
        parser.error(f"--recipe {args.recipe}: the recipe trains in {fixed} without torch.compile")
    args.precision = args.precision or fixed or "fp32"
    for key, value in (recipe["quick"] if args.quick else recipe["sizes"]).items():
        if args.quick or getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.epochs, args.repeats = (1, 3), 1
    if not 0 < args.epochs[0] < args.epochs[1]:
        parser.error("--epochs E1 E2: expected 0 < E1 < E2")
    if args.repeats < 1:
        parser.error("--repeats: expected at least 1")
    return args


def train_command(config: Path, epochs: int, out: Path, device: str, *overrides: str) -> list[str]:
    """``python -m dlscaffold train CONFIG`` for ``epochs`` epochs into the logging folder ``out``, on
    ``device``, with ``overrides`` (the dlscaffold arm of every benchmark here)."""
    return [
        sys.executable,
        "-m",
        "dlscaffold",
        "train",
        str(config),
        f"training_params.max_training_epochs={epochs}",
        *overrides,
        f"logging_params.logging_dir={out}",
        "--device",
        device,
    ]


def command(arm: str, epochs: int, args: argparse.Namespace, out: Path) -> list[str]:
    """The command line of one run of ``arm``; both take the same sizes and options."""
    recipe = RECIPES[args.recipe]
    if arm == "dlscaffold":
        return train_command(
            recipe["project"] / "config.yml",
            epochs,
            out,
            args.device,
            f"training_params.precision={args.precision}",
            f"training_params.compile={'true' if args.compile else 'false'}",
            f"dataloading_params.batch_size={args.batch_size}",
            f"dataloading_params.dataset_args.num_points={args.points}",
            *(f"info_flow.{model}.init_args.widths=[{args.widths}]" for model in recipe["models"]),
            *recipe.get("args", {}).get(arm, []),
        )
    return [
        sys.executable,
        str(recipe["handwritten"]),
        "--epochs",
        str(epochs),
        *(["--precision", args.precision] if "precision" not in recipe else []),
        *recipe.get("args", {}).get(arm, []),
        "--device",
        args.device,
        "--points",
        str(args.points),
        "--batch-size",
        str(args.batch_size),
        "--widths",
        args.widths,
        "--out",
        str(out),
        *(["--compile"] if args.compile else []),
    ]


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float | None, str]:
    """Wall seconds of the whole process, its CPU seconds (user + system), and its output; exits on a
    failed run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN) if resource else None
    start = time.perf_counter()
    done = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}")
    cpu = None
    if before is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the runs are sequential: the difference is this one
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done.stdout


def final_accuracy(output: str) -> float | None:
    """The last validation accuracy a run printed (both arms end with a ``Final val: ...`` line)."""
    match = re.search(r"Final val:.*Accuracy (\S+)", output)
    return float(match.group(1)) if match else None


def measure(args: argparse.Namespace, folder: Path) -> dict[str, dict[str, list]]:
    """Run every (repeat, length, arm), alternating arms; per arm: wall and CPU seconds of the short and
    long runs, the long runs' final validation accuracy, and the machine's load after each run."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    keys = ("short", "long", "short_cpu", "long_cpu", "accuracy", "load")
    results = {arm: {key: [] for key in keys} for arm in ARMS}
    if args.compile:  # an untimed short run of each arm first: fills torch.compile's on-disk caches for both
        for arm in ARMS:
            wall, _, _ = timed_run(command(arm, args.epochs[0], args, folder / f"{arm}_warmup"), env)
            print(f"  warm-up     {arm:<11} {args.epochs[0]} epoch(s): {wall:7.1f} s (not counted)", flush=True)
    for repeat in range(args.repeats):
        arms = ARMS if repeat % 2 == 0 else ARMS[::-1]  # neither arm always goes first
        for length, epochs in zip(("short", "long"), args.epochs, strict=True):
            for arm in arms:
                wall, cpu, output = timed_run(command(arm, epochs, args, folder / f"{arm}_{length}_{repeat}"), env)
                accuracy = final_accuracy(output) if length == "long" else None
                label = f"repeat {repeat + 1}/{args.repeats}  {arm:<11} {epochs} epoch(s)"
                record(results[arm], length, wall, cpu, accuracy, label)
    return results


def record(
    r: dict, length: str, wall: float, cpu: float | None, accuracy: float | None, label: str, width: int = 7
) -> None:
    """One timed process's numbers into its arm's results (``accuracy``: a long run's), and its progress line."""
    load = os.getloadavg()[0]  # other work on the machine shows here (runnable processes, 1-min mean)
    r[length].append(wall)
    r[f"{length}_cpu"].append(cpu)
    r["load"].append(load)
    if length == "long":
        r["accuracy"].append(accuracy)
    shown = f", CPU {cpu:{width}.1f} s" if cpu is not None else ""
    print(f"  {label}: {wall:{width}.1f} s{shown}  (load {load:.2f})", flush=True)


def per_epoch(short: list[float], long: list[float], extra_epochs: int) -> tuple[float, float, float]:
    """(median long - median short) / extra epochs, and the smallest and largest single-repeat estimate."""
    pairs = [(lo - sh) / extra_epochs for sh, lo in zip(short, long, strict=True)]
    return (statistics.median(long) - statistics.median(short)) / extra_epochs, min(pairs), max(pairs)


def summarise(results: dict[str, dict[str, list]], args: argparse.Namespace) -> dict[str, dict[str, float | None]]:
    e1, e2 = args.epochs
    summary = {}
    for arm, r in results.items():
        wall, low, high = per_epoch(r["short"], r["long"], e2 - e1)
        has_cpu = None not in r["short_cpu"] + r["long_cpu"]
        cpu = per_epoch(r["short_cpu"], r["long_cpu"], e2 - e1)[0] if has_cpu else None
        summary[arm] = {
            "per_epoch_s": wall,
            "per_epoch_min_s": low,
            "per_epoch_max_s": high,
            "per_epoch_cpu_s": cpu,
            "startup_s": statistics.median(r["short"]) - e1 * wall,
            "short_median_s": statistics.median(r["short"]),
            "long_median_s": statistics.median(r["long"]),
            "final_val_accuracy": r["accuracy"][-1],
        }
    return summary


def machine(args: argparse.Namespace) -> dict[str, str | int]:
    """What the benchmark runs on (printed and kept in --json); exits when --device names CUDA and
    there is none."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count() or 0,
        "torch": torch.__version__,
        "torch_threads": args.threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "os": platform.platform(),
    }
    info["dlscaffold"] = runtime_version()
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: CUDA is not available here")
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def runtime_version() -> str:
    """dlscaffold's version, with the git commit (and whether the runtime has uncommitted changes) in a clone."""
    import dlscaffold

    def git(*words: str) -> str:
        done = subprocess.run(["git", *words], cwd=HERE.parent, capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit, changed = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "dlscaffold")
    except (OSError, subprocess.SubprocessError):
        commit, changed = "", ""
    if not commit:
        return dlscaffold.__version__
    return f"{dlscaffold.__version__} (commit {commit}{', runtime with uncommitted changes' if changed else ''})"


def ratio(summary: dict[str, dict[str, float | None]], key: str = "per_epoch_s") -> float | None:
    dl, hw = summary["dlscaffold"][key], summary["handwritten"][key]
    if dl is None or hw is None or dl <= 0 or hw <= 0:
        return None  # not measured, or noise larger than an epoch (--quick)
    return dl / hw


def report(summary: dict[str, dict[str, float | None]], args: argparse.Namespace, info: dict) -> str:
    e1, e2 = args.epochs

    def num(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{args.device} {args.precision}{' compile' if args.compile else ''}: recipe {args.recipe}, "
        f"{'/'.join(RECIPES[args.recipe]['models'])} widths {args.widths}, "
        f"{args.points} points, batch {args.batch_size}, epochs {e1} vs {e2}, {args.repeats} repeat(s)",
        f"machine: {info['cpu']}, {info.get('gpu', 'no GPU used')}, torch {info['torch']} "
        f"({info['torch_threads']} threads), dlscaffold {info['dlscaffold']}",
        f"{'arm':<12}{f'short ({e1} ep)':>14}{f'long ({e2} ep)':>14}{'per epoch':>11}{'[min, max]':>18}"
        f"{'CPU/epoch':>11}{'start-up':>10}{'val acc':>9}",
    ]
    for arm, s in summary.items():
        lines.append(
            f"{arm:<12}{s['short_median_s']:>12.1f} s{s['long_median_s']:>12.1f} s{s['per_epoch_s']:>9.2f} s"
            f"   [{s['per_epoch_min_s']:6.2f}, {s['per_epoch_max_s']:6.2f}]"
            f"{num(s['per_epoch_cpu_s'], 2):>9} s{s['startup_s']:>8.1f} s{num(s['final_val_accuracy'], 4):>9}"
        )
    lines.append(f"ratio dlscaffold/handwritten (per-epoch time): {num(ratio(summary), 3)}")
    lines.append(f"ratio dlscaffold/handwritten (per-epoch CPU time): {num(ratio(summary, 'per_epoch_cpu_s'), 3)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = machine(args)
    print(f"benchmark: {' '.join(command('dlscaffold', args.epochs[0], args, Path('OUT')))}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dlscaffold_bench_") as tmp:
        folder = args.keep or Path(tmp)
        results = measure(args, folder)
    summary = summarise(results, args)
    print(report(summary, args, info))
    if args.json:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps(
                {
                    "options": options,
                    "machine": info,
                    "walls_s": results,
                    "summary": summary,
                    "ratio": ratio(summary),
                    "cpu_ratio": ratio(summary, "per_epoch_cpu_s"),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
