"""What a run prints: the models at its start, a line per epoch, and the commands to go on.

The models: one row per model of ``info_flow``, with its name, its class, its parameter count
(``1.2M``), whether it is trained or frozen, and where its weights came from: ``initialised`` (its
constructor's), ``<model_dir> epoch N`` (an earlier run's checkpoint) or ``resumed from epoch N``.
:func:`model_summary` makes a rich table for a terminal, :func:`summary_lines` the same as plain
text for logs.

The epochs: :func:`epoch_lines` fits each epoch's values in :data:`WIDTH` columns (one line, or one
per model); :func:`pack` wraps any ``name value`` list the same way. :func:`program` and
:func:`resume_command` say how to run a command again the way this process was started (a
project's ``python train.py``, a ``dlscaffold`` that is not the one on ``PATH``, ``python -m
dlscaffold``), so that a printed command works where it is read.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from dlscaffold.config import Config
    from dlscaffold.parts.flow import Flow

HEADER = ("model", "class", "parameters", "training", "weights")


def human_count(count: int) -> str:
    """A count in at most four characters and a unit: ``950``, ``12.3K``, ``1.2M``, ``3.4B``."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            value = count / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(count)


def weights_sources(config: Config, resumed_epoch: int | None = None) -> dict[str, str]:
    """Where each model's weights come from, as the run builder loads them.

    Args:
        config: the run's config.
        resumed_epoch: the epoch of the checkpoint a resumed run loads every model from; None for a
            new run (models with a ``model_dir`` load that run's weights, the others are initialised).
    """
    if resumed_epoch is not None:
        return dict.fromkeys(config.info_flow, f"resumed from epoch {resumed_epoch}")
    return {
        name: f"{spec.model_dir} epoch {spec.epoch}" if spec.model_dir is not None else "initialised"
        for name, spec in config.info_flow.items()
    }


def summary_rows(
    flow: Flow, config: Config, weights_source: dict[str, str] | None = None, resumed_epoch: int | None = None
) -> list[tuple[str, str, str, str, str]]:
    """One ``(model, class, parameters, training, weights)`` row per model, in ``info_flow`` order,
    then a ``total`` row.

    Args:
        flow: the built models.
        config: the run's config.
        weights_source: where each model's weights came from, by model name; models it leaves out
            are described from ``config`` and ``resumed_epoch`` (:func:`weights_sources`).
        resumed_epoch: see :func:`weights_sources`.
    """
    sources = {**weights_sources(config, resumed_epoch), **(weights_source or {})}
    rows, total, trained = [], 0, 0
    for name, model in flow.models.items():
        count = sum(p.numel() for p in model.parameters())
        total += count
        trained += count if name in flow.trained else 0
        rows.append(
            (
                name,
                type(model).__name__,
                human_count(count),
                "trained" if name in flow.trained else _ema_role(config, name) or "frozen",
                sources.get(name, "initialised"),
            )
        )
    rows.append(("total", "", human_count(total), f"{human_count(trained)} trained", ""))
    return rows


def _ema_role(config: Any, name: str) -> str | None:
    """``ema of <Source>`` for an EMA model (``info_flow.<name>.ema_of``), else None."""
    spec = config.info_flow.get(name) if config is not None else None
    source = getattr(spec, "ema_of", None)
    return f"ema of {source}" if source else None


def model_summary(
    flow: Flow, config: Config, weights_source: dict[str, str] | None = None, resumed_epoch: int | None = None
) -> Table:
    """The models as a rich table (for a terminal); arguments as for :func:`summary_rows`."""
    from rich.table import Table

    table = Table(title="Models", title_justify="left")
    for column in HEADER:
        table.add_column(column, justify="right" if column == "parameters" else "left")
    rows = summary_rows(flow, config, weights_source, resumed_epoch)
    for row in rows[:-1]:
        table.add_row(*row)
    table.add_section()
    table.add_row(*rows[-1], style="bold")
    return table


def summary_lines(
    flow: Flow, config: Config, weights_source: dict[str, str] | None = None, resumed_epoch: int | None = None
) -> list[str]:
    """The models as aligned plain-text lines (for logs); arguments as for :func:`summary_rows`."""
    rows: list[Any] = [HEADER, *summary_rows(flow, config, weights_source, resumed_epoch)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i == 2 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def best_epoch_line(config: Config) -> str | None:
    """Which value picks the best epoch, for a run with two or more losses and no
    ``training_params.monitor``: the first loss of the first trained model, which may improve while
    the objective does not (a VAE's KL term, which a collapsing posterior minimises). None otherwise,
    ``monitor: none`` included (that run has no best epoch)."""
    from dlscaffold.config.monitor import monitored
    from dlscaffold.config.names import metric_name

    losses = [metric_name(m, k, t) for m, spec in config.info_flow.items() for k, t in spec.losses.items()]
    if len(losses) < 2 or config.training_params.monitor is not None:
        return None
    name, _ = monitored(config)
    which = "the first loss" if name == losses[0] else "the first loss of the first trained model"
    return f"best epoch: by val/{name} ({which}); set training_params.monitor: total to use the weighted sum"


# ------------------------------------------------------------------------------ epoch lines

WIDTH = 120  # columns the console lines of a run fit (epoch lines, the end summary)


def duration(seconds: float) -> str:
    """``0.4s``, ``59.3s``, ``12m05s``, ``3h02m``."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def values_text(values: dict[str, float]) -> list[str]:
    """``name value`` items (the value alone for the name ""), numbers to 4 significant digits."""
    return [f"{name} {value:.4g}" if name else f"{value:.4g}" for name, value in values.items()]


def pack(prefix: str, items: list[str], width: int = WIDTH) -> list[str]:
    """``prefix`` then the items two spaces apart, wrapped to lines of at most ``width`` columns
    where the items allow; continuation lines start under the first item, and no item is split."""
    lines, indent = [], " " * len(prefix)
    line, first = prefix, True  # first: the line has no item yet
    for item in items:
        if not first and len(line) + 2 + len(item) > width:
            lines.append(line)
            line, first = indent, True
        line, first = line + ("" if first else "  ") + item, False
    return [*lines, line.rstrip()]


def _by_model(values: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"Classifier/ce": 1, "total_loss": 2}`` -> ``{"Classifier": {"ce": 1}, "total_loss": {"": 2}}``."""
    groups: dict[str, dict[str, float]] = {}
    for name, value in values.items():
        model, _, short = name.partition("/")
        groups.setdefault(model, {})[short] = value
    return groups


def epoch_lines(
    epoch: int,
    max_epochs: int,
    train: dict[str, float],
    val: dict[str, float],
    seconds: float,
    width: int = WIDTH,
) -> list[str]:
    """An epoch's values: ``epoch 3/10  train: ...  | val: ...  (1.2s)`` when that fits ``width``,
    else a header line and one line per model (train and val on two when one is too long)."""
    one = (
        f"epoch {epoch}/{max_epochs}  train: {'  '.join(values_text(train))}"
        + (f"  | val: {'  '.join(values_text(val))}" if val else "")
        + f"  ({seconds:.1f}s)"
    )
    if len(one) <= width:
        return [one]
    lines = [f"epoch {epoch}/{max_epochs}  ({seconds:.1f}s)"]
    trains, vals = _by_model(train), _by_model(val)
    models = list(dict.fromkeys([*trains, *vals]))
    pad = max(len(model) for model in models)
    for model in models:
        name = f"  {model:<{pad}}  "
        train_items, val_items = values_text(trains.get(model, {})), values_text(vals.get(model, {}))
        splits = (("train", train_items), ("val", val_items))
        line = name + "  | ".join(f"{split}: {'  '.join(items)}" for split, items in splits if items)
        if len(line) <= width:
            lines.append(line)
            continue
        lines += pack(name + "train: ", train_items, width) if train_items else []
        lines += pack((name if not train_items else " " * len(name)) + "val:   ", val_items, width) if val_items else []
    return lines


# --------------------------------------------------------------------------- commands to go on

ARGV0_ENV = "DLSCAFFOLD_ARGV0"  # the program `train --nproc` was started as, for the processes it starts


def _python() -> str:
    """``python`` (or ``python3``) when that name runs this interpreter, else its full path."""
    executable = os.path.abspath(sys.executable)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and os.path.abspath(found) == executable:
            return name
    return shlex.quote(sys.executable)


def program(command: str, argv0: str | None = None) -> str:
    """How to run ``dlscaffold <command>`` the way this process was started.

    ``python train.py`` (``python evaluate.py``) for a project's own script; ``python -m dlscaffold
    <command>`` for ``python -m dlscaffold``; ``dlscaffold <command>`` for the ``dlscaffold`` on
    ``PATH``, and the path it was run by for another one (``.venv/bin/dlscaffold``). ``python`` is
    the full path of this interpreter when ``python`` on ``PATH`` is another one.

    Args:
        command: ``train`` or ``evaluate``.
        argv0: the program as started; default: the one ``train --nproc`` recorded for the processes
            it starts, else ``sys.argv[0]``.
    """
    argv0 = argv0 or os.environ.get(ARGV0_ENV) or sys.argv[0]
    path = Path(argv0)
    if path.name == "__main__.py" and path.parent.name == "dlscaffold":
        return f"{_python()} -m dlscaffold {command}"
    if path.suffix == ".py" and path.stem in ("train", "evaluate") and path.with_name(f"{command}.py").is_file():
        return f"{_python()} {shlex.quote(str(path.with_name(f'{command}.py')))}"  # a project's own script
    on_path = shutil.which("dlscaffold")
    if path.name in ("dlscaffold", "dlscaffold.exe"):
        if on_path and os.path.abspath(on_path) == os.path.abspath(argv0):
            return f"dlscaffold {command}"
        return f"{shlex.quote(argv0)} {command}"
    return f"dlscaffold {command}" if on_path else f"{_python()} -m dlscaffold {command}"


def resume_command(run_dir: Path, world_size: int = 1, project: Path | str | None = None) -> str:
    """The command that continues ``run_dir`` (see :func:`program`); a run of several processes on
    one machine resumes with as many (``--nproc N``). A run folder outside its ``project`` folder
    names it (``--project DIR``): a resume takes a recorded project only for a run inside it."""
    command = f"{program('train')} --resume {shlex.quote(str(run_dir))}"
    if project is not None and Path(project).resolve() not in Path(run_dir).resolve().parents:
        command += f" --project {shlex.quote(str(project))}"
    one_machine = os.environ.get("LOCAL_WORLD_SIZE", str(world_size)) == str(world_size)
    return command + (f" --nproc {world_size}" if world_size > 1 and one_machine else "")
