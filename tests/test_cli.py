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
