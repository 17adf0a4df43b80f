"""``dlscaffold train --nproc N`` (:mod:`dlscaffold.run.launch`): the processes torchrun starts get every
``train`` option."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import run_cli, run_dirs, write_config

from dlscaffold.cli import app, main
from dlscaffold.run import launch as launcher
from dlscaffold.run.launch import launch_args
from dlscaffold.run.summary import ARGV0_ENV

EVERY_OPTION: dict[str, Any] = {
    "project": Path("some/project"),
    "resume": Path("runs/a run"),
    "dev": True,
    "no_save": True,
    "debug": True,
    "device": "cuda:1",
}


# --seeds (a seed group) is refused with --nproc: its options are never forwarded, and stay at their defaults
SEED_GROUP_OPTIONS: dict[str, Any] = {"seeds": None, "workers": 1, "vary_split": False}


def parse_train(args: list[str]) -> dict[str, Any]:
    """The options the ``train`` command reads from ``dlscaffold ARGS`` (ARGS starting with ``train``)."""
    assert args[0] == "train"
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return command.make_context("train", list(args[1:])).params


@pytest.mark.parametrize("config", [Path("config.yml"), None])
def test_every_option_round_trips_through_the_train_command(config: Path | None) -> None:
    overrides = ["training_params.lrn_rate=3e-4", "logging_params.run_notes=two words"]
    args = launch_args(config, overrides, **EVERY_OPTION)
    for flag in ("--dev", "--no-save", "--debug", "--device", "--project", "--resume"):
        assert flag in args
    assert "--nproc" not in args  # a started process trains; it does not launch again
    params = parse_train(args)
    assert params.pop("args") == [*([str(config)] if config else []), *overrides]
    assert params.pop("nproc") == 1
    assert {key: params.pop(key) for key in SEED_GROUP_OPTIONS} == SEED_GROUP_OPTIONS
    assert params == EVERY_OPTION


def test_no_options_forward_no_flags() -> None:
    args = launch_args(Path("config.yml"), [])
    assert args == ["train", "--", "config.yml"]
    assert parse_train(args) == {
        "args": ["config.yml"],
        "project": None,
        "resume": None,
        "dev": False,
        "no_save": False,
        "debug": False,
        "device": None,
        "nproc": 1,
        **SEED_GROUP_OPTIONS,
    }


@pytest.mark.parametrize("flag", ["--dev", "--no-save", "--debug"])
def test_each_flag_alone_is_forwarded_alone(flag: str) -> None:
    name = flag.removeprefix("--").replace("-", "_")
    args = launch_args(Path("c.yml"), ["a.b=1"], **{name: True})
    assert [a for a in args if a.startswith("--") and a != "--"] == [flag]
    assert parse_train(args)[name] is True


def test_the_cli_launches_with_the_built_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    launched: list[tuple[int, list[str]]] = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(ARGV0_ENV, raising=False)
    argv0: list[str | None] = []  # what the processes would see: the program this command was started as

    def launch(nproc: int, args: list[str]) -> int:
        launched.append((nproc, args))
        argv0.append(os.environ.get(ARGV0_ENV))
        return 0

    monkeypatch.setattr(launcher, "launch", launch)
    config = str(tmp_path / "config.yml")
    (tmp_path / "config.yml").write_text("")  # a missing config is refused before anything launches
    argv = [
        "train",
        config,
        "x.y=1",
        "--nproc",
        "3",
        "--debug",
        "--dev",
        "--no-save",
        "--device",
        "cpu",
        "--project",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert launched == [
        (3, launch_args(Path(config), ["x.y=1"], project=tmp_path, dev=True, no_save=True, debug=True, device="cpu"))
    ]
    assert argv0 == [sys.argv[0]] and ARGV0_ENV not in os.environ  # set for the launch only


def test_nproc_2_debug_writes_no_run_folder(toy: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_config(
        toy,
        "config.yml",
        training_params__max_training_epochs=1,
        dataloading_params__batch_size=8,
        logging_params__logging_dir=str(logs),
    )
    result = run_cli("train", "config.yml", "--nproc", "2", "--debug", cwd=toy)
    assert result.returncode == 0, result.stderr
    assert "Debug run" in result.stdout, result.stdout
    assert not (logs.is_dir() and any(p.is_dir() for p in logs.iterdir())), list(logs.iterdir())
    assert run_dirs(toy) == []
