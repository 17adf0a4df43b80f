"""Train this project: ``python train.py [CONFIG] [key.path=value ...] [--dev] [--no-save] [--debug] [--resume RUN]``.

The same as ``dlscaffold train config.yml ...`` with this folder as the project: all the logic lives in
the dlscaffold runtime (``python train.py --help`` lists every option). CONFIG defaults to the
config.yml next to this file. ``--resume RUN`` uses this folder's code only while models.py,
dataloader.py and training_utils.py are the code the run last ran, as ``dlscaffold train --resume``
does; after editing them, add ``--project DIR`` (this folder) to resume with the code as it is now.
"""

import sys
from pathlib import Path

from dlscaffold.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], project=Path(__file__).resolve().parent))
