"""The models of a run, summarised at its start: one row per model of ``info_flow``.

Each row gives the model's name, its class, its parameter count (``1.2M``), whether it is trained or
frozen, and where its weights came from: ``initialised`` (its constructor's), ``<model_dir> epoch N``
(an earlier run's checkpoint) or ``resumed from epoch N``. :func:`model_summary` makes a rich table
for a terminal, :func:`summary_lines` the same as plain text for logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from dlscaffold.config import Config
    from dlscaffold.flow import Flow

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
                "trained" if name in flow.trained else "frozen",
                sources.get(name, "initialised"),
            )
        )
    rows.append(("total", "", human_count(total), f"{human_count(trained)} trained", ""))
    return rows


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
