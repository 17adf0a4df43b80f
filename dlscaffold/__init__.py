"""dlscaffold: a compact PyTorch runtime behind a copier project template.

Importing this package is cheap: torch is imported only by the modules that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from dlscaffold.api import LoadedRun

from dlscaffold._version import __version__

__all__ = ["__version__", "fingerprint", "load_run", "load_runs"]


def load_run(
    run_dir: str | Path,
    epoch: str | int | None = None,
    device: str | None = "cpu",
    project: str | Path | None = None,
    precision: str | None = None,
) -> LoadedRun:
    """Load a run folder's models at one epoch, with its config, split and metrics.

    See :func:`dlscaffold.api.load_run` (imported here on first use, so that ``import dlscaffold``
    does not import torch) and docs/api.md.

    Args:
        run_dir: a folder printed by ``dlscaffold train``.
        epoch: ``"best"``, ``"last"`` or an epoch number; default ``"best"``, or ``"last"`` for a run
            trained with ``training_params.monitor: none`` (it has no best epoch).
        device: ``"cpu"`` (default), ``"cuda"``, ...; None chooses as training did.
        project: the project folder whose code to import, instead of the one the run recorded.
        precision: compute in this precision; default: the run's (fp32 where it is slow on this CPU).
    """
    from dlscaffold.api import load_run as _load_run

    return _load_run(run_dir, epoch, device, project, precision)


def load_runs(logging_dir: str | Path) -> pandas.DataFrame:
    """A pandas DataFrame with one row per run under a logging folder (its sweeps' trial runs too):
    ``run``, ``status``, ``group``, ``seed``, ``trial``, ``best_epoch``, ``best_value``, the last
    validation value of each metric (``val/<Model>/<name>``) and every config key
    (``config.<dotted.key>``).

    See :func:`dlscaffold.experiments.results.load_runs` (imported here on first use, so that ``import
    dlscaffold`` does not import pandas) and docs/experiments.md.
    """
    from dlscaffold.experiments.results import load_runs as _load_runs

    return _load_runs(logging_dir)


def fingerprint(
    config_path: str | Path,
    steps: int = 3,
    overrides: Sequence[str] = (),
    project_dir: str | Path | None = None,
) -> dict[str, Any]:
    """SHA-256 hashes of the first training batch (as the models see it), each model's initial
    weights and its weights after ``steps`` optimizer steps, for a project's determinism test:
    ``{"steps", "data", "init": {model: hash}, "trained": {model: hash}, "environment"}``.

    The run is built as training builds it, on the CPU in one thread, with the config's seed;
    nothing is written. See :func:`dlscaffold.tools.fingerprint.fingerprint` (imported here on first
    use, so that ``import dlscaffold`` does not import torch) and docs/api.md.
    """
    from dlscaffold.tools.fingerprint import fingerprint as _fingerprint

    return _fingerprint(config_path, steps, overrides, project_dir)
