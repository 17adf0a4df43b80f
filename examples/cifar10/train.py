"""Train this project: ``python train.py [CONFIG] [key.path=value ...] [--dev] [--no-save] [--debug]``.

The same as ``dlscaffold train config.yml ...`` run with this folder as the project: all the logic
lives in the dlscaffold runtime (``python train.py --help`` lists every option). CONFIG defaults to
the config.yml next to this file.
"""

import sys
from pathlib import Path

from dlscaffold.cli import main

HERE = Path(__file__).resolve().parent


def train_args(args: list[str]) -> list[str]:
    """The ``dlscaffold`` arguments for ``python train.py ARGS``."""
    resuming = any(a == "--resume" or a.startswith("--resume=") for a in args)
    if not resuming and not (args and args[0].endswith((".yml", ".yaml"))):
        args = [str(HERE / "config.yml"), *args]
    if not any(a == "--project" or a.startswith("--project=") for a in args):
        args = [*args, "--project", str(HERE)]
    return ["train", *args]


if __name__ == "__main__":
    sys.exit(main(train_args(sys.argv[1:])))
