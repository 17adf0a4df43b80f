"""The GAN benchmark's baseline: a hand-written PyTorch loop doing the work of ``dlscaffold train
benchmarks/project_gan/config.yml``.

Same models (``project_gan/models.py``: a DCGAN for 32x32 images), same data (``project_gan/dataloader.py``:
synthetic images and a noise vector per index), same split sizes, losses (binary cross entropy) and
optimizers (Adam 2e-4, betas (0.5, 0.999), one per model). Each step is the training step of
pytorch/examples' dcgan/main.py: the discriminator on the real batch and on the fakes (detached),
its step; then the fakes through the updated discriminator, the generator's step. Both losses are
summed on the device; TensorBoard scalars every ``--log-every`` steps; per epoch a validation pass
(both losses, the models in eval mode), epoch scalars, and a checkpoint (both models, both optimizers).

``python benchmarks/handwritten_gan.py --epochs 3 [--device cuda] --out DIR``

Plain PyTorch: nothing of the dlscaffold runtime runs here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parent / "project_gan"))
from dataloader import CustomDataSet  # noqa: E402  (the benchmark project's own files)
from models import Discriminator, Generator  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=2560, help="synthetic data points (train + val)")
    parser.add_argument("--val-ratio", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--widths", default="64,128,256", help="the discriminator's widths (the generator mirrors them)"
    )
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/handwritten_gan"))
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
    return batch["image"].to(device, non_blocking=True), batch["noise"].to(device, non_blocking=True)


@torch.no_grad()
def validate(netG: Generator, netD: Discriminator, loader: DataLoader, device: torch.device) -> list[float]:
    """Mean errD and errG over the validation set."""
    netG.eval()
    netD.eval()
    sums, count = torch.zeros(2, dtype=torch.float64, device=device), 0
    for batch in loader:
        real, noise = batch_to(batch, device)
        real_score, fake_score = netD.score(real), netD.score(netG(noise)["fake"])
        errD = F.binary_cross_entropy(real_score, torch.ones_like(real_score)) + F.binary_cross_entropy(
            fake_score, torch.zeros_like(fake_score)
        )
        errG = F.binary_cross_entropy(fake_score, torch.ones_like(fake_score))
        sums += torch.stack([errD, errG]).double() * len(real)
        count += len(real)
    return (sums / count).tolist()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_loader, val_loader = loaders(args, device)
    widths = [int(w) for w in args.widths.split(",")]
    netG, netD = Generator(widths).to(device), Discriminator(widths).to(device)
    criterion = torch.nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    args.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(args.out))
    step = 0
    for epoch in range(1, args.epochs + 1):
        netG.train()
        netD.train()
        epoch_sums = torch.zeros(2, dtype=torch.float64, device=device)  # errD and errG, sample-weighted
        window, count, window_count = epoch_sums.clone(), 0, 0
        for batch in train_loader:
            real, noise = batch_to(batch, device)
            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z))), as dcgan/main.py
            netD.zero_grad()
            label = torch.full((len(real),), 1.0, device=device)
            errD_real = criterion(netD.score(real), label)
            errD_real.backward()
            fake = netG(noise)["fake"]
            label.fill_(0.0)
            errD_fake = criterion(netD.score(fake.detach()), label)
            errD_fake.backward()
            errD = errD_real + errD_fake
            optimizerD.step()
            # (2) Update G: maximize log(D(G(z))), through the updated D
            netG.zero_grad()
            label.fill_(1.0)
            errG = criterion(netD.score(fake), label)
            errG.backward()
            optimizerG.step()
            step += 1
            values = torch.stack([errD.detach(), errG.detach()]).double() * len(real)
            epoch_sums += values
            window += values
            count, window_count = count + len(real), window_count + len(real)
            if step % args.log_every == 0:  # the only host reads inside an epoch
                d, g = (window / window_count).tolist()
                writer.add_scalar("train_step/D", d, step)
                writer.add_scalar("train_step/G", g, step)
                writer.add_scalar("train_step/lr/Generator", optimizerG.param_groups[0]["lr"], step)
                writer.add_scalar("train_step/lr/Discriminator", optimizerD.param_groups[0]["lr"], step)
                window, window_count = torch.zeros_like(window), 0
        train_d, train_g = (epoch_sums / count).tolist()
        val_d, val_g = validate(netG, netD, val_loader, device)
        for name, value in (("train/D", train_d), ("train/G", train_g), ("val/D", val_d), ("val/G", val_g)):
            writer.add_scalar(name, value, step)
        writer.flush()
        torch.save(
            {
                "epoch": epoch,
                "step": step,
                "generator": netG.state_dict(),
                "discriminator": netD.state_dict(),
                "optimizerG": optimizerG.state_dict(),
                "optimizerD": optimizerD.state_dict(),
            },
            args.out / f"checkpoint_{epoch:06d}.pt",
        )
        print(
            f"epoch {epoch}/{args.epochs}  train: D {train_d:.4g}  G {train_g:.4g}  "
            f"| val: D {val_d:.4g}  G {val_g:.4g}",
            flush=True,
        )
    writer.close()
    print(f"Final val: D {val_d:.4g}  G {val_g:.4g}")


if __name__ == "__main__":
    main()
