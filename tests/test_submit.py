"""Cluster jobs: ``dlscaffold submit`` through submitit (``--cluster local`` runs the jobs here), the
stop signals a scheduler sends, ``SLURM_JOB_END_TIME``, requeues that resume exactly, arrays for
seed groups and sweep workers, and the batch script written for SLURM."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, signalling_config, write_config
from test_sweep import SLOW_MODEL
from test_trustworthy import run_dirs_in

from dlscaffold.cli import main
from dlscaffold.experiments.engine import TrainTask
from dlscaffold.experiments.sweep import SweepWorkerTask
from dlscaffold.records.rundir import read_metrics

MODELS = ("Encoder", "Classifier", "Decoder")


def slow_config(project: Path, name: str = "slow.yml", delay: float = 0.05, **changes: object) -> Path:
    """The toy project's config with a ``Slow`` model (``delay`` seconds a step) feeding the Encoder."""
    with open(project / "models.py", "a") as fh:
        fh.write(SLOW_MODEL)
    flow = yaml.safe_load((project / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "Slow"}
    flow = {"Slow": {"train": 0, "init_args": {"delay": delay}, "inputs": {"features": "dataset"}}, **flow}
    return write_config(project, name, info_flow=flow, **changes)


def last_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    epochs = max(int(p.stem.rpartition("_")[2]) for p in (run / "checkpoints").glob("Encoder_0*.pt"))
    return {m: torch.load(run / "checkpoints" / f"{m}_{epochs:06d}.pt", weights_only=True) for m in MODELS}


def assert_same_run(run: Path, reference: Path) -> None:
    """The same metrics.jsonl values and bitwise the same final weights."""
    assert read_metrics(run) == read_metrics(reference)
    ours, theirs = last_weights(run), last_weights(reference)
    for name, state in theirs.items():
        assert all(torch.equal(ours[name][key], tensor) for key, tensor in state.items()), name


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


# ------------------------------------------------------------------------------ stops in a plain train


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGHUP, signal.SIGUSR1])
def test_a_schedulers_signal_saves_the_exact_position_and_resume_continues_bitwise(
    toy: Path, tmp_path: Path, signum: int, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    config = signalling_config(toy, 5, signum)  # 12 steps an epoch: mid-epoch 1
    if signal.getsignal(signum) == signal.SIG_IGN:  # the suite runs under nohup: a run leaves an ignored SIGHUP be
        previous = signal.signal(signum, signal.SIG_DFL)
        request.addfinalizer(lambda: signal.signal(signum, previous))
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.delenv("RESUMED")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 128 + signum
    (run,) = run_dirs_in(tmp_path / "stopped")
    assert run_json(run)["status"] == "interrupted"
    state = torch.load(next((run / "checkpoints").glob("trainer_*.pt")), weights_only=True)
    assert state["position"]["batches"] == 6  # steps 0..5: the one the signal came in was finished, then saved
    monkeypatch.setenv("RESUMED", "1")
    assert main(["train", "--resume", str(run), "--project", str(toy)]) == 0
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert_same_run(run, reference)


def test_a_schedulers_own_signal_names_the_reason_whichever_came_first() -> None:
    from dlscaffold.run.stops import StopFlag

    with StopFlag() as flag:  # a preemption: SIGTERM, then the job's own signal
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.01)  # the handlers have run
    assert flag.signum == signal.SIGUSR2
    with StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    assert flag.signum == signal.SIGUSR1


def test_slurm_job_end_time_stops_a_plain_train_by_itself_with_its_position_saved(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = slow_config(toy, training_params__stop_before_end=0, training_params__max_training_epochs=3)  # 36 steps
    monkeypatch.setenv("SLOW_S", "0")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.setenv("SLOW_S", "0.1")  # about 4 s of steps; the job ends 2 s from now
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 2))
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'stopped'}"]) == 124
    (run,) = run_dirs_in(tmp_path / "stopped")
    assert run_json(run)["status"] == "interrupted"
    assert "SLURM_JOB_END_TIME" in capsys.readouterr().out
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    monkeypatch.setenv("SLOW_S", "0")
    assert main(["train", "--resume", str(run), "--project", str(toy)]) == 0
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert_same_run(run, reference)


# ------------------------------------------------------------------------------ local jobs


def test_a_local_job_requeued_at_its_time_limit_ends_as_an_uninterrupted_train(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20 epochs of 8 steps (6 train, 2 val) at 0.1 s: about 16 s of steps; each 12 s job trains for
    # about 5 of them after starting, then is signalled 2 s before its limit: at least three jobs.
    config = slow_config(toy, delay=0.1, training_params__max_training_epochs=20, logging_params__trackers=[])
    monkeypatch.setenv("SLOW_S", "0")
    assert main(["train", str(config), f"logging_params.logging_dir={tmp_path / 'straight'}"]) == 0
    monkeypatch.delenv("SLOW_S")
    args = ("submit", str(config), "--cluster", "local", "--time", "0.2", "--max-requeues", "5", "--wait")
    result = run_cli(*args, cwd=toy)
    assert result.returncode == 0, (result.stdout, result.stderr)
    (run,) = [p for p in (toy / "runs").iterdir() if (p / "run.json").is_file()]
    info = run_json(run)
    assert info["status"] == "completed" and info["job"]["requeues"] >= 2, info["job"]
    assert f"after {info['job']['requeues']} requeue(s): {run}" in result.stdout
    (job,) = (toy / "runs" / "jobs").iterdir()  # its logs: <logging_dir>/jobs/<job_id>/
    assert info["job"]["id"] == job.name and (job / f"{job.name}_0_log.out").is_file()
    (reference,) = run_dirs_in(tmp_path / "straight")
    assert_same_run(run, reference)


def runs_by_seed(folder: Path) -> list[Path]:
    """The run folders in `folder`, ordered by their `_seedN` suffix rather than by the run counter."""
    return sorted((p for p in folder.iterdir() if (p / "run.json").is_file()), key=lambda p: p.name.rpartition("_")[2])


def test_seeds_make_one_local_job_each_a_seed_group_with_one_split_as_train_seeds_makes_it(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["submit", str(toy / "config.yml"), "training_params.max_training_epochs=1", "--seeds", "1,2"]
    assert main([*args, "--cluster", "local", "--time", "2", "--wait"]) == 0
    runs = runs_by_seed(toy / "runs")  # the two jobs may take the run counter in either order
    assert len(runs) == 2 and len(list((toy / "runs" / "jobs").glob("[0-9]*"))) == 2, runs
    groups = [run_json(run)["group"] for run in runs]
    assert len({g["id"] for g in groups}) == 1 and sorted(g["seed"] for g in groups) == [1, 2]
    assert {g["size"] for g in groups} == {2} and sorted(run.name.rpartition("_")[2] for run in runs) == [
        "seed1",
        "seed2",
    ]
    split = toy / "runs" / "groups" / groups[0]["id"] / "idx_dict.json"  # made once, when submitting
    for run in runs:  # every run reads it, the first seed's included
        config = yaml.safe_load((run / "config.yml").read_text())
        assert config["dataloading_params"]["idx_dict_path"] == str(split)
        assert (run / "idx_dict.json").read_text() == split.read_text()
    assert {run_json(run)["status"] for run in runs} == {"completed"}
    capsys.readouterr()
    assert main(["runs", str(toy / "runs"), "--group", "--format", "json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)
    assert group["n"] == 2 and sorted(group["seeds"]) == [1, 2]
    # the same group trained in this process: the same split, the same runs, bitwise
    here = tmp_path / "here"
    assert main(["train", *args[1:3], f"logging_params.logging_dir={here}", "--seeds", "1,2"]) == 0
    for run, other in zip(runs, runs_by_seed(here), strict=True):
        assert run.name.rpartition("_")[2] == other.name.rpartition("_")[2]
        assert (run / "idx_dict.json").read_text() == (other / "idx_dict.json").read_text()
        assert_same_run(run, other)


def test_sweep_workers_are_jobs_on_one_sweep_folder(toy: Path, capsys: pytest.CaptureFixture) -> None:
    spec = {
        "config": "config.yml",
        "name": "lr",
        "sampler": "random",
        "trials": 3,
        "overrides": ["training_params.max_training_epochs=1"],
        "params": {"training_params.lrn_rate": {"float": [1.0e-3, 1.0e-1], "log": True}},
    }
    (toy / "sweep.yml").write_text(yaml.safe_dump(spec))
    args = ["--sweep", str(toy / "sweep.yml"), "--workers", "2", "--cluster", "local", "--time", "2", "--wait"]
    assert main(["submit", *args]) == 0
    (folder,) = (toy / "runs" / "sweeps").iterdir()
    state = json.loads((folder / "sweep.json").read_text())
    assert state["status"] == "completed" and [t["state"] for t in state["trials"]] == ["COMPLETE"] * 3
    jobs = {job.name for job in (toy / "runs" / "jobs").iterdir()}
    assert len(jobs) == 2 and "Sweep completed: 3 trials" in capsys.readouterr().out
    for trial in state["trials"]:  # each trial's run records the worker job that trained it
        (run,) = trial["runs"]
        assert run_json(folder / run)["job"]["id"] in jobs


def test_a_job_with_two_processes_trains_one_run_data_parallel(toy: Path, capsys: pytest.CaptureFixture) -> None:
    # --gpus-per-node 2: two processes (here on the CPU, through gloo), their process group from the job
    args = [str(toy / "config.yml"), "training_params.max_training_epochs=1", "--gpus-per-node", "2"]
    assert main(["submit", *args, "--cluster", "local", "--time", "2", "--wait"]) == 0
    (run,) = [p for p in (toy / "runs").iterdir() if (p / "run.json").is_file()]
    assert run_json(run)["status"] == "completed"
    (job,) = (toy / "runs" / "jobs").iterdir()
    log = (job / f"{job.name}_0_log.out").read_text()
    assert "2 process(es) x batch 32 = global batch 64" in log
    assert (job / f"{job.name}_1_log.out").read_text().count("Logging and Model Saving Directory") == 0  # rank 1


def test_a_job_the_scheduler_restarted_itself_finds_its_run_by_the_job_id(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlscaffold.experiments.jobs import TrainJob

    logs = tmp_path / "runs"
    for name, job_id in (("20260101_1_toy", "77_0"), ("20260101_2_toy", "77_1"), ("20260101_3_toy", "78")):
        (logs / name).mkdir(parents=True)
        (logs / name / "run.json").write_text(json.dumps({"job": {"id": job_id, "requeues": 0}}))
    job = TrainJob(TrainTask(config=toy / "config.yml"), logs)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert job.earlier_run("77_1") is None  # a first start never looks: it makes a new run
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert job.earlier_run("77_1") == logs / "20260101_2_toy" and job.earlier_run("79") is None


def test_jobs_pickled_by_the_earlier_version_still_load_as_tasks(tmp_path: Path) -> None:
    """A job still queued across an upgrade: pickled with its run's fields as its own attributes."""
    from dlscaffold.experiments.jobs import SweepWorkerJob, TrainJob

    earlier = {
        "config": tmp_path / "config.yml",
        "overrides": ["training_params.seed=3"],
        "logging_dir": tmp_path / "runs",
        "project_dir": tmp_path,
        "run_info": {"group": {"id": "g", "seed": 3, "size": 2}},
        "run_notes_suffix": "seed3",
        "run_dir": tmp_path / "runs" / "20260101_1_toy_seed3",
        "requeues": 2,
        "outcome": None,
    }
    job = TrainJob.__new__(TrainJob)
    job.__setstate__(dict(earlier))  # what unpickling does
    job = pickle.loads(pickle.dumps(job))
    assert job.task == TrainTask(
        config=earlier["config"],
        overrides=earlier["overrides"],
        project=tmp_path,
        run_info=earlier["run_info"],
        run_notes_suffix="seed3",
    )
    assert (job.logging_dir, job.run_dir, job.requeues) == (earlier["logging_dir"], earlier["run_dir"], 2)
    worker = SweepWorkerJob.__new__(SweepWorkerJob)
    worker.__setstate__({"folder": tmp_path / "sweep", "requeues": 0, "outcome": None})
    assert pickle.loads(pickle.dumps(worker)).task == SweepWorkerTask(folder=tmp_path / "sweep")


# ------------------------------------------------------------------------------ bad input


def one_error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--cluster", "slurn"], "--cluster: unknown cluster 'slurn'; did you mean 'slurm'?"),
        (
            ["--cluster", "local", "--signal", "KILL"],
            "--signal: unknown signal 'KILL'; expected one of USR2, USR1, HUP",
        ),
        (["--cluster", "local", "--time", "0"], "--time: found 0; expected a number of minutes > 0"),
        (["--cluster", "local", "--time", "-1.5"], "--time: found -1.5; expected a number of minutes > 0"),
        (["--cluster", "slurm"], "--cluster slurm: sbatch and srun not found on PATH (no SLURM here); --cluster local"),
        (["--cluster", "local", "training_params.lrn_rat=1"], "training_params.lrn_rat: unknown key"),
        (["--cluster", "local", "--seeds", "1,x"], "--seeds '1,x': expected distinct whole numbers"),
        (["--cluster", "local", "--nodes", "2"], "--nodes: --cluster local runs on this one machine"),
        (["--cluster", "local", "training_params.stop_before_end=-5"], "training_params.stop_before_end: found -5"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_submitted(
    toy: Path, tmp_path: Path, flags: list[str], expected: str, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    config = str(toy / "config.yml")
    args = [config, *flags] if "=" not in flags[-1] else [config, flags[-1], *flags[:-1]]
    code = main(["submit", *args])
    assert expected in one_error_line(code, capsys.readouterr().err)
    assert not (toy / "runs").exists()  # nothing submitted, no folder made


def test_without_submitit_submit_names_the_extra_to_install(toy: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    code = main(["submit", str(toy / "config.yml"), "--cluster", "local"])
    assert "pip install 'dlscaffold[cluster]'" in one_error_line(code, capsys.readouterr().err)


# ------------------------------------------------------------------------------ SLURM's batch script

FAKE_SBATCH = """#!/bin/sh
cp "$1" "{copy}"
echo "Submitted batch job 4242"
"""
REFUSING_SBATCH = """#!/bin/sh
echo "sbatch: error: invalid partition specified: nope" >&2
exit 1
"""


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sbatch: str) -> None:
    """``sbatch`` and ``srun`` on PATH: this ``sbatch`` script, an ``srun`` that does nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(sbatch)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for command in bin_dir.iterdir():
        command.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_slurm_gets_a_batch_script_with_the_signal_time_array_and_resources(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    script = tmp_path / "submitted.sh"
    fake_slurm(tmp_path, monkeypatch, FAKE_SBATCH.format(copy=script))
    flags = ["--seeds", "1,2", "--signal", "USR1", "--time", "30", "--partition", "gpu", "--nodes", "2"]
    flags += ["--gpus-per-node", "4", "--mem-gb", "64", "--max-requeues", "5", "--slurm", "qos=high"]
    flags += ["--slurm", "mail-type=END"]
    assert main(["submit", str(toy / "config.yml"), *flags]) == 0
    out, text = capsys.readouterr().out, script.read_text()
    assert "job 4242_0 (seed 1)" in out and "job 4242_1 (seed 2)" in out
    for line in (
        "#SBATCH --signal=USR1@90",
        "#SBATCH --time=30",
        "#SBATCH --array=0-1%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --mem=64GB",
        "#SBATCH --qos=high",
        "#SBATCH --mail-type=END",
        "export SUBMITIT_PREEMPT_SIGNAL=USR1",
        f"#SBATCH --output={toy / 'runs' / 'jobs'}/%A_%a/%A_%a_0_log.out",
    ):
        assert line in text.splitlines(), (line, text)
    for index in (0, 1):  # each array task's job, ready for the scheduler to start
        assert (toy / "runs" / "jobs" / f"4242_{index}" / f"4242_{index}_submitted.pkl").is_file()


def test_a_job_the_scheduler_refuses_is_one_line(toy: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    fake_slurm(tmp_path, monkeypatch, REFUSING_SBATCH)
    code = main(["submit", str(toy / "config.yml"), "--partition", "nope"])
    line = one_error_line(code, capsys.readouterr().err)
    assert line == "error: the scheduler refused the job(s): sbatch: error: invalid partition specified: nope"
