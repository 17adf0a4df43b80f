"""The small-model benchmark's baseline: hand-written PyTorch loops doing the work of the dlscaffold runs
of ``benchmarks/small.py``.

``--recipe digits``: the template's project (``template/config.yml``, ``models.py``, ``dataloader.py``,
``training_utils.py``, read from ``--project``): its ``DigitClassifier`` on scikit-learn's 8x8 digits,
the template's label-smoothed cross entropy and accuracy every step, Adam with the config's rate,
betas and weight decay, TensorBoard every ``log_every`` steps, validation every epoch, a checkpoint
every ``save_every`` epochs and after the last.

``--recipe mean_teacher``: ``benchmarks/project_mean_teacher`` (a 26K-parameter MLP ``Student`` on the
same digits, Adam): per step the Student's forward, the Teacher's (its exponential moving average)
without gradients, cross entropy plus the mean squared error between the two models' logits,
backward, the optimizer step, the Teacher's update (``torch._foreach_lerp_``), both accuracies;
TensorBoard every ``log_every`` steps, validation of both models every epoch, a checkpoint after the
last epoch.

Both keep the epoch's sums (of every loss and accuracy, sample-weighted) on the device and read them
back at log points and epoch ends only. ``--device-data``: every split's tensors are stacked on the
device once, each batch an index selection in a fresh random order each epoch (what ``device_data:
true`` does); otherwise a ``DataLoader(shuffle=True)`` over the project's dataset (batched through
the dataset's ``__getitems__`` when it has one, as torch's DataLoader does).

Sizes and settings come from the recipe's config.yml, so both arms read the same numbers.

``python benchmarks/handwritten_small.py --recipe mean_teacher --epochs 10 [--device-data] --out DIR``

Plain PyTorch: nothing of the dlscaffold runtime runs here (the template's ``models.py`` imports
``dlscaffold.modules`` for its layers, and that is all).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Subset, default_collate
from torch.utils.tensorboard import SummaryWriter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from example_code import load  # noqa: E402  (benchmarks/example_code.py)

PROJECTS = {"digits": HERE.parent / "template", "mean_teacher": HERE / "project_mean_teacher"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=tuple(PROJECTS), default="mean_teacher")
    parser.add_argument("--project", type=Path, help="the recipe's project folder (default: its own)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-data", action="store_true", help="stack the splits on the device once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/handwritten_small"))
    args = parser.parse_args(argv)
    args.project = args.project or PROJECTS[args.recipe]
    return args


class Recipe:
    """A recipe's models, the values each step computes, and their names."""

    def __init__(self, args: argparse.Namespace, config: dict, device: torch.device):
        flow, key = config["info_flow"], args.recipe
        self.mean_teacher = key == "mean_teacher"
        models = load(args.project / "models.py", f"dlscaffold_benchmark_small_{key}_models")
        name = "Student" if self.mean_teacher else "DigitClassifier"
        self.model = models.get_ref_model_dict()[name](**flow[name]["init_args"]).to(device)
        if self.mean_teacher:
            self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval()
            self.decay = float(flow["Teacher"]["decay"])
            self.pairs = (list(self.teacher.parameters()), list(self.model.parameters()))
            self.names = ["Student/CE", "Student/consistency", "Student/Accuracy", "Teacher/Accuracy"]
        else:
            utils = load(args.project / "training_utils.py", f"dlscaffold_benchmark_small_{key}_utils")
            self.loss_fn = utils.get_project_loss_and_eval_dict()[0]["LabelSmoothingNLL"]
            self.names = ["DigitClassifier/Cross_Entropy_loss", "DigitClassifier/Accuracy"]

    def values(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective, and the per-sample values' sums over the batch ``(len(names),)``."""
        logits = self.model(images)["class_logits"]
        if not self.mean_teacher:
            losses = self.loss_fn(logits, labels)
            with torch.no_grad():
                sums = torch.stack([losses.detach().sum(), (logits.argmax(-1) == labels).float().sum()])
            return losses.mean(), sums
        with torch.no_grad():
            teacher = self.teacher(images)["class_logits"]
        ce = F.cross_entropy(logits, labels, reduction="none")
        consistency = F.mse_loss(logits, teacher, reduction="none").mean(1)
        with torch.no_grad():
            right = [(x.argmax(-1) == labels).float().sum() for x in (logits, teacher)]
            sums = torch.stack([ce.detach().sum(), consistency.detach().sum(), *right])
        return ce.mean() + consistency.mean(), sums

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mean_teacher:  # the Teacher: decay * average + (1 - decay) * weights
            torch._foreach_lerp_(self.pairs[0], self.pairs[1], 1.0 - self.decay)

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            **({"teacher": self.teacher.state_dict()} if self.mean_teacher else {}),
        }


def batch_collate(batch: dict) -> dict[str, torch.Tensor]:
    """A batch the dataset's ``__getitems__`` returned whole: its arrays as tensors."""
    return {k: torch.as_tensor(v) for k, v in batch.items()}


def data(args: argparse.Namespace, config: dict, device: torch.device):
    """``(train batches, val batches)``: callables giving each epoch's ``(images, labels)`` batches."""
    dataset = load(args.project / "dataloader.py", f"dlscaffold_benchmark_small_{args.recipe}_data").CustomDataSet(
        config
    )
    dl = config["dataloading_params"]
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed)).tolist()
    num_val = round(dl["val_ratio"] * len(dataset))
    splits, size = {"train": order[num_val:], "val": order[:num_val]}, dl["batch_size"]
    if args.device_data:
        stacked = {}
        for name, indices in splits.items():
            index = torch.tensor(indices)
            stacked[name] = [torch.as_tensor(dataset.images)[index].to(device), torch.as_tensor(dataset.labels)[index]]
            stacked[name][1] = stacked[name][1].to(device)

        def on_device(name: str, shuffle: bool):
            images, labels = stacked[name]
            rows = torch.randperm(len(labels), device=device) if shuffle else torch.arange(len(labels), device=device)
            for start in range(0, len(labels), size):
                chosen = rows[start : start + size]
                yield images.index_select(0, chosen), labels.index_select(0, chosen)

        return (lambda: on_device("train", True)), (lambda: on_device("val", False))
    collate = batch_collate if callable(getattr(dataset, "__getitems__", None)) else default_collate
    loaders = {
        name: DataLoader(Subset(dataset, indices), size, shuffle=name == "train", collate_fn=collate)
        for name, indices in splits.items()
    }

    def loaded(name: str):
        for batch in loaders[name]:
            yield batch["image"].to(device, non_blocking=True), batch["class_idx"].to(device, non_blocking=True)

    return (lambda: loaded("train")), (lambda: loaded("val"))


@torch.no_grad()
def validate(recipe: Recipe, batches) -> list[float]:
    """The sample means of every value over the validation split."""
    recipe.model.eval()
    sums, count = None, 0
    for images, labels in batches():
        values = recipe.values(images, labels)[1].double()
        sums, count = values if sums is None else sums + values, count + len(labels)
    recipe.model.train()
    return (sums / count).tolist()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = yaml.safe_load((args.project / "config.yml").read_text())
    tp = config["training_params"]
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    recipe = Recipe(args, config, device)
    train_batches, val_batches = data(args, config, device)
    optimizer = torch.optim.Adam(
        recipe.model.parameters(),
        lr=tp["lrn_rate"],
        betas=(tp["beta1"], tp["beta2"]),
        weight_decay=tp["regularization_weight"],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(args.out))
    step, loop_seconds, log_every, width = 0, 0.0, tp["log_every"], len(recipe.names)
    for epoch in range(1, args.epochs + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        recipe.model.train()
        epoch_sums = torch.zeros(width, dtype=torch.float64, device=device)
        window, count, window_count = epoch_sums.clone(), 0, 0
        for images, labels in train_batches():
            objective, sums = recipe.values(images, labels)
            objective.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            recipe.after_step()
            epoch_sums += sums
            window += sums
            count, window_count, step = count + len(labels), window_count + len(labels), step + 1
            if step % log_every == 0:  # the only host reads inside an epoch
                for name, value in zip(recipe.names, (window / window_count).tolist(), strict=True):
                    writer.add_scalar(f"train_step/{name}", value, step)
                writer.add_scalar("train_step/lr", optimizer.param_groups[0]["lr"], step)
                window, window_count = torch.zeros_like(window), 0
        seconds, cpu = time.perf_counter() - started, time.process_time() - started_cpu
        loop_seconds += seconds
        train_values = (epoch_sums / count).tolist()
        val_values = validate(recipe, val_batches)
        for split, values in (("train", train_values), ("val", val_values)):
            for name, value in zip(recipe.names, values, strict=True):
                writer.add_scalar(f"{split}/{name}", value, step)
        writer.flush()
        if epoch % tp["save_every"] == 0 or epoch == args.epochs:
            torch.save(
                {"epoch": epoch, "step": step, **recipe.state(), "optimizer": optimizer.state_dict()},
                args.out / f"checkpoint_{epoch:06d}.pt",
            )
        shown = "  ".join(f"{n} {v:.4g}" for n, v in zip(recipe.names, val_values, strict=True))
        print(f"epoch {epoch}/{args.epochs}  training pass {seconds:.4f} s (CPU {cpu:.4f} s)  val: {shown}", flush=True)
    writer.close()
    print("Final val: " + "  ".join(f"{n} {v:.4g}" for n, v in zip(recipe.names, val_values, strict=True)))
    print(f"steps: {step}  training passes: {loop_seconds:.3f} s ({1000 * loop_seconds / max(step, 1):.3f} ms a step)")


if __name__ == "__main__":
    main()
