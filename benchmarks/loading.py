"""What does dlscaffold cost when the data are read from disk? Per-epoch time of ``dlscaffold train`` against a
hand-written loop, for the large-data ``CustomDataSet`` patterns of ``docs/data.md``.

For each pattern (``points``: one HDF5 file per point; ``large``: one large HDF5 file opened lazily by
each process; ``memmap``: a ``.npy`` array mapped lazily by each process; ``images``: a folder of PNG
images) a synthetic dataset is written to a temporary folder: ``--points`` CIFAR-shaped uint8 images
``(3, 32, 32)`` in 10 classes and their labels. Both arms read it with the same ``CustomDataSet``, the
pattern's code taken from ``docs/data.md`` as it stands, with the same number of loader workers
(``--num-workers``, default 2) and batch size, a shuffled training loader and a validation loader (80/20),
and train a tiny model (one linear layer on the flattened image, Adam), so that the epoch's time is that of
loading. Arm ``dlscaffold`` is ``python -m dlscaffold train PROJECT/config.yml ...`` on a small project
written next to the data (``models.py``, ``dataloader.py`` holding the pattern, ``training_utils.py``,
``config.yml`` with the built-in ``MultinomialNLL`` loss and ``MultinomialAccuracy``); arm ``handwritten``
is ``python benchmarks/loading.py handwritten ...``: a plain PyTorch loop over ``DataLoader(shuffle=True)``
with the project's ``CustomDataSet`` and model, validating, logging to TensorBoard and saving a checkpoint
every epoch as the dlscaffold run does.

Timing is ``benchmarks/overhead.py``'s (whose helpers this file imports): whole processes, a short (E1
epochs) and a long (E2 epochs) run of each arm, the arms alternated, R repeats; an arm's per-epoch time is
``(median long wall - median short wall) / (E2 - E1)``, so start-up cancels. For the memmap pattern, one
more (untimed) run of each arm samples the memory of its processes from ``/proc`` (:func:`memory_of`): per
process, the resident pages of its ``features.npy`` mapping, its private dirty memory and its ``VmRSS``, the
peak over the run, against the array's size and what each worker reads.

The arms collate differently in one respect: dlscaffold's rule makes NumPy integer arrays ``int64``
(``docs/runtime.md``, "Collation"; tensors keep their dtype), torch's ``default_collate`` keeps their dtype.
The patterns whose ``__getitem__`` returns NumPy arrays (points, large, memmap) therefore send ``int64``
batches from the workers in the dlscaffold arm, 8 times the bytes of the ``uint8`` images, and that is part
of what is measured. ``--tensors`` appends to the pattern a wrapper of ``__getitem__`` that returns its NumPy
arrays as tensors (``torch.from_numpy``), whose ``uint8`` both arms keep.

    python benchmarks/loading.py                                    # every pattern, the default sizes
    python benchmarks/loading.py --patterns memmap --points 100000  # one pattern, other sizes
    python benchmarks/loading.py --tensors                          # items as tensors: uint8 batches in both arms
    python benchmarks/loading.py --quick                            # a smoke test (seconds per process)

The HDF5 patterns need h5py (``pip install "dlscaffold[hdf5]"``), the image pattern Pillow; a pattern
whose package is missing is skipped with one line. Linux (``/proc``) for the memory numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead import ARMS, final_accuracy, machine, ratio, record, summarise, timed_run, train_command  # noqa: E402  (benchmarks/overhead.py)

DOCS = HERE.parent / "docs" / "data.md"
SHAPE, NUM_CLASSES = (3, 32, 32), 10
# Per pattern: its section of docs/data.md, the package it needs, the model (its input's name), and the
# default number of points (an epoch of 4-7 s on the 2-core machine of benchmarks/README.md, one thread).
PATTERNS = {
    "points": {"title": "One HDF5 file per point", "needs": "h5py", "model": "TinyLinear", "points": 30000},
    "large": {"title": "One large HDF5 file", "needs": "h5py", "model": "TinyLinear", "points": 50000},
    "memmap": {"title": "A NumPy array on disk (memmap)", "needs": "numpy", "model": "TinyLinear", "points": 250000},
    "images": {"title": "A folder of images", "needs": "PIL", "model": "TinyLinearImage", "points": 50000},
}
QUICK_POINTS = 1000

# The project's models.py (both arms train this class).
MODELS = '''"""A linear layer on the flattened image: a step costs next to nothing, so the epoch's time is loading."""

from torch import nn


class TinyLinear(nn.Module):
    def __init__(self, in_features: int = 3072, num_classes: int = 10):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def logits(self, x):
        x = x.flatten(1)
        return {"class_logits": self.linear(x.float() / 255 if not x.is_floating_point() else x)}

    def forward(self, features):  # uint8 (B, 3, 32, 32)
        return self.logits(features)


class TinyLinearImage(TinyLinear):
    def forward(self, image):  # float (B, 3, 32, 32) in [0, 1], scaled by the dataset's transform_batch
        return self.logits(image)


def get_ref_model_dict():
    return {"TinyLinear": TinyLinear, "TinyLinearImage": TinyLinearImage}
'''

# Appended to a pattern's dataloader.py by --tensors: its items' NumPy arrays become tensors of the same dtype.
AS_TENSORS = """

import numpy as _np

_read_point = CustomDataSet.__getitem__


def _tensors(self, i):
    return {k: torch.from_numpy(v) if isinstance(v, _np.ndarray) else v for k, v in _read_point(self, i).items()}


CustomDataSet.__getitem__ = _tensors
"""

TRAINING_UTILS = '''"""No project losses or evals: config.yml names built-in ones."""


def get_project_loss_and_eval_dict():
    return {}, {}
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patterns", nargs="+", choices=tuple(PATTERNS), default=list(PATTERNS), help="the patterns to time [all]"
    )
    parser.add_argument(
        "--points",
        type=int,
        help="points of each dataset, 80%% train, 20%% val (default: "
        + ", ".join(f"{name} {p['points']}" for name, p in PATTERNS.items())
        + ")",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes of both arms")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (arm, length)")
    parser.add_argument(
        "--epochs", type=int, nargs=2, default=(1, 3), metavar=("E1", "E2"), help="epochs of the short and the long run"
    )
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both arms (default: torch's)")
    parser.add_argument(
        "--tensors",
        action="store_true",
        help="wrap each pattern's __getitem__ to return its NumPy arrays as tensors (torch.from_numpy), whose dtype "
        "(uint8) dlscaffold's collation keeps, where it makes integer arrays int64",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_POINTS} points, one repeat: a smoke test")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--keep", type=Path, help="keep the data, projects and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.epochs, args.repeats = QUICK_POINTS, (1, 2), 1
    if not 0 < args.epochs[0] < args.epochs[1]:
        parser.error("--epochs E1 E2: expected 0 < E1 < E2")
    if args.repeats < 1 or args.num_workers < 0 or args.batch_size < 1:
        parser.error("expected --repeats and --batch-size of at least 1, --num-workers of at least 0")
    args.patterns = list(dict.fromkeys(args.patterns))
    return args


# ------------------------------------------------------------------------------ the data and the project


def pattern_code(title: str) -> str:
    """The code block of docs/data.md's section ``## title``."""
    section = DOCS.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"


def synthetic_chunks(num_points: int, seed: int = 0, chunk: int = 5000):
    """``(images uint8 (n, 3, 32, 32), labels int64 (n,))`` pieces of ``num_points`` in all: each class
    has its own colour pattern, an image is its class's pattern plus noise (the model learns something,
    so both arms' accuracies can be compared). Made a piece at a time: any size fits in memory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    patterns = rng.random((NUM_CLASSES, *SHAPE), dtype=np.float32) * 255
    for start in range(0, num_points, chunk):
        n = min(chunk, num_points - start)
        labels = rng.integers(0, NUM_CLASSES, n)
        noise = rng.standard_normal((n, *SHAPE), dtype=np.float32) * 96
        yield np.clip(0.5 * patterns[labels] + 64 + noise, 0, 255).astype(np.uint8), labels


def write_data(name: str, num_points: int, folder: Path) -> Path:
    """The pattern's dataset under ``folder``; returns its ``dataset_path``."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    if name == "memmap":  # written piece by piece, as a larger-than-memory array would be
        features = np.lib.format.open_memmap(folder / "features.npy", "w+", np.uint8, (num_points, *SHAPE))
        labels = np.empty(num_points, dtype=np.int64)
        start = 0
        for images, classes in synthetic_chunks(num_points):
            features[start : start + len(images)], labels[start : start + len(images)] = images, classes
            start += len(images)
        features.flush()
        del features
        np.save(folder / "labels.npy", labels)
        return folder
    if name == "large":
        import h5py

        with h5py.File(folder / "data.h5", "w") as file:
            features = file.create_dataset("features", (num_points, *SHAPE), np.uint8, chunks=(1, *SHAPE))
            labels = file.create_dataset("class_idx", (num_points,), np.int64)
            start = 0
            for images, classes in synthetic_chunks(num_points):
                features[start : start + len(images)], labels[start : start + len(images)] = images, classes
                start += len(images)
        return folder / "data.h5"
    index = 0
    for images, classes in synthetic_chunks(num_points):
        for image, label in zip(images, classes, strict=True):
            if name == "points":  # 100 subfolders of files
                import h5py

                path = folder / f"part{index % 100:02d}" / f"point_{index:07d}.h5"
                path.parent.mkdir(exist_ok=True)
                with h5py.File(path, "w") as point:
                    point["features"], point["class_idx"] = image, label
            else:  # images: one folder per class
                from PIL import Image

                path = folder / f"class{label}" / f"{index:07d}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(image.transpose(1, 2, 0)).save(path)
            index += 1
    return folder


def write_project(name: str, data: Path, folder: Path, tensors: bool = False) -> Path:
    """The dlscaffold project reading ``data`` with the pattern's ``CustomDataSet``; returns its folder."""
    import yaml

    model = PATTERNS[name]["model"]
    input_name = "image" if name == "images" else "features"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataloader.py").write_text(pattern_code(PATTERNS[name]["title"]) + (AS_TENSORS if tensors else ""))
    (folder / "models.py").write_text(MODELS)
    (folder / "training_utils.py").write_text(TRAINING_UTILS)
    outputs = {"class_logits": model, "class_idx": "dataset"}
    config = {
        "dataloading_params": {
            "dataset_path": str(data),
            "val_ratio": 0.2,
            "dev_num": 20,
            "num_workers": 2,
            "batch_size": 64,
        },
        "training_params": {
            "seed": 0,
            "lrn_rate": 0.001,  # Adam(lr, betas=(0.9, 0.99)), as the hand-written loop
            "beta1": 0.9,
            "beta2": 0.99,
            "regularization_weight": 0.0,
            "max_training_epochs": 1,
            "use_GPU": True,
            "val_every": 1,
            "save_every": 1,
            "log_every": 50,
            "precision": "fp32",
        },
        "logging_params": {"logging_dir": "runs", "run_notes": f"loading_{name}"},
        "info_flow": {
            model: {
                "train": 1,
                "model_dir": None,
                "epoch": 0,
                "init_args": {},
                "inputs": {input_name: "dataset"},
                "losses": {"MultinomialNLL": {"logging_name": "CE", "weight": 1.0, "inputs": outputs}},
                "evals": {"MultinomialAccuracy": {"logging_name": "Accuracy", "inputs": outputs}},
            }
        },
    }
    (folder / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def command(arm: str, epochs: int, args: argparse.Namespace, project: Path, data: Path, out: Path) -> list[str]:
    """The command line of one run of ``arm``; both take the same sizes and options."""
    if arm == "dlscaffold":
        return train_command(
            project / "config.yml",
            epochs,
            out,
            args.device,
            f"dataloading_params.batch_size={args.batch_size}",
            f"dataloading_params.num_workers={args.num_workers}",
        )
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "handwritten",
        "--project",
        str(project),
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(args.batch_size),
        "--num-workers",
        str(args.num_workers),
        "--device",
        args.device,
        "--out",
        str(out),
    ]


# ------------------------------------------------------------------------------ the hand-written arm


def handwritten(argv: list[str]) -> None:
    """The hand-written loop: the project's ``CustomDataSet`` and model, plain PyTorch around them. Per
    step: forward, cross entropy, backward, Adam step, accuracy, sums kept on the device; TensorBoard
    every ``--log-every`` steps; per epoch: a validation pass, epoch scalars and a checkpoint."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import yaml
    from torch.utils.data import DataLoader, Subset
    from torch.utils.tensorboard import SummaryWriter

    parser = argparse.ArgumentParser(prog="loading.py handwritten")
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the dataset_path")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--val-ratio", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/handwritten"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.project))
    from dataloader import CustomDataSet  # the project's: the pattern of docs/data.md
    from models import get_ref_model_dict

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    name, flow = next(iter(yaml.safe_load((args.project / "config.yml").read_text())["info_flow"].items()))
    (input_name,) = flow["inputs"]
    data = CustomDataSet({"dataloading_params": {"dataset_path": str(args.data)}})
    transform = getattr(data, "transform_batch", None)
    order = np.random.default_rng(args.seed).permutation(len(data)).tolist()
    num_val = round(args.val_ratio * len(data))
    options = {"num_workers": args.num_workers, "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(Subset(data, order[num_val:]), args.batch_size, shuffle=True, **options)
    val_loader = DataLoader(Subset(data, order[:num_val]), args.batch_size, **options)
    model = get_ref_model_dict()[name]().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(args.out))

    def inputs(batch: dict, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch = transform(batch, train) if transform else batch
        return batch[input_name], batch["class_idx"]

    step = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        window, count, window_count = sums.clone(), 0, 0
        for batch in train_loader:
            x, labels = inputs(batch, True)
            logits = model(x)["class_logits"]
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                values = torch.stack([loss.detach(), (logits.argmax(-1) == labels).float().mean()]).double()
            sums += values * len(labels)
            window += values * len(labels)
            count, window_count, step = count + len(labels), window_count + len(labels), step + 1
            if step % args.log_every == 0:
                ce, acc = (window / window_count).tolist()
                writer.add_scalar("train_step/CE", ce, step)
                writer.add_scalar("train_step/Accuracy", acc, step)
                window, window_count = torch.zeros_like(window), 0
        train_ce, train_acc = (sums / count).tolist()
        model.eval()
        sums, count = torch.zeros(2, dtype=torch.float64, device=device), 0
        with torch.no_grad():
            for batch in val_loader:
                x, labels = inputs(batch, False)
                logits = model(x)["class_logits"]
                loss = F.cross_entropy(logits, labels, reduction="sum")
                sums += torch.stack([loss, (logits.argmax(-1) == labels).sum()]).double()
                count += len(labels)
        val_ce, val_acc = (sums / count).tolist()
        for key, value in (("train/CE", train_ce), ("train/Accuracy", train_acc), ("val/CE", val_ce)):
            writer.add_scalar(key, value, step)
        writer.add_scalar("val/Accuracy", val_acc, step)
        writer.flush()
        checkpoint = {"epoch": epoch, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        torch.save(checkpoint, args.out / f"checkpoint_{epoch:06d}.pt")
        print(
            f"epoch {epoch}/{args.epochs}  train: CE {train_ce:.4g}  Accuracy {train_acc:.4g}  | val: CE {val_ce:.4g}"
        )
    writer.close()
    print(f"Final val: CE {val_ce:.4g}  Accuracy {val_acc:.4g}")


# ------------------------------------------------------------------------------ memory


def descendants(pid: int) -> list[tuple[int, int]]:
    """``(pid, depth)`` of the processes below ``pid`` (depth 1: its children), from ``/proc``."""
    found, todo = [], [(pid, 0)]
    while todo:
        parent, depth = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.append((int(child), depth + 1))
            todo.append((int(child), depth + 1))
    return found


def memory_of(pid: int, mapped: str) -> dict[str, int] | None:
    """Bytes, of one process: ``VmRSS`` (``/proc/PID/status``: every resident page it maps, shared libraries
    and pages shared with its parent included), ``private_dirty`` (``Private_Dirty`` of ``/proc/PID/
    smaps_rollup``: the memory it wrote itself and shares with no other process, its own allocations), and
    ``mapped``, the resident pages of its mappings of the file whose path ends with ``mapped``
    (``/proc/PID/smaps``: the operating system's file cache, clean, shared, reclaimable); None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        smaps = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    values = {"VmRSS": 0, "private_dirty": 0, "mapped": 0}
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            values["VmRSS"] = int(line.split()[1]) * 1024
    for line in rollup.splitlines():
        if line.startswith("Private_Dirty:"):
            values["private_dirty"] = int(line.split()[1]) * 1024
    at = smaps.find(f"{mapped}\n")
    while at >= 0:  # each mapping of the file: its header line ends with the path, its Rss line follows
        rss = smaps.index("\nRss:", at)
        values["mapped"] += int(smaps[rss + 5 : smaps.index("kB", rss)]) * 1024
        at = smaps.find(f"{mapped}\n", rss)
    return values


class MemorySampler:
    """Samples, every ``interval`` seconds while in a ``with`` block, the memory (:func:`memory_of`) of the
    processes below this one: the arm's main process (depth 1) and its DataLoader workers (deeper);
    keeps each process's peak of each value."""

    def __init__(self, mapped: str, interval: float = 0.02) -> None:
        self.mapped, self.interval = mapped, interval
        self.peaks: dict[int, dict[str, int]] = {}
        self.depth: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid, depth in descendants(os.getpid()):
                values = memory_of(pid, self.mapped)
                if values is not None:
                    peak = self.peaks.setdefault(pid, dict.fromkeys(values, 0))
                    for key, value in values.items():
                        peak[key] = max(peak[key], value)
                    self.depth[pid] = depth

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, object]:
        """Peaks over the main process and over the workers (the largest of any worker), and the workers seen."""
        main = [p for pid, p in self.peaks.items() if self.depth[pid] == 1]
        workers = [p for pid, p in self.peaks.items() if self.depth[pid] > 1]

        def peak(group: list[dict[str, int]]) -> dict[str, int] | None:
            return {key: max(p[key] for p in group) for key in group[0]} if group else None

        return {"main": peak(main), "workers": peak(workers), "workers_seen": len(workers)}


def measure_memory(args: argparse.Namespace, project: Path, data: Path, folder: Path) -> dict[str, object]:
    """One untimed run of E1 epochs of each arm, its processes' memory sampled (the memmap pattern)."""
    import numpy as np

    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    size = (data / "features.npy").stat().st_size
    points = len(np.load(data / "labels.npy", mmap_mode="r"))
    num_val = round(0.2 * points)
    point_bytes = int(np.prod(SHAPE))
    workers = max(args.num_workers, 1)
    result: dict[str, object] = {
        "array_bytes": size,
        "point_bytes": point_bytes,
        # each worker loads every num_workers-th batch of a loader: about this many bytes of points an epoch
        "read_per_worker_train_bytes": (points - num_val) * point_bytes // workers,
        "read_per_worker_val_bytes": num_val * point_bytes // workers,
    }
    for arm in ARMS:
        with MemorySampler("features.npy") as sampler:
            timed_run(command(arm, args.epochs[0], args, project, data, folder / f"{arm}_memory"), env)
        result[arm] = sampler.summary()
    return result


# ------------------------------------------------------------------------------ timing


def measure(args: argparse.Namespace, name: str, project: Path, data: Path, folder: Path) -> dict[str, dict]:
    """Every (repeat, length, arm) of one pattern, arms alternated; per arm as ``overhead.measure``
    returns it: wall and CPU seconds of the short and long runs, the long runs' final validation accuracy."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    keys = ("short", "long", "short_cpu", "long_cpu", "accuracy", "load")
    results = {arm: {key: [] for key in keys} for arm in ARMS}
    for repeat in range(args.repeats):
        arms = ARMS if repeat % 2 == 0 else ARMS[::-1]  # neither arm always goes first
        for length, epochs in zip(("short", "long"), args.epochs, strict=True):
            for arm in arms:
                out = folder / f"{arm}_{length}_{repeat}"
                wall, cpu, output = timed_run(command(arm, epochs, args, project, data, out), env)
                accuracy = final_accuracy(output) if length == "long" else None
                record(
                    results[arm],
                    length,
                    wall,
                    cpu,
                    accuracy,
                    f"{name:<7} repeat {repeat + 1}/{args.repeats}  {arm:<11} {epochs} epoch(s)",
                )
    return results


def disk_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.1f} MB"


def report(patterns: dict[str, dict], args: argparse.Namespace, info: dict) -> str:
    e1, e2 = args.epochs
    lines = [
        f"{args.device}: batch {args.batch_size}, {args.num_workers} worker(s), epochs {e1} vs {e2}, "
        f"{'items as tensors (--tensors), ' if args.tensors else ''}"
        f"{args.repeats} repeat(s); tiny linear model",
        f"machine: {info['cpu']}, {info.get('gpu', 'no GPU used')}, torch {info['torch']} "
        f"({info['torch_threads']} threads), dlscaffold {info['dlscaffold']}",
        f"{'pattern':<8}{'points':>8}{'on disk':>11}{'dlscaffold':>12}{'handwritten':>13}{'[min, max] dl / hw':>26}"
        f"{'ratio':>7}{'CPU ratio':>10}{'val acc dl/hw':>15}",
    ]

    def num(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for name, p in patterns.items():
        dl, hw = p["summary"]["dlscaffold"], p["summary"]["handwritten"]
        spread = (
            f"{dl['per_epoch_min_s']:.2f}-{dl['per_epoch_max_s']:.2f} / {hw['per_epoch_min_s']:.2f}-"
            f"{hw['per_epoch_max_s']:.2f}"
        )
        accuracy = f"{num(dl['final_val_accuracy'], 3)}/{num(hw['final_val_accuracy'], 3)}"
        lines.append(
            f"{name:<8}{p['points']:>8}{mb(p['disk_bytes']):>11}"
            f"{dl['per_epoch_s']:>10.2f} s{hw['per_epoch_s']:>11.2f} s"
            f"{spread:>26}{num(p['ratio'], 3):>7}{num(p['cpu_ratio'], 3):>10}{accuracy:>15}"
        )
    for name, p in patterns.items():
        lines.append(f"ratio {name} dlscaffold/handwritten (per-epoch time): {num(p['ratio'], 3)}")
    memory = patterns.get("memmap", {}).get("memory")
    if memory:
        lines.append(
            f"memmap memory (peaks over one {e1}-epoch run): features.npy {mb(memory['array_bytes'])}; each worker "
            f"reads about {mb(memory['read_per_worker_train_bytes'])} of it a training epoch, "
            f"{mb(memory['read_per_worker_val_bytes'])} a validation"
        )
        for arm in ARMS:
            m = memory[arm]
            for who in ("workers", "main"):
                v = m[who]
                if v is None:
                    continue
                seen = f" ({m['workers_seen']} seen, the largest)" if who == "workers" else ""
                lines.append(
                    f"  {arm:<11} {who + seen:<26} features.npy resident {mb(v['mapped']):>9}, "
                    f"private dirty {mb(v['private_dirty']):>9}, VmRSS {mb(v['VmRSS']):>9}"
                )
    return "\n".join(lines)


def available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(PATTERNS[name]["needs"]) is not None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["handwritten"]:
        return handwritten(argv[1:])
    args = parse_args(argv)
    info = machine(args)
    missing = [name for name in args.patterns if not available(name)]
    for need in dict.fromkeys(PATTERNS[name]["needs"] for name in missing):
        names = ", ".join(name for name in missing if PATTERNS[name]["needs"] == need)
        extra = ' (pip install "dlscaffold[hdf5]")' if need == "h5py" else ""
        print(f"skipped: {names}: {need} is not installed{extra}", flush=True)
    patterns: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dlscaffold_loading_") as tmp:
        root = args.keep or Path(tmp)
        for name in (n for n in args.patterns if n not in missing):
            points = args.points or PATTERNS[name]["points"]
            folder = root / name
            data = write_data(name, points, folder / "data")
            project = write_project(name, data, folder / "project", args.tensors)
            print(f"{name}: {points} points, {mb(disk_bytes(data))} in {data}", flush=True)
            print(f"  dlscaffold: {' '.join(command('dlscaffold', args.epochs[0], args, project, data, Path('OUT')))}")
            results = measure(args, name, project, data, folder / "runs")
            summary = summarise(results, args)
            patterns[name] = {
                "points": points,
                "disk_bytes": disk_bytes(data),
                "walls_s": results,
                "summary": summary,
                "ratio": ratio(summary),
                "cpu_ratio": ratio(summary, "per_epoch_cpu_s"),
            }
            if name == "memmap" and Path("/proc/self/smaps").exists():
                patterns[name]["memory"] = measure_memory(args, project, data, folder / "runs")
    print(report(patterns, args, info))
    if args.json:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps({"options": options, "machine": info, "skipped": missing, "patterns": patterns}, indent=2)
        )
    return None


if __name__ == "__main__":
    main()
