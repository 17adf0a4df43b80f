"""Data-parallel training on the CPU (torchrun, gloo), fp16 with a gradient scaler, compile and channels_last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD_S, copy_project, only_run, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")
EPOCHS = 3

# Appended to the toy project's models.py: a classifier that fails on rank 1 only, at step 3.
FAILING_ON_RANK_1 = """

class RankOneFails(Classifier):
    def forward(self, encoding, step):
        import os

        if os.environ.get("RANK") == "1" and int(step) == 3:
            raise ValueError("rank 1 cannot go on")
        return super().forward(encoding)


_toy_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_toy_models(), "RankOneFails": RankOneFails}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The toy project without dropout, so that 2 x batch B and 1 x batch 2B compute the same thing."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("ddp") / "toy")
    models = toy / "models.py"
    models.write_text(models.read_text().replace("nn.Dropout(0.1)", "nn.Identity()") + FAILING_ON_RANK_1)
    write_config(toy, "config.yml", training_params__max_training_epochs=EPOCHS)
    return toy


def torchrun(project: Path, logs: Path, *args: str, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "dlscaffold",
        "train",
        str(project / "config.yml"),
        f"logging_params.logging_dir={logs}",
        *args,
    ]
    return subprocess.run(
        command, cwd=project, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
    )


def weights(run: Path, epoch: int = EPOCHS) -> dict[str, dict[str, torch.Tensor]]:
    return {m: torch.load(run / "checkpoints" / f"{m}_{epoch:06d}.pt", weights_only=True) for m in MODELS}


@pytest.fixture(scope="module")
def runs(project: Path, tmp_path_factory) -> dict[str, Path]:
    """One process with batch 32, torchrun with 2 x 16, and --nproc 2 with 2 x 16."""
    logs = {name: tmp_path_factory.mktemp(name) for name in ("single", "torchrun", "nproc")}
    assert (
        main(
            [
                "train",
                str(project / "config.yml"),
                f"logging_params.logging_dir={logs['single']}",
                "dataloading_params.batch_size=32",
            ]
        )
        == 0
    )
    result = torchrun(project, logs["torchrun"], "dataloading_params.batch_size=16")
    assert result.returncode == 0, result.stderr
    assert "2 process(es) x batch 16 = global batch 32" in result.stdout
    assert result.stdout.count("Logging and Model Saving Directory") == 1  # other ranks print nothing
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlscaffold",
            "train",
            str(project / "config.yml"),
            "--nproc",
            "2",
            f"logging_params.logging_dir={logs['nproc']}",
            "dataloading_params.batch_size=16",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    return {name: only_run(folder) for name, folder in logs.items()}


def test_two_processes_with_batch_b_match_one_process_with_batch_2b(runs: dict[str, Path]) -> None:
    single, double = runs["single"], runs["torchrun"]
    for model, state in weights(single).items():
        for key, tensor in state.items():
            torch.testing.assert_close(weights(double)[model][key], tensor, rtol=1e-4, atol=1e-6)
    rows, reference = read_metrics(double), read_metrics(single)
    assert [(r["epoch"], r["split"]) for r in rows] == [(e, s) for e in range(1, EPOCHS + 1) for s in ("train", "val")]
    for row, ref in zip(rows, reference, strict=True):
        if row["split"] == "val":
            for key, value in ref.items():
                assert row[key] == pytest.approx(value, abs=1e-5), key


def test_nproc_is_the_same_as_calling_torchrun(runs: dict[str, Path]) -> None:
    for model, state in weights(runs["torchrun"]).items():
        for key, tensor in state.items():
            torch.testing.assert_close(weights(runs["nproc"])[model][key], tensor, rtol=1e-6, atol=1e-8)
    for row, ref in zip(read_metrics(runs["nproc"]), read_metrics(runs["torchrun"]), strict=True):
        assert row.keys() == ref.keys()
        assert all(row[k] == (pytest.approx(v) if isinstance(v, float) else v) for k, v in ref.items())


def test_the_two_process_checkpoint_evaluates_in_one_process(runs: dict[str, Path], project: Path, tmp_path) -> None:
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(runs["torchrun"]), "--json", str(out), "--project", str(project)]) == 0
    last_val = [r for r in read_metrics(runs["torchrun"]) if r["split"] == "val"][-1]
    for name, value in json.loads(out.read_text())["metrics"].items():
        assert value == pytest.approx(last_val[name], abs=1e-5), name


def test_an_error_on_rank_1_ends_both_processes_with_one_error_line(project: Path, tmp_path: Path) -> None:
    failing = {
        "train": 1,
        "init_args": {"enc_dim": 4},
        "inputs": {"encoding": "Encoder", "step": "trainer"},
        "losses": {"MultinomialNLL": {"inputs": {"class_logits": "RankOneFails", "class_idx": "dataset"}}},
    }
    encoder = {"train": 1, "init_args": {"in_dim": 8, "enc_dim": 4}, "inputs": {"features": "dataset"}}
    config = write_config(project, "failing.yml", info_flow={"Encoder": encoder, "RankOneFails": failing})
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "dlscaffold",
        "train",
        str(config),
        f"logging_params.logging_dir={tmp_path}",
        "dataloading_params.batch_size=16",
    ]
    result = subprocess.run(
        command, cwd=project, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "rank 1 cannot go on" in errors[0], result.stderr
    assert "epoch 1, step 3" in errors[0]
    assert json.loads((only_run(tmp_path) / "run.json").read_text())["status"] == "failed"


def test_fp16_resume_after_epoch_2_is_bitwise_equal_to_an_uninterrupted_run(project: Path, tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    common = [str(project / "config.yml"), "training_params.precision=fp16", "training_params.max_training_epochs=4"]
    assert main(["train", *common, f"logging_params.logging_dir={straight}"]) == 0
    assert (
        main(["train", *common, f"logging_params.logging_dir={stopped}", "training_params.max_training_epochs=2"]) == 0
    )
    run = only_run(stopped)
    state = torch.load(run / "checkpoints" / "trainer_000002.pt", weights_only=True)
    assert state["precision"]["scaler"]["scale"] > 0  # the gradient scaler's state is in the trainer checkpoint
    resume = ["train", "--resume", str(run), "--project", str(project), "training_params.max_training_epochs=4"]
    assert main(resume) == 0  # the run folder is outside the project: --project names its code
    for model, tensors in weights(only_run(straight), 4).items():
        for key, tensor in tensors.items():
            assert torch.equal(weights(run, 4)[model][key], tensor), (model, key)
    assert read_metrics(run) == read_metrics(only_run(straight))
