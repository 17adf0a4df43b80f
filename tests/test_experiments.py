"""Statistics over seed groups (``runs --group``), ``compare`` with its plot, and ``load_runs``."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_project, run_cli
from scipy import stats

import dlscaffold
from dlscaffold.cli import main
from dlscaffold.experiments.groups import train_group

LEARNING_RATES = (0.01, 0.05)
SEEDS = [1, 2, 3]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy project with two seed groups of 3 runs, 2 epochs each, one per learning rate."""
    toy = copy_project("toyproject", tmp_path_factory.mktemp("experiments") / "toy")
    for lr in LEARNING_RATES:
        overrides = ["training_params.max_training_epochs=2", f"training_params.lrn_rate={lr}"]
        assert train_group(toy / "config.yml", overrides, SEEDS, project_dir=toy, echo=lambda line: None) == 0
    return toy


def groups_of(project: Path) -> list[list[Path]]:
    """The run folders of each group, in training order."""
    found = (p for p in (project / "runs").iterdir() if (p / "run.json").is_file())  # not groups/: the splits
    runs = sorted(found, key=lambda p: int(p.name.split("_")[1]))
    assert len(runs) == 2 * len(SEEDS)
    return [runs[: len(SEEDS)], runs[len(SEEDS) :]]


def best_values(runs: list[Path]) -> list[float]:
    return [json.loads((run / "run.json").read_text())["best"]["value"] for run in runs]


def last_val(run: Path, metric: str) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["split"] == "val"][-1][metric]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., subprocess.CompletedProcess]:
    """``dlscaffold ARGS`` run in this process from a folder (faster than :func:`run_cli`)."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_group_json_has_the_mean_std_and_interval_of_each_group(project: Path) -> None:
    result = run_cli("runs", "runs", "--group", "--format", "json", cwd=project)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [entry["n"] for entry in entries] == [3, 3]
    for entry, runs in zip(entries, groups_of(project), strict=True):
        assert entry["runs"] == [run.name for run in runs] and entry["seeds"] == SEEDS
        group_id = json.loads((runs[0] / "run.json").read_text())["group"]["id"]
        assert entry["group"] == group_id
        values = best_values(runs)
        best = entry["best"]
        assert best["metric"] == "Classifier/ce" and best["n"] == 3
        assert best["mean"] == pytest.approx(np.mean(values)) and best["std"] == pytest.approx(np.std(values, ddof=1))
        half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
        assert best["ci95"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
        accuracy = [last_val(run, "Classifier/accuracy") for run in runs]
        assert entry["val/Classifier/accuracy"]["mean"] == pytest.approx(np.mean(accuracy))
        assert entry["val/Classifier/accuracy"]["std"] == pytest.approx(np.std(accuracy, ddof=1))
        assert "val/total_loss" in entry


def test_paper_tables_hold_mean_plus_minus_std(project: Path, cli: Callable[..., subprocess.CompletedProcess]) -> None:
    values = [best_values(runs) for runs in groups_of(project)]
    markdown = cli("runs", "runs", "--group", "--format", "markdown", cwd=project)
    latex = cli("runs", "runs", "--group", "--format", "latex", cwd=project)
    assert markdown.returncode == 0 and latex.returncode == 0, markdown.stderr + latex.stderr
    lines = markdown.stdout.strip().splitlines()
    assert lines[0].startswith("| group |") and "best Classifier/ce" in lines[0] and len(lines) == 4
    assert r"\begin{tabular}" in latex.stdout and r"\toprule" in latex.stdout and "val/total\\_loss" in latex.stdout
    for row, group in zip(lines[2:], values, strict=True):
        mean, std = np.mean(group), np.std(group, ddof=1)
        assert f"| {mean:.4g} ± {std:.2g} |" in row
        assert f"${mean:.4g} \\pm {std:.2g}$" in latex.stdout
    table = cli("runs", "runs", "--group", cwd=project)
    assert table.returncode == 0 and "95% CI" in table.stdout, table.stderr


def test_csv_of_the_groups_and_of_the_run_list(project: Path, cli: Callable[..., subprocess.CompletedProcess]) -> None:
    grouped = cli("runs", "runs", "--group", "--format", "csv", cwd=project)
    rows = list(csv.DictReader(io.StringIO(grouped.stdout)))
    assert [int(row["n"]) for row in rows] == [3, 3]
    first = best_values(groups_of(project)[0])
    assert float(rows[0]["best.mean"]) == pytest.approx(np.mean(first))
    assert float(rows[0]["best.std"]) == pytest.approx(np.std(first, ddof=1))
    plain = cli("runs", "runs", "--format", "csv", cwd=project)
    runs = list(csv.DictReader(io.StringIO(plain.stdout)))
    assert len(runs) == 6 and float(runs[0]["best.value"]) == pytest.approx(first[0])
    assert float(runs[0]["val/Classifier/accuracy"]) == pytest.approx(
        last_val(groups_of(project)[0][0], "Classifier/accuracy")
    )
    assert json.loads(cli("runs", "runs", "--json", cwd=project).stdout)[0]["group"]["seed"] == 1


def test_compare_prints_the_differing_key_and_welchs_p_value(project: Path) -> None:
    first, second = (best_values(runs) for runs in groups_of(project))
    p = stats.ttest_ind(second, first, equal_var=False).pvalue
    result = run_cli("compare", "runs", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "training_params.lrn_rate" in result.stdout and "0.01" in result.stdout and "0.05" in result.stdout
    assert f"{p:.3g}" in result.stdout and f"{np.mean(second) - np.mean(first):+.4g}" in result.stdout
    as_json = json.loads(run_cli("compare", "runs", "--json", cwd=project).stdout)
    # the seeds, the split file and the logging_dir differ inside a group by construction: left out
    assert [d["key"] for d in as_json["differences"]] == ["training_params.lrn_rate"]
    assert as_json["differences"][0]["values"] == list(LEARNING_RATES)
    (item,) = as_json["metrics"]
    assert (item["metric"], item["kind"]) == ("Classifier/ce", "best")
    assert item["groups"][0]["p_welch"] is None and item["groups"][1]["p_welch"] == pytest.approx(p)
    assert item["groups"][1]["diff"] == pytest.approx(np.mean(second) - np.mean(first))


def test_compare_a_named_metric_with_a_group_of_one_and_a_plot(
    project: Path, cli: Callable[..., subprocess.CompletedProcess]
) -> None:
    (_, a, _), (b, c, _) = groups_of(project)  # a: seed 2, with the split file of its group's first run
    plot = project / "plots" / "curves.png"
    plot.parent.mkdir()
    result = cli("compare", str(a), str(b), str(c), "--metric", "Classifier/accuracy", "--plot", str(plot), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "final Classifier/accuracy" in result.stdout
    assert "a group of one has no std" in result.stdout
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    data = json.loads(cli("compare", str(a), str(b), str(c), "--metric", "total_loss", "--json", cwd=project).stdout)
    # the groups' first runs differ in seed and split file too: neither is a difference between groups
    assert [d["key"] for d in data["differences"]] == ["training_params.lrn_rate"]
    entries = data["metrics"][0]["groups"]
    assert [e["n"] for e in entries] == [1, 2] and entries[0]["std"] is None
    assert entries[1]["p_welch"] is None and "group of one" in entries[1]["note"]
    assert entries[1]["mean"] == pytest.approx(np.mean([last_val(b, "total_loss"), last_val(c, "total_loss")]))


def test_bad_input_is_one_line_and_exit_2(
    project: Path, cli: Callable[..., subprocess.CompletedProcess], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    assert "no run folders" in one_error_line(cli("runs", str(tmp_path / "empty"), "--group", cwd=project))
    assert "no run folders" in one_error_line(cli("compare", str(tmp_path / "empty"), cwd=project))
    line = one_error_line(cli("compare", "runs", "--metric", "Classifier/acuracy", cwd=project))
    assert "did you mean 'Classifier/accuracy'?" in line
    assert "did you mean 'latex'?" in one_error_line(cli("runs", "runs", "--format", "latx", cwd=project))
    line = one_error_line(cli("compare", "runs", "--plot", str(tmp_path / "missing" / "c.png"), cwd=project))
    assert "does not exist" in line and not (tmp_path / "missing").exists()
    one_error_line(cli("runs", "runs", "--json", "--format", "csv", cwd=project))
    with pytest.raises(dlscaffold.errors.UserError, match="no run folders"):
        dlscaffold.load_runs(tmp_path / "empty")


def test_load_runs_includes_a_sweeps_trial_runs(
    project: Path, cli: Callable[..., subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """A logging folder with a run and a sweep folder whose trial runs record their trial."""
    (first, *_), _ = groups_of(project)
    logs = tmp_path / "runs"
    shutil.copytree(first, logs / first.name)
    sweep = logs / "sweeps" / "20260101_1_lr"
    for trial, lr in enumerate(LEARNING_RATES):
        run = shutil.copytree(first, sweep / f"20260101_{trial + 1}_toy_trial{trial}")
        info = json.loads((run / "run.json").read_text())
        info.pop("group")
        info["sweep"] = {"dir": str(sweep), "trial": trial, "params": {"training_params.lrn_rate": lr}, "seed": None}
        (run / "run.json").write_text(json.dumps(info))
    frame = dlscaffold.load_runs(logs)
    for column in ("run", "status", "group", "seed", "trial", "best_epoch", "best_value"):
        assert column in frame.columns
    assert "val/Classifier/accuracy" in frame.columns and "config.training_params.lrn_rate" in frame.columns
    assert len(frame) == 3 and frame["run"].iloc[0] == str(logs / first.name)
    assert frame["trial"].isna().iloc[0] and list(frame["trial"].iloc[1:]) == [0, 1]
    assert frame["best_value"].iloc[0] == pytest.approx(best_values([first])[0])
    assert frame["val/Classifier/accuracy"].iloc[0] == pytest.approx(last_val(first, "Classifier/accuracy"))
    assert list(frame["seed"]) == [1, 1, 1] and frame["best_epoch"].iloc[0] == 2
    listed = cli("runs", str(sweep), "--json", cwd=project)
    assert [(r["trial"], r["params"]) for r in json.loads(listed.stdout)] == [
        (t, {"training_params.lrn_rate": lr}) for t, lr in enumerate(LEARNING_RATES)
    ]
    table = cli("runs", str(sweep), cwd=project).stdout
    assert "trial" in table.splitlines()[0] and "training_params.lrn_rate=0.05" in table


def test_the_statistics_libraries_load_only_when_used() -> None:
    code = (
        "import sys\n"
        "import dlscaffold, dlscaffold.experiments.results\n"
        "from dlscaffold.cli import main\n"
        "assert main(['runs', '--help']) == 0 and main(['compare', '--help']) == 0\n"
        "heavy = [m for m in ('scipy', 'pandas', 'matplotlib', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--group" in result.stdout and "--plot" in result.stdout
