"""Runs that cannot silently go wrong: signals, kill -9, non-finite steps, code in run folders,
concurrent resumes, resume overrides. Each interrupted run is compared with an uninterrupted one."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HANG_GUARD_S, copy_project, run_cli, run_dirs, run_dirs_in, signalling_config, write_config

from dlscaffold.cli import main
from dlscaffold.records.rundir import read_metrics

# Appended to the toy project's models.py: a slow frozen model holding a large buffer, so that a run
# spends real time in steps and in checkpoint writes (the moments signals and kills should hit).
SLOW_MODELS = '''
import time as _time

import torch as _torch


class Ballast(nn.Module):
    def __init__(self, size: int = 4_000_000, delay: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(_torch.zeros(size))
        self.delay = delay

    def forward(self, features):
        _time.sleep(self.delay)
        return {"features": features}


class Exploder(nn.Module):
    """A classifier head whose outputs turn NaN from a given global step on."""

    def __init__(self, enc_dim: int, nan_from_step: int):
        super().__init__()
        self.head = nn.Linear(enc_dim, 3)
        self.nan_from_step = nan_from_step

    def forward(self, encoding, step):
        logits = self.head(encoding)
        return {"class_logits": logits * _torch.where(step >= self.nan_from_step, float("nan"), 1.0)}


_toy_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_toy_models(), "Ballast": Ballast, "Exploder": Exploder}
'''

SLOW_FLOW = {
    "Ballast": {"train": 0, "init_args": {}, "inputs": {"features": "dataset"}},
    "Encoder": {"train": 1, "init_args": {"in_dim": 8, "enc_dim": 4}, "inputs": {"features": "Ballast"}},
    "Classifier": {
        "train": 1,
        "init_args": {"enc_dim": 4},
        "inputs": {"encoding": "Encoder"},
        "losses": {
            "MultinomialNLL": {"logging_name": "ce", "inputs": {"class_logits": "Classifier", "class_idx": "dataset"}}
        },
        "evals": {
            "MultinomialAccuracy": {
                "logging_name": "acc",
                "inputs": {"class_logits": "Classifier", "class_idx": "dataset"},
            }
        },
    },
}
EPOCHS = 5


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> Path:
    """The toy project with the slow models, and a config using them."""
    project = copy_project("toyproject", tmp_path_factory.mktemp("slow") / "toy")
    with open(project / "models.py", "a") as fh:
        fh.write(SLOW_MODELS)
    write_config(
        project,
        "config.yml",
        info_flow=SLOW_FLOW,
        training_params__max_training_epochs=EPOCHS,
        dataloading_params__batch_size=16,
        training_params__log_every=3,
    )
    return project


@pytest.fixture(scope="module")
def reference(slow: Path, tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("reference")
    assert main(["train", str(slow / "config.yml"), f"logging_params.logging_dir={logs}"]) == 0
    (run,) = run_dirs_in(logs)
    return run


def start_training(slow: Path, logs: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dlscaffold", "train", *args, "--project", str(slow)],
        cwd=slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def wait_for_start(process: subprocess.Popen) -> None:
    """Block until the run printed its folder (its first line): it is past set-up and has saved epoch 0."""
    line = process.stdout.readline()
    assert line.startswith("Logging and Model Saving Directory"), (line, process.stderr.read())


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        m: torch.load(run / "checkpoints" / f"{m}_{EPOCHS:06d}.pt", weights_only=True)
        for m in ("Encoder", "Classifier")
    }


def assert_same_run(run: Path, reference: Path) -> None:
    assert read_metrics(run) == [{**row} for row in read_metrics(reference)]
    for name, state in final_weights(reference).items():
        for key, tensor in state.items():
            assert torch.equal(final_weights(run)[name][key], tensor), (name, key)


def all_tensors(value: object) -> list[torch.Tensor]:
    """Every tensor in a checkpoint's nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [t for item in items for t in all_tensors(item)]


def every_checkpoint_loads(run: Path) -> None:
    for path in (run / "checkpoints").glob("*.pt"):
        torch.load(path, weights_only=True)


def resume_to_the_end(run: Path, slow: Path) -> None:
    result = run_cli("train", "--resume", str(run), "--project", str(slow), cwd=slow)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("case", range(5))
def test_a_signal_at_a_random_moment_then_resume_equals_an_uninterrupted_run(slow, reference, tmp_path, case) -> None:
    signum = signal.SIGTERM if case % 2 == 0 else signal.SIGINT
    logs = tmp_path / "logs"
    process = start_training(slow, logs, str(slow / "config.yml"), f"logging_params.logging_dir={logs}")
    wait_for_start(process)
    time.sleep(random.Random(case).uniform(0.0, 1.5))
    process.send_signal(signum)
    out, err = process.communicate(timeout=HANG_GUARD_S)
    (run,) = run_dirs_in(logs)
    if process.returncode == 0:  # it had finished before the signal came
        assert_same_run(run, reference)
        return
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), err
    assert f"dlscaffold train --resume {run}" in out and "Traceback" not in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not list(run.rglob("*.tmp"))
    every_checkpoint_loads(run)
    resume_to_the_end(run, slow)
    assert_same_run(run, reference)


@pytest.mark.parametrize("case", range(5))
def test_kill_9_at_a_random_moment_then_resume_reaches_the_same_weights(slow, reference, tmp_path, case) -> None:
    logs = tmp_path / "logs"
    process = start_training(slow, logs, str(slow / "config.yml"), f"logging_params.logging_dir={logs}")
    wait_for_start(process)
    if case > 0:  # case 0: killed at once, inside epoch 1
        time.sleep(random.Random(100 + case).uniform(0.0, 1.5))
    process.kill()
    process.communicate(timeout=HANG_GUARD_S)
    (run,) = run_dirs_in(logs)
    every_checkpoint_loads(run)  # whatever the moment, every file under a final name is whole
    resume_to_the_end(run, slow)
    for name, state in final_weights(reference).items():
        for key, tensor in state.items():
            assert torch.equal(final_weights(run)[name][key], tensor), (name, key)
    assert read_metrics(run) == read_metrics(reference)


def test_two_resumes_of_one_run_at_once_one_proceeds(slow, reference, tmp_path) -> None:
    logs = tmp_path / "logs"
    assert (
        main(
            [
                "train",
                str(slow / "config.yml"),
                f"logging_params.logging_dir={logs}",
                "training_params.max_training_epochs=2",
                "--project",
                str(slow),
            ]
        )
        == 0
    )
    (run,) = run_dirs_in(logs)
    # the first run ended at epoch 2; both resumes continue it to EPOCHS
    args = ["--resume", str(run), f"training_params.max_training_epochs={EPOCHS}"]
    first, second = (start_training(slow, logs, *args) for _ in range(2))
    results = [(p.wait(timeout=HANG_GUARD_S), p.stdout.read(), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    (refusal,) = [err for code, _, err in results if code != 0]
    (line,) = [line for line in refusal.splitlines() if line.startswith("error: ")]
    assert "in use by process" in line and "Traceback" not in refusal
    assert_same_run(run, reference)


def test_a_nan_at_step_k_stops_the_run_and_keeps_every_saved_tensor_finite(slow, tmp_path) -> None:
    exploder = {
        "train": 1,
        "init_args": {"enc_dim": 4, "nan_from_step": 13},
        "inputs": {"encoding": "Encoder", "step": "trainer"},  # the global step, from the trainer
        "losses": {
            "MultinomialNLL": {"logging_name": "ce", "inputs": {"class_logits": "Exploder", "class_idx": "dataset"}}
        },
    }
    flow = {"Ballast": SLOW_FLOW["Ballast"], "Encoder": SLOW_FLOW["Encoder"], "Exploder": exploder}
    config = write_config(slow, "nan.yml", info_flow=flow, logging_params__logging_dir=str(tmp_path / "logs"))
    result = run_cli("train", str(config), cwd=slow)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "epoch 2, step 13:" in line and "info_flow.Exploder.losses.MultinomialNLL" in line
    assert "not finite" in line
    (run,) = run_dirs_in(tmp_path / "logs")
    assert (run / "nonfinite_batch.pt").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    for path in (run / "checkpoints").glob("*.pt"):
        tensors = all_tensors(torch.load(path, weights_only=True))
        assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()), path
    for line in (run / "metrics.jsonl").read_text().splitlines():  # strict JSON: no bare NaN
        json.loads(line, parse_constant=lambda name: pytest.fail(f"metrics.jsonl holds {name}"))

    result = run_cli("train", str(config), "training_params.on_nonfinite=skip", cwd=slow)
    assert result.returncode == 0, result.stderr
    skipping = [r for r in run_dirs_in(tmp_path / "logs") if r != run][0]
    rows = [r for r in read_metrics(skipping) if r["split"] == "train"]
    steps_per_epoch = rows[0]["step"]
    assert sum(r["skipped_nonfinite_steps"] for r in rows) == EPOCHS * steps_per_epoch - 13


def test_code_in_a_run_folder_never_runs(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    (run,) = run_dirs(toy)
    marker = toy / "marker"
    for name in ("models.py", "dataloader.py", "training_utils.py"):
        (run / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    info = json.loads((run / "run.json").read_text())
    for recorded in (".", str(run), info["project_dir"]):
        (run / "run.json").write_text(json.dumps({**info, "project_dir": recorded}))
        for args in (["evaluate", str(run)], ["train", "--resume", str(run)]):
            result = run_cli(*args, cwd=run)
            assert not marker.exists(), (recorded, args)
            if recorded == info["project_dir"]:  # the real project: it works, and says whose code it imports
                assert result.returncode == 0, result.stderr
                assert f"the code of the project in {toy}" in result.stdout
            else:
                assert result.returncode == 2 and "pass the project folder with --project" in result.stderr


def test_resume_with_overrides_changes_only_the_future(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=2", cwd=toy).returncode == 0
    (run,) = run_dirs(toy)
    result = run_cli("train", "--resume", str(run), "training_params.seed=5", cwd=toy)
    assert result.returncode == 2 and "training_params.seed cannot change on --resume" in result.stderr
    result = run_cli(
        "train", "--resume", str(run), "training_params.lrn_rate=0.5", "training_params.max_training_epochs=3", cwd=toy
    )
    assert result.returncode == 0, result.stderr
    state = torch.load(run / "checkpoints" / "trainer_000003.pt", weights_only=True)
    assert all(g["lr"] == 0.5 for o in state["optimizers"].values() for g in o["param_groups"])
    assert "lrn_rate: 0.5" in (run / "config.yml").read_text()
    assert [r["lr/Encoder"] for r in read_metrics(run) if r["split"] == "train"] == [0.01, 0.01, 0.5]


def test_corrupt_checkpoints_and_splits_are_one_line(toy: Path) -> None:
    assert run_cli("train", "config.yml", "training_params.max_training_epochs=1", cwd=toy).returncode == 0
    (run,) = run_dirs(toy)
    (run / "checkpoints" / "Encoder_000001.pt").write_bytes(b"")
    result = run_cli("evaluate", str(run), cwd=toy)
    assert result.returncode == 2 and "Encoder_000001.pt: not a readable checkpoint" in result.stderr
    split = json.loads((run / "idx_dict.json").read_text())
    for bad in (
        {**split, "val": split["train"][:3]},
        {**split, "train": [-1, *split["train"]]},
        {**split, "train": split["train"] + split["train"][:1]},
    ):
        (run / "idx_dict.json").write_text(json.dumps(bad))
        result = run_cli("evaluate", str(run), "--epoch", "0", cwd=toy)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_error_during_training_names_the_index(toy: Path, workers: int) -> None:
    with open(toy / "dataloader.py", "a") as fh:
        fh.write("""

_get = CustomDataSet.__getitem__


def _failing(self, index):
    if index == 7:
        raise KeyError("label")
    return _get(self, index)


CustomDataSet.__getitem__ = _failing
""")
    result = run_cli("train", "config.yml", f"dataloading_params.num_workers={workers}", cwd=toy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "CustomDataSet[7] failed: KeyError: 'label'" in line and "epoch 1, step" in line, line
    (run,) = run_dirs(toy)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("at", [1, 5, 11, 12])  # early, mid-epoch, the epoch's last step, the next's first
def test_a_signal_at_an_epoch_boundary_resumes_exactly(toy: Path, tmp_path: Path, at: int, monkeypatch) -> None:
    config = signalling_config(toy, at)  # 180 points: 12 steps an epoch
    straight = ["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]
    monkeypatch.setenv("RESUMED", "1")
    assert main(straight) == 0
    monkeypatch.delenv("RESUMED")
    # in the project's folder: the resume imports the project the run recorded, its code checked
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'stopped'}"]) == 143
    (run,) = run_dirs_in(toy / "stopped")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", "--resume", str(run)]) == 0
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert read_metrics(run) == read_metrics(reference)
    for name in ("Encoder", "Classifier", "Decoder"):
        a = torch.load(run / "checkpoints" / f"{name}_000003.pt", weights_only=True)
        b = torch.load(reference / "checkpoints" / f"{name}_000003.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_cannot_change_the_length_of_a_onecycle_run(toy: Path, capsys) -> None:
    scheduler = {"name": "OneCycleLR", "interval": "step", "kwargs": {"max_lr": 0.05}}  # total steps: fixed at start
    config = write_config(
        toy, "onecycle.yml", training_params__lr_scheduler=scheduler, training_params__max_training_epochs=1
    )
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    (run,) = run_dirs(toy)
    before = {name: (run / name).read_text() for name in ("run.json", "metrics.jsonl", "config.yml")}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "training_params.max_training_epochs=2"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert "OneCycleLR's length is fixed" in line and "start a new run" in line, line
    assert {name: (run / name).read_text() for name in before} == before  # refused before anything ran


FAILING_LATER = '''

class FailsFrom(nn.Module):
    """Passes its input through; fails from global step ``at`` on."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def forward(self, features, step):
        if int(step) >= self.at:
            raise RuntimeError("broke in the continuation")
        return {"features": features}


_models_before = get_ref_model_dict


def get_ref_model_dict():
    return {**_models_before(), "FailsFrom": FailsFrom}
'''


def test_a_completed_run_stays_completed_when_its_continuation_fails(toy: Path, capsys) -> None:
    with open(toy / "models.py", "a") as fh:
        fh.write(FAILING_LATER)
    flow = yaml.safe_load((toy / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "FailsFrom"}
    flow = {
        "FailsFrom": {"train": 0, "init_args": {"at": 7}, "inputs": {"features": "dataset", "step": "trainer"}},
        **flow,
    }
    config = write_config(toy, "later.yml", info_flow=flow, training_params__max_training_epochs=1)  # 6 steps an epoch
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    (run,) = run_dirs(toy)
    assert json.loads((run / "run.json").read_text())["completed_epoch"] == 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "training_params.max_training_epochs=3"]) == 2  # fails at step 7
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert "epoch 2, step 7: " in line and "RuntimeError: broke in the continuation" in line, line
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["error"], info["completed_epoch"]) == ("completed", None, 1)
    assert info["continuation"]["status"] == "failed" and info["continuation"]["error"] in line


BEST_BY_FIRST_LOSS = (
    "best epoch: by val/Classifier/ce (the first loss); set training_params.monitor: total to use the weighted sum"
)


def test_with_several_losses_and_no_monitor_the_start_lines_say_which_value_picks_the_best_epoch(
    toy: Path, capsys
) -> None:
    from dlscaffold.config import load_config
    from dlscaffold.run.summary import best_epoch_line

    config = write_config(toy, "best.yml", training_params__max_training_epochs=1)  # two losses, no monitor
    assert main(["train", str(config), f"logging_params.logging_dir={toy / 'runs'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    first_epoch = next(i for i, line in enumerate(out) if line.startswith("epoch 1/"))
    assert out.count(BEST_BY_FIRST_LOSS) == 1 and out.index(BEST_BY_FIRST_LOSS) < first_epoch, out
    (run,) = run_dirs(toy)
    assert json.loads((run / "run.json").read_text())["best"]["metric"] == "Classifier/ce"  # what the line said
    untrained_first = best_epoch_line(load_config(config, ["info_flow.Classifier.train=0"]))
    assert untrained_first == (
        "best epoch: by val/Decoder/reconstruction (the first loss of the first trained model); "
        "set training_params.monitor: total to use the weighted sum"
    )
    for chosen in ("total", "Decoder/reconstruction", "Classifier/accuracy"):  # a monitor set: nothing to say
        assert best_epoch_line(load_config(config, [f"training_params.monitor={chosen}"])) is None
    one_loss = yaml.safe_load(config.read_text())
    del one_loss["info_flow"]["Decoder"]["losses"]
    one_loss["info_flow"]["Decoder"]["train"] = 0
    assert best_epoch_line(load_config(write_config(toy, "one.yml", info_flow=one_loss["info_flow"]))) is None
