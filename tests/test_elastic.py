"""Elastic data-parallel resume with ``dataloading_params.global_batch_size``: a run stopped mid-epoch
on 2 processes resumes on 1 (and the other way round), trains every point of the epoch exactly once
across the stop and ends with an uninterrupted run's weights; validation on 2 processes counts each
of its points once; what cannot work is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD_S, SIGNALLING_MODELS, only_run, threads_left_at_exit

from dlscaffold.cli import main
from dlscaffold.data import EpochSampler
from dlscaffold.records.rundir import read_metrics

TRAIN, VAL = list(range(193)), list(range(193, 1194))  # 6 global batches of 32 and 1 of 1 point; 1,001 val points
GLOBAL_BATCH, SEED, AT = 32, 1234, 9  # SIGTERM during global step 9: the 3rd of epoch 2's 7 steps
STEPS = -(-len(TRAIN) // GLOBAL_BATCH)

DATALOADER = """
import numpy as np
import torch


class CustomDataSet(torch.utils.data.Dataset):
    def __init__(self, cfg):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(1194, 4))
        self.y = self.x @ np.array([1.0, -2.0, 0.5, 1.5]) + 0.1 * rng.normal(size=1194)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i : i + 1], "index": i}
"""

# A linear model that appends each training batch's dataset indices, after the step, to a file per
# process in $RECORD; then conftest's SignalAt (SIGTERM to its own process during step AT).
MODELS = """
import os
from pathlib import Path

from torch import nn


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def forward(self, x, index, step):
        folder = os.environ.get("RECORD")
        if self.training and folder:
            name = f"rank{os.environ.get('RANK', '0')}_of{os.environ.get('WORLD_SIZE', '1')}.txt"
            with open(Path(folder) / name, "a") as fh:
                fh.write(" ".join(map(str, [int(step), *index.tolist()])) + "\\n")
        return {"y_hat": self.net(x)}


def get_ref_model_dict():
    return {"Regressor": Regressor}
"""

CONFIG = {
    "dataloading_params": {"idx_dict_path": "split.json", "num_workers": 0, "global_batch_size": GLOBAL_BATCH},
    "training_params": {"seed": SEED, "lrn_rate": 0.01, "max_training_epochs": 2, "use_GPU": False, "log_every": 1},
    "logging_params": {"logging_dir": "runs", "trackers": []},
    "info_flow": {
        "SignalAt": {"train": 0, "init_args": {"at": AT}, "inputs": {"features": "dataset.x", "step": "trainer"}},
        "Regressor": {
            "train": 1,
            "inputs": {"x": "SignalAt.features", "index": "dataset", "step": "trainer"},
            "losses": {"MSE": {"inputs": {"y_hat": "Regressor", "y": "dataset"}}},
            "evals": {
                "torchmetrics.MeanAbsoluteError": {
                    "logging_name": "mae",
                    "inputs": {"preds": "Regressor.y_hat", "target": "dataset.y"},
                }
            },
        },
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elastic") / "project"
    folder.mkdir()
    (folder / "dataloader.py").write_text(DATALOADER)
    (folder / "models.py").write_text(MODELS + SIGNALLING_MODELS)
    (folder / "training_utils.py").write_text("def get_project_loss_and_eval_dict():\n    return {}, {}\n")
    (folder / "split.json").write_text(json.dumps({"train": TRAIN, "val": VAL, "dev": TRAIN[:16]}))
    (folder / "config.yml").write_text(json.dumps(CONFIG))  # YAML reads JSON
    per_process = {**CONFIG, "dataloading_params": {"idx_dict_path": "split.json", "batch_size": 32}}
    per_process["training_params"] = {**CONFIG["training_params"], "max_training_epochs": 1}
    (folder / "per_process.yml").write_text(json.dumps(per_process))
    return folder


def train(project: Path, logs: Path, record: Path | None, *args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    """``dlscaffold train ARGS`` in a subprocess, its runs in ``logs`` (``--nproc`` above 1: through
    torchrun); with ``record``, the training batches' indices are recorded there."""
    if record is not None:
        record.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RECORD", "RESUMED")}
    env.update({"RECORD": str(record)} if record is not None else {})
    resuming = "--resume" in args
    env.update({"RESUMED": "1"} if resuming else {})
    where = ["--project", str(project)] if resuming else [f"logging_params.logging_dir={logs}"]
    command = [sys.executable, "-m", "dlscaffold", "train", *args, *where]
    command += ["--nproc", str(nproc)] if nproc > 1 else []
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S
    )


def trained(record: Path, steps: range) -> list[int]:
    """The dataset indices the recorded training batches of ``steps`` held, every process's, padding
    batches (weight 0) left out."""
    found = []
    for file in record.glob("rank*_of*.txt"):
        rank, world = (int(part) for part in file.stem.removeprefix("rank").split("_of"))
        sampler = EpochSampler(TRAIN, True, SEED, rank, world, GLOBAL_BATCH // world)
        for line in file.read_text().splitlines():
            step, *indices = map(int, line.split())
            if step in steps and sampler.share(step % STEPS)[0] > 0:
                found += indices
    return found


def weights(run: Path, epoch: int = 2) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / f"Regressor_{epoch:06d}.pt", weights_only=True)


@pytest.fixture(scope="module")
def straight(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run on one process (the signal model does nothing with RESUMED set)."""
    logs = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESUMED", "1")
        mp.delenv("RECORD", raising=False)
        assert main(["train", str(project / "config.yml"), f"logging_params.logging_dir={logs}"]) == 0
    return only_run(logs)


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_run_stopped_mid_epoch_resumes_on_another_number_of_processes_training_each_point_once(
    project: Path, straight: Path, tmp_path: Path, before: int, after: int
) -> None:
    logs = tmp_path / "logs"
    stopped = train(project, logs, tmp_path / "before", "config.yml", nproc=before)
    assert stopped.returncode == 143, stopped.stderr
    assert f"{before} process(es) x batch {GLOBAL_BATCH // before} = global batch {GLOBAL_BATCH}" in stopped.stdout
    run = only_run(logs)
    assert [p.name for p in (run / "checkpoints").glob("trainer_*.pt")] == ["trainer_000001_000003.pt"]
    if before == 2:
        validation_counts_each_point_once(run, project, tmp_path / "eval.json")

    resumed = train(project, logs, tmp_path / "after", "--resume", str(run), nproc=after)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{after} process(es) x batch {GLOBAL_BATCH // after} = global batch {GLOBAL_BATCH}" in resumed.stdout
    assert json.loads((run / "run.json").read_text())["sessions"][-1]["world_size"] == after

    first, second = trained(tmp_path / "before", range(STEPS, AT + 1)), trained(tmp_path / "after", range(AT + 1, 99))
    assert len(first) == 3 * GLOBAL_BATCH and not set(first) & set(second)  # epoch 2: disjoint across the stop
    assert sorted(first + second) == TRAIN  # and every point once
    assert sorted(trained(tmp_path / "before", range(STEPS))) == TRAIN  # epoch 1 too
    for key, tensor in weights(straight).items():
        torch.testing.assert_close(weights(run)[key], tensor, rtol=0, atol=1e-5)
    # The epochs' values, from sums (and torchmetrics states) combined across the stop. A training
    # pass whose last step ran on 2 processes also counts rank 1's padding point in torchmetrics' state.
    padded = {(1, "train"), (2, "train")} if after == 2 else {(1, "train")}
    for row, ref in zip(read_metrics(run), read_metrics(straight), strict=True):
        at = (row["epoch"], row["split"])
        assert at == (ref["epoch"], ref["split"])
        for key in ("Regressor/MSE", *(() if at in padded else ("Regressor/mae",))):
            assert row[key] == pytest.approx(ref[key], rel=1e-5), (*at, key)


def validation_counts_each_point_once(run: Path, project: Path, out: Path) -> None:
    """A 2-process run's epoch-1 validation of 1,001 points equals one process's evaluation of the
    same weights: no point left out or counted twice, in the sums or in torchmetrics' state."""
    assert main(["evaluate", str(run), "--epoch", "1", "--json", str(out), "--project", str(project)]) == 0
    evaluated = json.loads(out.read_text())
    assert evaluated["num_samples"] == len(VAL)
    (val,) = [row for row in read_metrics(run) if row["split"] == "val" and row["epoch"] == 1]
    for key in ("Regressor/MSE", "Regressor/mae"):
        assert val[key] == pytest.approx(evaluated["metrics"][key], rel=1e-6), key


def test_a_global_batch_the_processes_cannot_share_is_one_line(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = train(project, tmp_path / "logs", None, "config.yml", "dataloading_params.global_batch_size=33", nproc=2)
    assert result.returncode == 2, result.stderr
    errors = result.stderr.strip().splitlines()  # said before torchrun starts: no line of its own
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert "global_batch_size: 33 does not divide among 2 processes" in errors[0]
    assert "(1, 3, 11, 33)" in errors[0]

    capsys.readouterr()
    assert main(["train", str(project / "config.yml"), "dataloading_params.batch_size=16"]) == 2
    both = capsys.readouterr().err.strip().splitlines()
    assert len(both) == 1 and "batch_size: 16 (per process) and global_batch_size: 32" in both[0], both


def test_a_per_process_batch_resumed_on_another_number_of_processes_is_one_line(project: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESUMED", "1")
        assert main(["train", str(project / "per_process.yml"), f"logging_params.logging_dir={logs}"]) == 0
    run = only_run(logs)
    threads = tmp_path / "threads"
    threads.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THREADS_AT_EXIT", str(threads))
        result = train(project, logs, None, "--resume", str(run), "training_params.max_training_epochs=2", nproc=2)
    assert result.returncode == 2, result.stderr
    if sys.platform.startswith("linux"):  # a run that fails to start leaves the process group too
        left = threads_left_at_exit(threads)
        assert list(left) == ["rank0", "rank1"] and not any("gloo" in n for names in left.values() for n in names)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # torchrun's lines aside
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0] == (
        "error: --resume: the run trained on 1 process with a per-process batch_size; resuming on 2 would change "
        "the global batch; set dataloading_params.global_batch_size in a new run to resume on any number of processes"
    )


def test_the_ranks_running_states_combine_as_an_uninterrupted_epochs() -> None:
    """A mid-epoch position saved by 2 processes, resumed on 1 or 3: rank 0 takes every saved rank's
    sums and torchmetrics states (summed, concatenated, maximum), the others start empty."""
    import torchmetrics

    from dlscaffold.parts.flow import Flow, MetricTerm
    from dlscaffold.run.epoch import Sums, rank_position

    def flow_updated_with(*seen: torch.Tensor) -> Flow:
        metrics = {"mae": torchmetrics.MeanAbsoluteError(), "cat": torchmetrics.CatMetric()}
        metrics["max"] = torchmetrics.MaxMetric()
        for x in seen:
            metrics["mae"].update(x, torch.zeros_like(x))
            metrics["cat"].update(x)
            metrics["max"].update(x)
        return Flow({}, {}, [], [], [], metrics=[MetricTerm(n, n, m, []) for n, m in metrics.items()])

    seen = [torch.tensor([3.0, -1.0, 4.0]), torch.tensor([1.0, -5.0]), torch.tensor([9.0, 2.0, -6.0, 5.0])]
    ranks = []
    for rank_seen in (seen[:2], seen[2:]):  # rank 0's two batches, rank 1's one
        sums = Sums(["v"], torch.device("cpu"))
        for x in rank_seen:
            sums.add({"v": x}, len(x))
        state = sums.state_dict()
        ranks.append({"sums": state, "window": state, "metrics": flow_updated_with(*rank_seen).metrics_state_dict()})

    assert rank_position(ranks, 1, 2, flow_updated_with()) is ranks[1]  # the same processes: each its own
    assert rank_position(ranks, 2, 3, flow_updated_with()) == {"sums": None, "window": None, "metrics": None}
    resumed = flow_updated_with()
    mine = rank_position(ranks, 0, 1, resumed)
    resumed.load_metrics_state_dict(mine["metrics"])
    assert resumed.compute_metrics() == pytest.approx(flow_updated_with(*seen).compute_metrics())
    sums = Sums(["v"], torch.device("cpu"))
    sums.load_state_dict(mine["sums"])
    assert sums.count == 9 and sums.means()["v"] == pytest.approx(float(torch.cat(seen).mean()))
