"""examples/cifar10: both data layouts, a dev epoch through the CLI, the seed config, the baseline.

Tiny CIFAR-10 look-alikes are generated in both layouts; the real images are used only by the
baseline test, which unpacks ``shared/data/cifar10-jpg.tar.gz`` when it can find it and skips
otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD_S
from PIL import Image
from test_seed_config import SEED_CONFIG

from dlscaffold.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def example_module(name: str):
    spec = importlib.util.spec_from_file_location(f"cifar10_example_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)  # class-major, as ImageFolder reads them
    return rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8), labels


def write_python_batches(folder: Path, train, test) -> Path:
    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(train[1])), 5)
    for i, part in enumerate(parts, start=1):
        entry = {b"data": train[0][part].reshape(len(part), -1), b"labels": train[1][part].tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
    test_batch = {b"data": test[0].reshape(len(test[1]), -1), b"labels": test[1].tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test_batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return folder


def write_image_folder(root: Path, train, test) -> Path:
    for split, (images, labels) in (("train", train), ("test", test)):
        for i, (image, label) in enumerate(zip(images, labels, strict=False)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")  # PNG: lossless
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cifar")
    train, test = tiny_images(3, seed=0), tiny_images(2, seed=1)
    return {
        "batches": write_python_batches(root / "official" / "cifar-10-batches-py", train, test).parent,
        "folder": write_image_folder(root / "imagefolder", train, test),
    }


def dataset(path: Path):
    cfg = {"dataloading_params": {"dataset_path": str(path), "dataset_args": {}}}
    return example_module("dataloader").CustomDataSet(cfg)


def test_both_layouts_give_the_same_tensors(tiny: dict[str, Path]) -> None:
    official, folder = dataset(tiny["batches"]), dataset(tiny["folder"])
    assert len(official) == len(folder) == 50
    assert official.images.dtype == torch.uint8 and official.images.shape == (50, 3, 32, 32)
    assert torch.equal(official.images, folder.images)
    assert np.array_equal(official.labels, folder.labels)
    assert list(official.test_indices()) == list(range(30, 50))
    for i in (0, 29, 49):
        a, b = official[i], folder[i]
        assert torch.equal(a["image"], b["image"]) and a["class_idx"] == b["class_idx"]


def test_no_cifar_found_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="official python batches .* or an ImageFolder tree"):
        dataset(tmp_path)


def test_augmentation_crops_and_flips_each_image() -> None:
    crop_flip = example_module("dataloader").random_crop_flip
    images = torch.rand(64, 3, 32, 32)
    out = crop_flip(images, padding=0)  # no padding: each image is itself or its mirror image
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, images, strict=False)]
    assert all(m or torch.equal(o, i) for m, o, i in zip(mirrored, out, images, strict=False))
    assert 10 < sum(mirrored) < 54
    shifted = crop_flip(images, padding=4)
    assert shifted.shape == images.shape and not torch.equal(shifted, images)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S
    )


def test_one_dev_epoch_through_the_cli_then_evaluate_the_test_split(tiny: dict[str, Path], tmp_path: Path) -> None:
    result = run(
        str(EXAMPLE / "train.py"),
        "--dev",
        f"dataloading_params.dataset_path={tiny['folder']}",
        f"logging_params.logging_dir={tmp_path}",
        "training_params.max_training_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "idx_dict.json").read_text())["test"] == list(range(30, 50))
    result = run(str(EXAMPLE / "evaluate.py"), str(run_dir), "--split", "test", "--json", "out.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "out.json").read_text())
    assert evaluation["num_samples"] == 20 and 0.0 <= evaluation["metrics"]["Cifar10ResNet/Accuracy"] <= 1.0


def test_seed_config_trains_one_dev_epoch_against_the_example(tiny: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "example_learning_config.yml"
    text = SEED_CONFIG.replace("DATASET_PATH", str(tiny["batches"]))
    config.write_text(text.replace("LOGGING_DIR", str(tmp_path / "logs")))
    result = run(
        "-m",
        "dlscaffold",
        "train",
        str(config),
        "--project",
        str(EXAMPLE),
        "--dev",
        "training_params.max_training_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = list((tmp_path / "logs").iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train", "val"] and "Cifar10Classifier/Cifar-10 Accuracy" in rows[1]


def cifar10_images(tmp_path_factory) -> Path | None:
    """The real images: unpacked in the example, or unpacked here from shared/data."""
    unpacked = EXAMPLE / "data" / "cifar10-jpg"
    if (unpacked / "test").is_dir():
        return unpacked
    for parent in Path(__file__).resolve().parents:
        archive = parent / "shared" / "data" / "cifar10-jpg.tar.gz"
        if archive.is_file():
            dest = tmp_path_factory.mktemp("cifar10-jpg")
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
            return dest
    return None


@pytest.mark.parametrize(
    ("baseline", "claim", "metric", "project"),
    [  # baseline/ predates recorded code hashes: it is evaluated with --project
        (
            "baseline",
            r"baseline test accuracy: \*\*([\d.]+)%\*\*",
            "Cifar10ResNet/Accuracy",
            ["--project", str(EXAMPLE)],
        ),
        (
            "baseline_fast",
            r"`baseline_fast/` test accuracy, with TTA: \*\*([\d.]+)%\*\*",
            "Cifar10Airbench/Accuracy",
            [],
        ),
    ],
)
def test_shipped_baseline_reproduces_the_readme_test_accuracy(
    tmp_path_factory, tmp_path: Path, baseline: str, claim: str, metric: str, project: list[str]
) -> None:
    images = cifar10_images(tmp_path_factory)
    if images is None:
        pytest.skip("the CIFAR-10 images are not here (see examples/cifar10/README.md)")
    claimed = float(re.search(claim, (EXAMPLE / "README.md").read_text()).group(1))
    out = tmp_path / "baseline.json"
    result = run(  # baseline_fast: no --project, the shipped run names its project relative to itself
        "-m",
        "dlscaffold",
        "evaluate",
        str(EXAMPLE / baseline),
        f"dataloading_params.dataset_path={images}",
        "--split",
        "test",
        "--json",
        str(out),
        *project,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    accuracy = json.loads(out.read_text())["metrics"][metric] * 100
    assert abs(accuracy - claimed) <= 0.1


def test_official_layout_with_fewer_training_batches(tmp_path: Path) -> None:
    train, test = tiny_images(1, seed=2), tiny_images(1, seed=3)
    folder = write_python_batches(tmp_path / "cifar", train, test)
    for i in (2, 3, 4, 5):  # keep only data_batch_1 (a subset, as some mirrors ship)
        (folder / f"data_batch_{i}").unlink()
    data = dataset(folder)
    assert len(data) == len(np.array_split(np.arange(10), 5)[0]) + 10


@pytest.mark.parametrize("setting", ["training_params.compile=true", "training_params.channels_last=true"])
def test_compile_and_channels_last_train_the_example_model(tiny: dict[str, Path], tmp_path: Path, setting: str) -> None:
    result = run(
        str(EXAMPLE / "train.py"),
        "--dev",
        setting,
        f"dataloading_params.dataset_path={tiny['folder']}",
        f"logging_params.logging_dir={tmp_path}",
        "training_params.max_training_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train", "val"]
    # the weights are the plain model's: a run without compile / channels_last evaluates them
    result = run(
        "-m",
        "dlscaffold",
        "evaluate",
        str(run_dir),
        "training_params.compile=false",
        "training_params.channels_last=false",
        "--project",
        str(EXAMPLE),
        "--split",
        "dev",
        "--json",
        "out.json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out.json").read_text())["metrics"]["Cifar10ResNet/Accuracy"] == pytest.approx(
        rows[1]["Cifar10ResNet/Accuracy"], abs=1e-6
    )


# ----------------------------------------------------------------------------- the fast recipe


def fast_dataset(path: Path, **args):
    cfg = {"dataloading_params": {"dataset_path": str(path), "dataset_args": args}, "training_params": {"seed": 3}}
    return example_module("dataloader").CustomDataSet(cfg)


def test_the_alternating_flip_mirrors_each_image_in_every_other_epoch(tiny: dict[str, Path]) -> None:
    data = fast_dataset(tiny["folder"], flip="alternating", translate=0)
    batch = {"image": data.images[:30].clone(), "index": torch.arange(30)}
    seen = []
    for epoch in (1, 2, 3):
        data.set_epoch(epoch)
        out = data.transform_batch(dict(batch), train=True)["image"]
        plain = data.transform_batch(dict(batch), train=False)["image"]
        mirrored = [torch.allclose(o, p.flip(2)) for o, p in zip(out, plain, strict=True)]
        assert all(m or torch.allclose(o, p) for m, o, p in zip(mirrored, out, plain, strict=True))
        seen.append(mirrored)
    assert seen[0] == seen[2] and all(a != b for a, b in zip(seen[0], seen[1], strict=True))
    assert 5 < sum(seen[0]) < 25  # a random half, fixed by the seed
    assert seen[0] == [bool(m) for m in fast_dataset(tiny["folder"], flip="alternating").mirrored[:30]]


def test_reflect_translation_shifts_by_at_most_its_pixels() -> None:
    translate = example_module("dataloader").random_translate
    images = torch.rand(64, 3, 32, 32)
    out = translate(images, 2, "reflect")
    assert out.shape == images.shape and not torch.equal(out, images)
    for o, i in zip(out[:8], images, strict=False):  # each is a shifted copy of its image
        padded = torch.nn.functional.pad(i[None], (2, 2, 2, 2), mode="reflect")[0]
        windows = [padded[:, y : y + 32, x : x + 32] for y in range(5) for x in range(5)]
        assert any(torch.equal(o, w) for w in windows)


def test_tta_views_are_the_image_its_mirror_and_one_pixel_shifts(tiny: dict[str, Path]) -> None:
    data = fast_dataset(tiny["folder"])
    batch = data.transform_batch({"image": data.images[:4].clone(), "class_idx": torch.zeros(4)}, train=False)
    views = data.tta_views(batch)
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    assert torch.equal(views[0][1]["image"], batch["image"])
    assert torch.equal(views[1][1]["image"], batch["image"].flip(3))
    assert torch.equal(views[2][1]["image"][:, :, 1:, 1:], batch["image"][:, :, :-1, :-1])  # moved down-right
    assert all(v["class_idx"] is batch["class_idx"] for _, v in views)


def test_the_whitening_layer_whitens_the_patches_it_saw() -> None:
    model = example_module("models").Cifar10Airbench(widths=(8, 16, 16))
    images = torch.randn(200, 3, 32, 32) @ torch.randn(32, 32) * 0.3 + 0.5  # correlated pixels
    model.init_from_data(image=images)
    out = torch.nn.functional.conv2d(images, model.whiten.weight[:12])  # (N, 12, 31, 31), no bias
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    eps = model.whiten_eps
    assert torch.allclose(covariance, torch.eye(12), atol=0.05 + eps * 100)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


def test_the_fast_config_trains_one_short_epoch_and_evaluates_with_tta(tiny: dict[str, Path], tmp_path: Path) -> None:
    result = run(
        str(EXAMPLE / "train.py"),
        str(EXAMPLE / "config_fast.yml"),
        f"dataloading_params.dataset_path={tiny['folder']}",
        f"logging_params.logging_dir={tmp_path}",
        "dataloading_params.batch_size=8",
        "dataloading_params.init_samples=16",
        "info_flow.Cifar10Airbench.init_args.widths=[8,16,16]",
        "training_params.max_training_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Initialised Cifar10Airbench from 16 training points" in result.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train", "val"] and "Cifar10Airbench/Accuracy" in rows[1]
    for tta, views in (("--no-tta", None), (None, 6)):
        out = tmp_path / f"test_{views}.json"
        args = [str(run_dir), "--split", "test", "--json", str(out), *([tta] if tta else [])]
        result = run(str(EXAMPLE / "evaluate.py"), *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        evaluation = json.loads(out.read_text())
        assert evaluation["num_samples"] == 20
        assert (evaluation["tta"] or {}).get("views") == views


@pytest.mark.parametrize("run", ["baseline", "baseline_fast"])
def test_the_shipped_runs_record_the_example_code_as_it_is(run: str) -> None:
    """A shipped run evaluates with this folder's code while the files it recorded are unchanged
    (byte for byte: a reformatted models.py would make `evaluate baseline_fast` ask for --project)."""
    import hashlib

    recorded = json.loads((EXAMPLE / run / "run.json").read_text()).get("project_files") or {}
    for name, digest in recorded.items():
        assert hashlib.sha256((EXAMPLE / name).read_bytes()).hexdigest() == digest, f"{run} recorded another {name}"
