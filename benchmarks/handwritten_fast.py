"""The fast benchmark's baseline: a hand-written PyTorch loop doing the work of ``dlscaffold train
benchmarks/project_fast/config.yml`` (the CIFAR-10 example's fast recipe).

Same model (the example's ``Cifar10Airbench``, whitened from the first 5000 training images), same
data and augmentation (``project_fast/dataloader.py``: the example's ``CustomDataSet`` on synthetic
images, every split stacked once on the device, batches by index in a fresh random order each epoch,
the example's ``transform_batch`` with the alternating flip and reflected shifts), same optimizer
(SGD + Nesterov in three parameter groups: BatchNorm biases at 64x the rate, the whitening bias in
epochs 1-3 only, the rest), the same linear one-cycle schedule stepped every step, Lookahead every 5
steps (decay 0.95^5, ramped by (step / total)^3, written back), cross entropy with label smoothing
0.2 under bf16 autocast, accuracy on the step's outputs with sums on the device, glibc's malloc
keeping freed memory (as ``keep_cpu_memory: true``). TensorBoard every ``--log-every`` steps; per
epoch a validation pass with the example's 6 test-time augmentation views, epoch scalars, and a
checkpoint (both models, optimizer, scheduler).

``python benchmarks/handwritten_fast.py --epochs 3 [--device cuda] --out DIR``

Plain PyTorch: nothing of the dlscaffold runtime runs here.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parent / "project_fast"))
from dataloader import CustomDataSet  # noqa: E402  (the benchmark project's own files)
from models import Cifar10Airbench  # noqa: E402

DATASET_ARGS = {"augment": True, "flip": "alternating", "translate": 2, "padding": "reflect"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=10752, help="synthetic data points (train + val)")
    parser.add_argument("--val-ratio", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--widths", default="64,256,256", help="Cifar10Airbench widths")
    parser.add_argument("--log-every", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/handwritten_fast"))
    return parser.parse_args(argv)


def keep_freed_memory() -> None:
    """glibc: no mmap for large blocks, no heap trimming (what ``keep_cpu_memory: true`` sets)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD


def stacked(data: CustomDataSet, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    """A split's items stacked once, on the device."""
    index = torch.tensor(indices)
    labels = torch.as_tensor(data.labels)[index]
    return {"image": data.images[index].to(device), "class_idx": labels.to(device), "index": index.to(device)}


def build(model: Cifar10Airbench, lr: float, total_steps: int):
    """The optimizer's three parameter groups, the one-cycle schedule and the Lookahead copy."""
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and n.endswith(".bias")]
    whiten_bias = [model.whiten.bias]
    taken = {id(p) for p in norm_biases + whiten_bias}
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups = [
        {"params": norm_biases, "lr": lr * 64, "weight_decay": 2.08e-5},
        {"params": whiten_bias, "lr": lr},
        {"params": rest, "lr": lr},
    ]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.85, nesterov=True, weight_decay=0.00133)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[lr * 64, lr, lr],
        total_steps=total_steps,
        pct_start=0.23,
        div_factor=5,
        final_div_factor=2.857,
        anneal_strategy="linear",
        cycle_momentum=False,
    )
    average = copy.deepcopy(model).requires_grad_(False).eval()
    return optimizer, scheduler, average


@torch.no_grad()
def lookahead(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average = decay * average + (1 - decay) * model; then the model takes the average."""
    params = zip(average.parameters(), model.parameters(), strict=True)
    pairs = [*params, *zip(average.buffers(), model.buffers(), strict=True)]
    floats = [(a, m) for a, m in pairs if a.is_floating_point()]
    torch._foreach_lerp_([a for a, _ in floats], [m for _, m in floats], 1.0 - decay)
    others = [(a, m) for a, m in pairs if not a.is_floating_point()]
    torch._foreach_copy_([a for a, _ in others], [m for _, m in others])
    torch._foreach_copy_([m for _, m in pairs], [a for a, _ in pairs])


@torch.no_grad()
def validate(model: torch.nn.Module, data: CustomDataSet, val: dict, batch_size: int) -> list[float]:
    """Mean cross entropy (label smoothing 0.2) and accuracy over the validation split, the logits
    averaged over the dataset's test-time augmentation views."""
    model.eval()
    device = val["image"].device
    sums, count = torch.zeros(2, dtype=torch.float64, device=device), 0
    for start in range(0, len(val["image"]), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in val.items()}
        batch = data.transform_batch(batch, False)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            views = data.tta_views(batch)
            total = sum(w for w, _ in views)
            logits = sum(model(image=v["image"])["class_logits"].float() * (w / total) for w, v in views)
            loss = F.cross_entropy(logits, batch["class_idx"], reduction="sum", label_smoothing=0.2)
        sums += torch.stack([loss, (logits.argmax(-1) == batch["class_idx"]).sum()]).double()
        count += len(batch["class_idx"])
    return (sums / count).tolist()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keep_freed_memory()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cfg = {
        "dataloading_params": {"dataset_args": {"num_points": args.points, "seed": 0, **DATASET_ARGS}},
        "training_params": {"seed": args.seed},
    }
    data = CustomDataSet(cfg)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)).tolist()
    num_val = round(args.val_ratio * len(data))
    train, val = stacked(data, order[num_val:], device), stacked(data, order[:num_val], device)
    model = Cifar10Airbench(widths=[int(w) for w in args.widths.split(",")]).to(device)
    model.init_from_data(image=data.transform_batch({k: v[:5000] for k, v in train.items()}, False)["image"])
    steps_per_epoch = -(-len(train["image"]) // args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    optimizer, scheduler, average = build(model, 1.5, total_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(args.out))
    step = 0
    for epoch in range(1, args.epochs + 1):
        data.set_epoch(epoch)
        model.train()
        model.whiten.bias.requires_grad_(epoch <= 3)
        epoch_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss and accuracy, sample-weighted
        window, count, window_count = epoch_sums.clone(), 0, 0
        rows = torch.randperm(len(train["image"]), device=device)
        for start in range(0, len(rows), args.batch_size):
            chosen = rows[start : start + args.batch_size]
            batch = data.transform_batch({k: v.index_select(0, chosen) for k, v in train.items()}, True)
            labels = batch["class_idx"]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(image=batch["image"])["class_logits"]
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.2)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            scheduler.step()
            if step % 5 == 0:
                lookahead(average, model, 0.7737809375 * (step / total_steps) ** 3)
            with torch.no_grad():
                accuracy = (logits.argmax(-1) == labels).float().mean()
                values = torch.stack([loss.detach().float(), accuracy]).double() * len(labels)
            epoch_sums += values
            window += values
            count, window_count = count + len(labels), window_count + len(labels)
            if step % args.log_every == 0:  # the only host reads inside an epoch
                ce, acc = (window / window_count).tolist()
                writer.add_scalar("train_step/Cross_Entropy", ce, step)
                writer.add_scalar("train_step/Accuracy", acc, step)
                writer.add_scalar("train_step/lr", optimizer.param_groups[2]["lr"], step)
                window, window_count = torch.zeros_like(window), 0
        train_ce, train_acc = (epoch_sums / count).tolist()
        val_ce, val_acc = validate(model, data, val, args.batch_size)
        for name, value in (
            ("train/Cross_Entropy", train_ce),
            ("train/Accuracy", train_acc),
            ("val/Cross_Entropy", val_ce),
            ("val/Accuracy", val_acc),
        ):
            writer.add_scalar(name, value, step)
        writer.flush()
        state = {"model": model.state_dict(), "average": average.state_dict(), "optimizer": optimizer.state_dict()}
        state.update(epoch=epoch, step=step, scheduler=scheduler.state_dict())
        torch.save(state, args.out / f"checkpoint_{epoch:06d}.pt")
        print(
            f"epoch {epoch}/{args.epochs}  train: CE {train_ce:.4g}  Accuracy {train_acc:.4g}  "
            f"| val: CE {val_ce:.4g}  Accuracy {val_acc:.4g}",
            flush=True,
        )
    writer.close()
    print(f"Final val: CE {val_ce:.4g}  Accuracy {val_acc:.4g}")


if __name__ == "__main__":
    main()
