"""The datasets of docs/data.md, each read from the page as it stands: trained with two loader workers,
a run stopped by SIGTERM twice in one epoch and resumed twice ends bitwise equal to an uninterrupted
run (under the fork start method, and the memmap pattern under spawn with persistent workers too).
Also: the DataLoader options' checks, and the warning for an HDF5 file opened in ``__init__``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import HANG_GUARD_S, copy_project, only_run, run_cli, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

h5py = pytest.importorskip("h5py")

DOCS = Path(__file__).parents[1] / "docs" / "data.md"
NUM_POINTS, STEPS = 160, 16  # val_ratio 0.2: 128 training points, batch 8: 16 steps an epoch
# Global steps (from 0) during which the runs are stopped, both in epoch 2: after 6 and 13 of its
# 16 batches (37% and 81%).
STOPS = (STEPS + 5, STEPS + 12)
MODELS = ("Encoder", "Classifier", "Decoder")
WARNING = "opened in __init__"

# Appended to the toy project's models.py: a frozen pass-through model first in info_flow that sends
# its own process SIGTERM during the global step $STOP_AT (once a process: validation sees that step too).
STOP_MODELS = """

class StopAt(nn.Module):
    def forward(self, features, step):
        import os
        import signal

        at = os.environ.get("STOP_AT")
        if at is not None and int(step) == int(at) and not _STOPPED:
            _STOPPED.append(at)
            os.kill(os.getpid(), signal.SIGTERM)
        return {"features": features}


_STOPPED = []
_plain_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_plain_models(), "StopAt": StopAt}
"""

# Appended to each pattern: noise from the main process's torch RNG, so a resumed run must also
# continue that RNG's stream exactly.
NOISE = """


def _transform_batch(self, batch, train):
    if train:
        batch["features"] = batch["features"] + 0.1 * torch.randn_like(batch["features"])
    return batch


CustomDataSet.transform_batch = _transform_batch
"""

# Prepended to the project's dataloader.py: with $START_METHOD set, loader workers start that way
# (the runtime has no option for it; a project may choose it for its whole process like this).
START_METHOD = """import multiprocessing
import os

if os.environ.get("START_METHOD"):
    multiprocessing.set_start_method(os.environ["START_METHOD"], force=True)

"""


def pattern(title: str) -> str:
    """The code block of docs/data.md's section ``## title``."""
    section = DOCS.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"


def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 8 dimensions: features (N, 8) float32, labels (N,) int64."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 2.0, size=(3, 8))
    labels = rng.integers(0, 3, size=NUM_POINTS)
    return (centers[labels] + rng.normal(size=(NUM_POINTS, 8))).astype(np.float32), labels


def write_points(folder: Path) -> Path:
    """One HDF5 file per point, in two subfolders."""
    features, labels = blobs()
    for i in range(NUM_POINTS):
        path = folder / f"part{i % 2}" / f"point_{i:03d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as point:
            point["features"], point["class_idx"] = features[i], labels[i]
    return folder


def write_large(folder: Path) -> Path:
    """One HDF5 file, chunked a point at a time."""
    features, labels = blobs()
    folder.mkdir(parents=True)
    with h5py.File(folder / "data.h5", "w") as file:
        file.create_dataset("features", data=features, chunks=(1, 8))
        file["class_idx"] = labels
    return folder / "data.h5"


def write_arrays(folder: Path) -> Path:
    features, labels = blobs()
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", features)
    np.save(folder / "labels.npy", labels)
    return folder


PATTERNS = {
    "points": ("One HDF5 file per point", write_points),
    "large": ("One large HDF5 file", write_large),
    "memmap": ("A NumPy array on disk (memmap)", write_arrays),
}


def pattern_project(tmp_path: Path, name: str, epochs: int = 2, **changes: object) -> Path:
    """The toy project reading the pattern's data with two workers, StopAt first in its flow; its
    config is ``data.yml`` (``epochs`` of 16 steps)."""
    title, write = PATTERNS[name]
    project = copy_project("toyproject", tmp_path / "toy")
    data = write(tmp_path / "data")
    (project / "dataloader.py").write_text(START_METHOD + pattern(title) + NOISE)
    with open(project / "models.py", "a") as fh:
        fh.write(STOP_MODELS)
    flow = yaml.safe_load((project / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "StopAt"}
    flow = {"StopAt": {"train": 0, "inputs": {"features": "dataset", "step": "trainer"}}, **flow}
    write_config(
        project,
        "data.yml",
        info_flow=flow,
        dataloading_params__dataset_path=str(data),
        dataloading_params__num_workers=2,
        dataloading_params__batch_size=8,
        dataloading_params__val_ratio=0.2,
        training_params__max_training_epochs=epochs,
        **{f"dataloading_params__{key}": value for key, value in changes.items()},
    )
    return project


def train(project: Path, args: list[str], stop_at: int | None = None, spawn: bool = False) -> tuple[int, str]:
    """``dlscaffold train ARGS`` with $STOP_AT set to ``stop_at``: (exit code, stderr). In this process,
    its workers forked (stderr is then empty: the test reads the log records), or with ``spawn`` in a
    new process whose workers are spawned."""
    env = {k: v for k, v in os.environ.items() if k != "STOP_AT"}
    env.update({} if stop_at is None else {"STOP_AT": str(stop_at)})
    if spawn:
        result = run_cli("train", *args, cwd=project, env={**env, "START_METHOD": "spawn"})
        return result.returncode, result.stderr
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return main(["train", *args]), ""
    finally:
        os.environ.clear()
        os.environ.update(saved)


def position(run: Path) -> tuple[int, int]:
    """(epoch, batches done in it) where the run's trainer state (one, of a stop mid-epoch) stands."""
    (state,) = (run / "checkpoints").glob("trainer_*_*.pt")  # trainer_<epoch done>_<batches>.pt
    done, batches = state.stem.split("_")[1:]
    return int(done) + 1, int(batches)


def assert_same_runs(a: Path, b: Path) -> None:
    """The same metrics.jsonl rows, and bitwise the same final weights."""
    assert read_metrics(a) == read_metrics(b)
    epoch = yaml.safe_load((a / "config.yml").read_text())["training_params"]["max_training_epochs"]
    for name in MODELS:
        x = torch.load(a / "checkpoints" / f"{name}_{epoch:06d}.pt", weights_only=True)
        y = torch.load(b / "checkpoints" / f"{name}_{epoch:06d}.pt", weights_only=True)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def straight_and_stopped_twice(project: Path, tmp_path: Path, caplog, spawn: bool = False) -> None:
    """An uninterrupted run (in this process), and one stopped at both STOPS and resumed twice (in
    this process, or with ``spawn`` in new ones): the same weights and metrics, and no warning."""
    config = str(project / "data.yml")
    assert train(project, [config, f"logging_params.logging_dir={tmp_path / 'straight'}"]) == (0, "")
    code, err = train(project, [config, f"logging_params.logging_dir={tmp_path / 'stopped'}"], STOPS[0], spawn)
    run = only_run(tmp_path / "stopped")
    assert code == 143 and position(run) == (2, 6), err
    resume = ["--resume", str(run), "--project", str(project)]
    code, err = train(project, resume, STOPS[1], spawn)
    assert code == 143 and position(run) == (2, 13), err
    code, err = train(project, resume, None, spawn)
    assert code == 0, err
    assert_same_runs(run, only_run(tmp_path / "straight"))
    assert WARNING not in caplog.text + err  # the file is opened lazily: no warning


@pytest.mark.parametrize("name", list(PATTERNS))
def test_each_pattern_stopped_twice_in_an_epoch_and_resumed_equals_an_uninterrupted_run(
    name: str, tmp_path: Path, caplog
) -> None:
    changes = {"prefetch_factor": 3} if name == "large" else {}
    straight_and_stopped_twice(pattern_project(tmp_path, name, **changes), tmp_path, caplog)


def test_the_memmap_pattern_with_spawned_persistent_workers_resumes_exactly(tmp_path: Path, caplog) -> None:
    # A third epoch: the resumed process's first validation starts the validation loader's workers,
    # which the uninterrupted run started in epoch 1; the torch RNG stream must not differ after it.
    project = pattern_project(tmp_path, "memmap", epochs=3, persistent_workers=True)
    straight_and_stopped_twice(project, tmp_path, caplog, spawn=True)  # uninterrupted: forked workers


def test_the_image_folder_pattern_reads_uint8_images_and_names_points_by_path(tmp_path: Path) -> None:
    from PIL import Image

    from dlscaffold.data import collate

    root = tmp_path / "images"
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (100 * k, 50 * i, 7)).save(root / name / f"{i}.png")
    namespace: dict = {}
    exec(pattern("A folder of images"), namespace)
    dataset = namespace["CustomDataSet"]({"dataloading_params": {"dataset_path": str(root)}})
    assert len(dataset) == 4 and [dataset.point_id(i) for i in range(4)] == [
        "cat/0.png",
        "cat/1.png",
        "dog/0.png",
        "dog/1.png",
    ]
    batch = collate([dataset[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["class_idx"].tolist() == [0, 0, 1, 1] and int(batch["image"][2, 0, 0, 0]) == 100
    assert dataset.transform_batch(batch, True)["image"].dtype == torch.float32


# ------------------------------------------------------------------ the DataLoader options


def test_the_loader_options_reach_the_dataloader_pinned_only_for_a_cuda_device() -> None:
    from dlscaffold.config import DataloadingParams
    from dlscaffold.parts.device import Placement
    from dlscaffold.parts.distributed import World
    from dlscaffold.run.builder import loader_of

    options = {"num_workers": 2, "persistent_workers": True, "pin_memory": True, "prefetch_factor": 5}
    dl, data = DataloadingParams(**options), [{"x": i} for i in range(10)]
    for device, pinned in (("cuda", True), ("cpu", False)):  # a DataLoader made for CUDA needs none to exist
        loader = loader_of(dl, data, list(range(10)), True, 0, Placement(torch.device(device)), World(), "train")
        assert (loader.pin_memory, loader.persistent_workers, loader.prefetch_factor) == (pinned, True, 5)
    # Without workers (a resume may set num_workers to 0) the worker options are left out, not refused.
    loader = loader_of(
        dl.model_copy(update={"num_workers": 0}), data, [0], False, 0, Placement(torch.device("cpu")), World(), "val"
    )
    assert (loader.persistent_workers, loader.prefetch_factor, loader.num_workers) == (False, None, 0)
    assert [batch["x"].tolist() for batch in loader] == [[0]]


# ------------------------------------------------------------------ the DataLoader options' checks


def test_loader_options_without_what_they_act_on_are_one_line_each(toy: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = [f"dataloading_params.{k}" for k in ("persistent_workers=true", "prefetch_factor=4", "pin_memory=true")]
    assert main(["train", str(toy / "config.yml"), *options]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for line in (
        "dataloading_params.persistent_workers: true, but num_workers is 0",
        "dataloading_params.prefetch_factor: found 4, but num_workers is 0",
        "dataloading_params.pin_memory: true, but CUDA is not available here; pin_memory only helps copies",
    ):
        assert sum(line in row for row in err.splitlines()) == 1, err
    assert main(["train", str(toy / "config.yml"), *options, "dataloading_params.device_data=true"]) == 2
    err = capsys.readouterr().err
    for name in ("persistent_workers", "prefetch_factor", "pin_memory"):
        rows = [row for row in err.splitlines() if f"dataloading_params.{name}:" in row]
        assert len(rows) == 1 and "device_data: true" in rows[0] and "does not apply" in rows[0], err
    assert not (toy / "runs").exists()


def test_persistent_workers_are_refused_for_a_dataset_with_set_epoch(toy: Path, capsys) -> None:
    with open(toy / "dataloader.py", "a") as fh:
        fh.write("\n\nCustomDataSet.set_epoch = lambda self, epoch: None\n")
    options = ["dataloading_params.num_workers=2", "dataloading_params.persistent_workers=true"]
    assert main(["train", str(toy / "config.yml"), *options]) == 2
    err = capsys.readouterr().err
    assert "dataloading_params.persistent_workers: CustomDataSet defines set_epoch" in err and "Traceback" not in err


# --------------------------------------------------------------- an HDF5 file opened in __init__

OPEN_IN_INIT = """
import h5py
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        self.file = h5py.File(cfg["dataloading_params"]["dataset_path"], "r")  # held open: forked workers share it
        self.features, self.labels = self.file["features"][()], self.file["class_idx"][()]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"features": self.features[i], "class_idx": self.labels[i]}
"""


def test_an_hdf5_file_opened_in_init_with_workers_is_one_warning(tmp_path: Path, caplog) -> None:
    project = copy_project("toyproject", tmp_path / "toy")
    (project / "dataloader.py").write_text(START_METHOD + OPEN_IN_INIT)
    data = write_large(tmp_path / "data")
    config = write_config(project, dataloading_params__dataset_path=str(data), training_params__max_training_epochs=1)
    result = run_cli("train", str(config), "dataloading_params.num_workers=2", cwd=project)
    assert result.returncode == 0, result.stderr
    warnings = [row for row in result.stderr.splitlines() if WARNING in row]
    assert len(warnings) == 1, result.stderr
    assert (
        "CustomDataSet.file is an HDF5 file" in warnings[0]
        and "forks workers that would share its handle" in warnings[0]
    )
    assert "open the file lazily in __getitem__" in warnings[0]
    assert main(["train", str(config)]) == 0  # no workers: nothing is shared
    assert WARNING not in caplog.text
    # Spawned workers cannot receive it at all: the warning names the fix before the run fails.
    env = {**os.environ, "START_METHOD": "spawn"}
    result = run_cli("train", str(config), "dataloading_params.num_workers=2", cwd=project, env=env)
    warnings = [row for row in result.stderr.splitlines() if WARNING in row]
    assert result.returncode != 0 and len(warnings) == 1, result.stderr
    assert "starts workers by spawn, which cannot receive it (h5py objects cannot be pickled)" in warnings[0]


def test_the_check_imports_no_h5py_for_other_datasets(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from dlscaffold.config import DataloadingParams\n"
        "from dlscaffold.run.builder import warn_open_hdf5\n"
        "class Data:\n"
        "    x = 1\n"
        "warn_open_hdf5(Data(), DataloadingParams(num_workers=2))\n"
        "print('h5py' in sys.modules)\n"
    )
    script = tmp_path / "check.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.stdout.split() == ["False"], out.stderr


def test_the_default_template_needs_no_h5py() -> None:
    template = Path(__file__).parents[1] / "template"
    assert not any("h5py" in line for line in (template / "dataloader.py").read_text().splitlines() if "import" in line)
    assert "h5py" not in (template / "pyproject.toml.jinja").read_text()
