"""Evaluate a run: ``python evaluate.py RUN_DIR [--epoch N] [--split val] [--json FILE]``.

The same as ``dlscaffold evaluate RUN_DIR ...`` with this folder as the project: every loss and
eval of the run's config over one split, from the run's last (or ``--epoch N``) checkpoint. This
folder's code is used only while models.py, dataloader.py and training_utils.py are the code the run
last ran, as ``dlscaffold evaluate`` does; after editing them, add ``--project DIR`` (this folder) to
evaluate with the code as it is now.
"""

import sys
from pathlib import Path

from dlscaffold.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]], project=Path(__file__).resolve().parent))
