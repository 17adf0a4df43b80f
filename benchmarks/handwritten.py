"""The benchmark's baseline: a hand-written PyTorch training loop doing the work of the dlscaffold run.

Same model (the CIFAR-10 example's ``Cifar10ResNet``), same data (``project/dataloader.py``: the
same ``CustomDataSet``, items and normalisation), same split sizes, loss (cross entropy), metric
(accuracy on the step's outputs), optimizer (Adam), batch size and precision handling as
``benchmarks/project/config.yml`` trained by ``dlscaffold train``. Per step: forward, loss,
backward, step, accuracy, sums kept on the device; TensorBoard scalars every ``--log-every`` steps;
per epoch: a validation pass, epoch scalars, and a checkpoint (weights, optimizer, scaler).

With ``--accumulate K`` (as ``training_params.accumulate: K``) K consecutive batches from the epoch's
first make one optimizer step (the epoch's last step may have fewer): each batch's mean loss is scaled
by its share of the group's samples before its backward, so that the step's gradient is that of the
mean over the group's samples; the optimizer steps after the group's last batch. Steps, and so
``--log-every``, count optimizer steps.

``python benchmarks/handwritten.py --epochs 3 [--precision bf16] [--compile] [--device cuda] --out DIR``

Plain PyTorch: nothing of the dlscaffold runtime runs here (the example's ``models.py`` imports
``dlscaffold.modules`` for its other model, and that is all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parent / "project"))
from dataloader import CustomDataSet, normalise  # noqa: E402  (the benchmark project's own files)
from models import Cifar10ResNet  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=5120, help="synthetic data points (train + val)")
    parser.add_argument("--val-ratio", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--widths", default="32,64,128,256", help="Cifar10ResNet widths")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/handwritten"))
    return parser.parse_args(argv)


def loaders(args: argparse.Namespace, device: torch.device) -> tuple[DataLoader, DataLoader]:
    data = CustomDataSet({"dataloading_params": {"dataset_args": {"num_points": args.points, "seed": 0}}})
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)).tolist()
    num_val = round(args.val_ratio * len(data))
    pin = device.type == "cuda"
    train = DataLoader(Subset(data, order[num_val:]), args.batch_size, shuffle=True, pin_memory=pin)
    val = DataLoader(Subset(data, order[:num_val]), args.batch_size, pin_memory=pin)
    return train, val


def batch_to(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = normalise(batch["image"].to(device, non_blocking=True))
    return images, batch["class_idx"].to(device, non_blocking=True)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device, dtype) -> list[float]:
    """Mean cross entropy and accuracy over the validation set."""
    model.eval()
    sums, count = torch.zeros(2, dtype=torch.float64, device=device), 0
    for batch in loader:
        images, labels = batch_to(batch, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)["class_logits"]
            loss = F.cross_entropy(logits, labels, reduction="sum")
        sums += torch.stack([loss, (logits.argmax(-1) == labels).sum()]).double()
        count += len(labels)
    return (sums / count).tolist()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device, dtype = torch.device(args.device), DTYPES[args.precision]
    train_loader, val_loader = loaders(args, device)
    model = Cifar10ResNet(widths=[int(w) for w in args.widths.split(",")], flip_tta=False).to(device)
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    args.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(args.out))
    step, k, n = 0, args.accumulate, len(train_loader.dataset)
    sizes = [min(args.batch_size, n - start) for start in range(0, n, args.batch_size)]  # the epoch's batches
    for epoch in range(1, args.epochs + 1):
        model.train()
        epoch_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss and accuracy, sample-weighted
        window, count, window_count = epoch_sums.clone(), 0, 0
        for i, batch in enumerate(train_loader):
            images, labels = batch_to(batch, device)
            first = i - i % k  # the step's first batch
            share = len(labels) / sum(sizes[first : first + k])  # its share of the step's samples
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = step_model(images)["class_logits"]
                loss = F.cross_entropy(logits, labels)
            scaler.scale(loss * share if share != 1.0 else loss).backward()
            with torch.no_grad():
                accuracy = (logits.argmax(-1) == labels).float().mean()
                values = torch.stack([loss.detach().float(), accuracy]).double() * len(labels)
            epoch_sums += values
            window += values
            count, window_count = count + len(labels), window_count + len(labels)
            if i + 1 < min(first + k, len(sizes)):
                continue  # not the step's last batch: no optimizer step yet
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % args.log_every == 0:  # the only host reads inside an epoch
                ce, acc = (window / window_count).tolist()
                writer.add_scalar("train_step/CE", ce, step)
                writer.add_scalar("train_step/Accuracy", acc, step)
                writer.add_scalar("train_step/lr", optimizer.param_groups[0]["lr"], step)
                window, window_count = torch.zeros_like(window), 0
        train_ce, train_acc = (epoch_sums / count).tolist()
        val_ce, val_acc = validate(model, val_loader, device, dtype)  # eager, as dlscaffold validates
        for name, value in (
            ("train/CE", train_ce),
            ("train/Accuracy", train_acc),
            ("val/CE", val_ce),
            ("val/Accuracy", val_acc),
        ):
            writer.add_scalar(name, value, step)
        writer.flush()
        torch.save(
            {
                "epoch": epoch,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
            },
            args.out / f"checkpoint_{epoch:06d}.pt",
        )
        print(
            f"epoch {epoch}/{args.epochs}  train: CE {train_ce:.4g}  Accuracy {train_acc:.4g}  "
            f"| val: CE {val_ce:.4g}  Accuracy {val_acc:.4g}",
            flush=True,
        )
    writer.close()
    print(f"Final val: CE {val_ce:.4g}  Accuracy {val_acc:.4g}")


if __name__ == "__main__":
    main()
