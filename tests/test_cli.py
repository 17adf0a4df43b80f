"""The command line answers fast and cleanly."""

from __future__ import annotations

import subprocess
import sys


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from dlscaffold.cli import main\n"
        "rc = main(['--help'])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'tensorboard', 'copier') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("train", "evaluate"):
        assert command in result.stdout


def test_module_entry_point_and_train_help() -> None:
    result = subprocess.run([sys.executable, "-m", "dlscaffold", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--resume", "--dev", "--no-save", "--debug", "--device", "--project"):
        assert flag in result.stdout


def _dlscaffold(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlscaffold", *args], capture_output=True, text=True)


def test_version_and_shell_completion() -> None:
    from dlscaffold._version import __version__

    result = _dlscaffold("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"dlscaffold {__version__}"
    top = _dlscaffold("--help").stdout
    assert "--version" in top and "--install-completion" in top and "--show-completion" in top


def test_scaffold_and_arch_help_is_plain() -> None:
    """No type noise such as <bool> beside flags, no help text swallowed as markup."""
    for command in ("new", "update", "arch"):
        result = _dlscaffold(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout and "<str>" not in result.stdout and "<list" not in result.stdout
        assert " ." not in result.stdout.replace(" .copier", "")
    assert "(default: HEAD)" in _dlscaffold("new", "--help").stdout


def test_command_modules_do_not_import_the_cli() -> None:
    """The CLI declares the commands; scaffold and arch are plain functions (no typer, no import circle)."""
    code = (
        "import sys\n"
        "import dlscaffold.tools.scaffold, dlscaffold.tools.arch\n"
        "loaded = [m for m in ('typer', 'dlscaffold.cli', 'copier', 'torch') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_submit_passes_its_options_to_the_request_by_name() -> None:
    """``submit`` hands its parsed options to :class:`Request` by name: each is one of its fields."""
    import dataclasses
    import inspect

    from dlscaffold.cli import submit
    from dlscaffold.experiments.submit import Request

    options = set(inspect.signature(submit).parameters) - {"ctx", "args", "debug"}
    assert options == {field.name for field in dataclasses.fields(Request)} - {"config", "overrides"}
    request = Request.from_args(["a.b=1"], workers=2)
    assert request.config is None and request.overrides == ["a.b=1"] and request.workers == 2
