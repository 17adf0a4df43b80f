"""``dlscaffold sweep``: trials are run folders, pruned from their validations, resumed exactly after
a kill -9 or a signal; bad sweep files are one line each before any trial runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
import yaml
from conftest import HANG_GUARD_S, copy_project, run_cli, write_config
from test_groups import assert_bitwise_equal

from dlscaffold.cli import app, main

SLOW_MODEL = """

import os as _os
import time as _time


class Slow(nn.Module):
    '''A frozen pass-through that takes a little time per step, so that a kill lands inside a trial
    (the SLOW_S environment variable changes how long: the numbers never depend on it).'''

    def __init__(self, delay: float = 0.02):
        super().__init__()
        self.delay = delay

    def forward(self, features):
        _time.sleep(float(_os.environ.get("SLOW_S", self.delay)))
        return {"features": features}


_toy_models = get_ref_model_dict


def get_ref_model_dict():
    return {**_toy_models(), "Slow": Slow}
"""


def sweep_file(project: Path, name: str = "sweep.yml", **fields: object) -> Path:
    spec = {
        "config": "config.yml",
        "name": "lr",
        "sampler": "random",
        "trials": 3,
        "overrides": ["training_params.max_training_epochs=2"],
        "params": {"training_params.lrn_rate": {"float": [1.0e-3, 1.0e-1], "log": True}},
        **fields,
    }
    path = project / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def only_sweep(project: Path) -> Path:
    (folder,) = (project / "runs" / "sweeps").iterdir()
    return folder


def state(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def trial_runs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "run.json").is_file())


def test_a_random_sweep_with_two_workers_and_the_median_pruner(toy: Path) -> None:
    path = sweep_file(toy, trials=4, pruner="median", metric="Classifier/accuracy")
    result = run_cli("sweep", str(path), "--workers", "2", cwd=toy)
    assert result.returncode == 0, result.stderr
    folder = only_sweep(toy)
    done = state(folder)
    assert done["status"] == "completed" and done["direction"] == "maximize"
    assert done["metric"] == "Classifier/accuracy" and len(done["trials"]) == 4
    assert {t["state"] for t in done["trials"]} <= {"COMPLETE", "PRUNED"}
    complete = [t for t in done["trials"] if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert done["best"]["number"] == best["number"] and done["best"]["value"] == best["value"]
    for trial in done["trials"]:
        (run,) = trial["runs"]
        config = yaml.safe_load((folder / run / "config.yml").read_text())
        assert config["training_params"]["lrn_rate"] == trial["params"]["training_params.lrn_rate"]
        assert config["training_params"]["monitor"] == "Classifier/accuracy"
        info = json.loads((folder / run / "run.json").read_text())
        assert info["sweep"]["trial"] == trial["number"] and info["sweep"]["params"] == trial["params"]
        if trial["state"] == "COMPLETE":  # a trial's value is its run's best monitor value
            assert info["best"]["value"] == trial["value"]
        else:
            assert info["status"] == "pruned" and list((folder / run / "checkpoints").glob("*.pt"))
    # the copies: later edits to the sweep file or the base config change nothing of this sweep
    assert yaml.safe_load((folder / "sweep.yml").read_text())["config"] == "config.yml"
    assert (folder / "config.yml").is_file() and (folder / "study.journal").is_file()


def test_a_grid_sweep_with_seeds_runs_every_combination_once_per_seed_the_same_with_two_workers(toy: Path) -> None:
    path = sweep_file(
        toy,
        sampler="grid",
        trials=None,
        seeds=[1, 2],
        params={"dataloading_params.batch_size": {"choice": [16, 32]}},
        overrides=["training_params.max_training_epochs=1"],
    )
    assert run_cli("sweep", str(path), cwd=toy).returncode == 0
    folder = only_sweep(toy)
    done = state(folder)
    assert sorted(t["params"]["dataloading_params.batch_size"] for t in done["trials"]) == [16, 32]
    for trial in done["trials"]:
        infos = [json.loads((folder / run / "run.json").read_text()) for run in trial["runs"]]
        assert sorted(i["group"]["seed"] for i in infos) == [1, 2] and {i["group"]["size"] for i in infos} == {2}
        assert trial["value"] == pytest.approx(sum(i["best"]["value"] for i in infos) / 2)
        splits = [(folder / run / "idx_dict.json").read_text() for run in trial["runs"]]
        assert splits[0] == splits[1]  # the seeds of a trial share the first seed's split
    folder.rename(toy / "in_process")
    result = run_cli("sweep", str(path), "--workers", "2", cwd=toy)
    assert result.returncode == 0, result.stderr
    runs = {}
    for where in (toy / "in_process", only_sweep(toy)):  # each trial's runs: the same in both, bitwise
        for run in trial_runs(where):
            info = json.loads((run / "run.json").read_text())["sweep"]
            runs.setdefault((json.dumps(info["params"]), info["seed"]), []).append(run)
    assert len(runs) == 4 and all(len(pair) == 2 for pair in runs.values())
    for here, there in runs.values():
        assert (here / "idx_dict.json").read_text() == (there / "idx_dict.json").read_text()
        assert_bitwise_equal(here, there)


@pytest.fixture
def slow(tmp_path: Path) -> Path:
    project = copy_project("toyproject", tmp_path / "slow")
    with open(project / "models.py", "a") as fh:
        fh.write(SLOW_MODEL)
    flow = yaml.safe_load((project / "config.yml").read_text())["info_flow"]
    flow["Encoder"]["inputs"] = {"features": "Slow"}
    write_config(
        project,
        "config.yml",
        info_flow={"Slow": {"train": 0, "init_args": {}, "inputs": {"features": "dataset"}}, **flow},
        training_params__max_training_epochs=4,
    )
    return project


def wait_for(path_glob: str, folder: Path, process: subprocess.Popen) -> None:
    while not list(folder.glob(path_glob)):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: torch.load(run / "checkpoints" / f"{name}_000004.pt", weights_only=True)
        for name in ("Encoder", "Classifier", "Decoder")
    }


@pytest.mark.parametrize("how", ["kill -9", "SIGINT"])
def test_a_stopped_sweep_resumes_its_trial_exactly_and_runs_no_extra_trial(slow: Path, how: str) -> None:
    path = sweep_file(slow, trials=3, overrides=[])
    process = subprocess.Popen(
        [sys.executable, "-m", "dlscaffold", "sweep", str(path)],
        cwd=slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, killed as a whole
    )
    sweeps = slow / "runs" / "sweeps"
    while not sweeps.is_dir() or not list(sweeps.iterdir()):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    folder = only_sweep(slow)
    wait_for("*_trial1/checkpoints/trainer_000001.pt", folder, process)  # trial 1 is past its first epoch
    if how == "kill -9":
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=HANG_GUARD_S)
    else:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=HANG_GUARD_S)
        assert process.returncode == 130, err
        assert f"sweep --resume {folder}" in out and "Traceback" not in err
        assert state(folder)["status"] == "interrupted"
    (stopped,) = [p for p in trial_runs(folder) if "trial1" in p.name]
    stopped_params = json.loads((stopped / "run.json").read_text())["sweep"]["params"]

    result = run_cli("sweep", "--resume", str(folder), cwd=slow)
    assert result.returncode == 0, result.stderr
    done = state(folder)
    assert done["status"] == "completed" and len(done["trials"]) == 3
    assert [t["state"] for t in done["trials"]] == ["COMPLETE"] * 3  # the stopped attempt was resumed, not retried
    assert len(trial_runs(folder)) == 3 and done["trials"][1]["runs"] == [stopped.name]

    logs = slow / "plain"
    overrides = [f"{key}={value}" for key, value in stopped_params.items()]
    plain = run_cli("train", "config.yml", *overrides, f"logging_params.logging_dir={logs}", cwd=slow)
    assert plain.returncode == 0, plain.stderr
    (reference,) = logs.iterdir()
    for name, weights in final_weights(reference).items():
        resumed = final_weights(stopped)[name]
        assert all(torch.equal(resumed[key], tensor) for key, tensor in weights.items()), name


def bad(project: Path, **fields: object) -> subprocess.CompletedProcess:
    return run_cli("sweep", str(sweep_file(project, "bad.yml", **fields)), cwd=project)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"trails": 3}, "trails: unknown key; did you mean 'trials'?"),
        ({"params": {"training_params.lrn_rat": {"float": [0.001, 0.1]}}}, "training_params.lrn_rat: unknown key"),
        ({"params": {"training_params.lrn_rate": {"float": [0.1, 0.001]}}}, "inverted"),
        ({"params": {"training_params.lrn_rate": {"float": [0.0, 0.1], "log": True}}}, "log range needs bounds > 0"),
        ({"sampler": "grid"}, "the grid sampler needs a finite set of values"),
        ({"metric": "Classifier/acuracy"}, "Classifier/acuracy"),
        ({"params": {"training_params.lrn_rate": {"choice": []}}}, "non-empty list"),
        ({"sampler": "tpee"}, "did you mean 'tpe'?"),
    ],
)
def test_a_bad_sweep_file_is_one_line_and_runs_no_trial(toy: Path, fields: dict, expected: str) -> None:
    result = bad(toy, **fields)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert expected in errors[0] and "Traceback" not in result.stderr
    assert not (toy / "runs").exists()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"storage": "notadb://x"}, "storage: cannot open 'notadb://x'"),
        ({"storage": "sqlite:///no/such/folder/study.db"}, "/no/such/folder/study.db' (OperationalError"),
        ({"storage": "sqlite://"}, "a database in memory"),
        ({"params": {"training_params.max_training_epochs": {"int": [1, 2**70]}}}, "max_training_epochs: found"),
        ({"seeds": [1, 2**70]}, "training_params.seed: found"),
    ],
)
def test_what_would_fail_a_sweep_later_is_one_line_before_its_folder_is_made(
    toy: Path, fields: dict, expected: str
) -> None:
    """A storage that cannot be opened, a range whose far end or a seed the config refuses."""
    result = bad(toy, **fields)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert expected in errors[0] and "Traceback" not in result.stderr
    assert not (toy / "runs").exists()


FAILING = {
    "before its run": {"info_flow.Classifier.init_args.num_classes": {"choice": [0]}},  # the first-batch check
    "mid-run": {"training_params.lrn_rate": {"choice": [1.0e30]}},  # a non-finite loss at step 1
}


@pytest.mark.parametrize("when", FAILING)
def test_failing_trials_are_fail_with_their_error_lines_and_the_sweep_completes(toy: Path, when: str) -> None:
    result = run_cli("sweep", str(sweep_file(toy, trials=2, params=FAILING[when])), cwd=toy)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    done = state(only_sweep(toy))
    assert done["status"] == "completed" and [t["state"] for t in done["trials"]] == ["FAIL", "FAIL"]
    assert all(("not finite" if when == "mid-run" else "Classifier") in t["error"] for t in done["trials"])
    assert [len(t["runs"]) for t in done["trials"]] == [1 if when == "mid-run" else 0] * 2
    assert "2 failed: their error lines are in sweep.json" in result.stdout


CRASH_WHILE_TELLING_A_FAILURE = """
import os, sys
import optuna
optuna.trial.Trial.set_user_attr = lambda self, key, value: os._exit(9)  # dies as the study hears of it
from dlscaffold.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("when", FAILING)
def test_a_resume_after_a_crash_while_a_failure_was_told_finishes_the_sweep(toy: Path, when: str) -> None:
    from dlscaffold.experiments.sweep import Sweep

    path = sweep_file(toy, trials=2, params=FAILING[when])
    crash = [sys.executable, "-c", CRASH_WHILE_TELLING_A_FAILURE, "sweep", str(path)]
    crashed = subprocess.run(crash, cwd=toy, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert crashed.returncode == 9, crashed.stderr
    folder = only_sweep(toy)
    assert [t.state.name for t in Sweep.open(folder).study().get_trials()] == ["RUNNING"]  # no live lock
    runs = trial_runs(folder)
    result = run_cli("sweep", "--resume", str(folder), cwd=toy)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    done = state(folder)
    assert done["status"] == "completed" and [t["state"] for t in done["trials"]] == ["FAIL", "FAIL"]
    assert all(t["error"] for t in done["trials"])
    if when == "mid-run":  # the failed run is not trained again: its error is the trial's
        assert done["trials"][0]["runs"] == [runs[0].name] and len(trial_runs(folder)) == 2
        assert json.loads((runs[0] / "run.json").read_text())["error"] == done["trials"][0]["error"]


def test_a_sweep_in_a_sqlite_database_resumes_from_anywhere(toy: Path, tmp_path: Path) -> None:
    """A relative sqlite path is relative to the sweep file; the study is found by the name sweep.yml
    records, also in a database another sweep shares."""
    path = sweep_file(toy, trials=1, storage="sqlite:///study.db", overrides=["training_params.max_training_epochs=1"])
    first = run_cli("sweep", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (toy / "study.db").is_file() and not (tmp_path / "study.db").exists()
    folder = only_sweep(toy)
    spec = yaml.safe_load((folder / "sweep.yml").read_text())
    assert spec["storage"] == f"sqlite:///{toy / 'study.db'}" and spec["study"] == folder.name
    from dlscaffold.experiments import sweep

    other = sweep_file(
        toy, "other.yml", storage="sqlite:///study.db", overrides=[f"logging_params.logging_dir={tmp_path}"]
    )
    second = sweep.create(other, None, print)  # a folder of the same name elsewhere, a study in the same database
    assert second.folder.name == folder.name and second.spec["study"] == f"{folder.name}_2"
    moved = folder.rename(tmp_path / "moved")
    again = run_cli("sweep", "--resume", str(moved), cwd=toy)
    assert again.returncode == 0, again.stderr
    assert state(moved)["status"] == "completed" and "1 of 1 trials finished" in again.stdout


def test_every_problem_of_a_sweep_file_at_once(toy: Path) -> None:
    result = bad(toy, trails=3, sampler="grid", pruner="sometimes")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 3, result.stderr


def test_the_generated_projects_sweep_file_runs(tmp_path: Path) -> None:
    """The sweep.yml a new project ships: random, median pruner, 2 workers (shortened to 1 epoch here)."""
    project = tmp_path / "digits"
    assert run_cli("new", str(project), "--defaults", cwd=tmp_path).returncode == 0
    spec = yaml.safe_load((project / "sweep.yml").read_text())
    assert spec["sampler"] == "random" and spec["pruner"] == "median" and spec["trials"] == 6
    spec["overrides"] = ["training_params.max_training_epochs=1", "dataloading_params.val_ratio=0.5"]
    (project / "short.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_cli("sweep", "short.yml", "--workers", "2", cwd=project)
    assert result.returncode == 0, result.stderr
    done = state(only_sweep(project))
    assert done["status"] == "completed" and len(done["trials"]) == 6
    for trial in done["trials"]:
        config = yaml.safe_load((only_sweep(project) / trial["runs"][0] / "config.yml").read_text())
        assert (
            config["info_flow"]["DigitClassifier"]["init_args"]["stem_channels"]
            == trial["params"]["info_flow.DigitClassifier.init_args.stem_channels"]
        )


def test_data_parallel_trials_report_from_rank_0(toy: Path) -> None:
    path = sweep_file(toy, trials=2, pruner="median")
    result = run_cli("sweep", str(path), "--nproc", "2", cwd=toy)
    assert result.returncode == 0, result.stderr
    done = state(only_sweep(toy))
    assert done["status"] == "completed" and [t["state"] for t in done["trials"]] == ["COMPLETE"] * 2
    for trial in done["trials"]:
        (run,) = trial["runs"]
        info = json.loads((only_sweep(toy) / run / "run.json").read_text())
        assert info["sweep"]["trial"] == trial["number"] and info["best"]["value"] == trial["value"]
    assert "2 process(es)" in result.stdout and result.stdout.count("Trial 0, epoch ") == 2  # rank 0 reports once


def test_sweep_has_no_hidden_worker_option(toy: Path, capsys: pytest.CaptureFixture) -> None:
    command = typer.main.get_command(app).commands["sweep"]  # type: ignore[attr-defined]
    assert [param.name for param in command.params] == ["sweep_file", "workers", "nproc", "project", "resume"]
    assert main(["sweep", "--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  --")]
    assert listed == ["--workers", "--nproc", "--project", "--resume", "--help"]
    assert main(["sweep", "--worker", str(toy)]) == 2  # workers start through their own entry
    assert "No such option: --worker" in capsys.readouterr().err


def test_every_sampler_and_pruner_the_sweep_file_accepts_is_made() -> None:
    from dlscaffold.experiments.sweep_file import PRUNERS, SAMPLERS, make_pruner, make_sampler

    assert all(make_sampler(name, 0) is not None for name in SAMPLERS)
    assert all(make_pruner(name) is not None for name in PRUNERS)


def test_a_worker_that_failed_makes_the_sweep_exit_with_its_code(toy: Path, monkeypatch, capsys) -> None:
    """A worker process that crashed (not a trial that failed: that is a FAIL trial) leaves trials
    to do: the command says so and exits with the worker's code, not 0."""
    from dlscaffold.experiments import engine, sweep

    made = sweep.create(sweep_file(toy, trials=1), None, print)
    monkeypatch.setattr(engine, "run", lambda tasks, workers, echo: engine.Ended([0, 3]))
    assert sweep.run(made, 2, print) == 3
    assert "1 worker(s) ended with exit code 3; resume the sweep" in capsys.readouterr().out
