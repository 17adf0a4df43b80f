"""A progress bar on a terminal, nothing otherwise (logs and CI output stay clean).

On a terminal (``Progress(enabled=True)``) :meth:`Progress.track` wraps an iterable in a transient
rich bar: the label and epoch (``train  epoch 3/10``), the bar, the batch (``batch 12/50``), the
global step, the running loss, the rate (``steps/s`` on a bar that counts steps, ``batches/s``
otherwise) and the time elapsed and left. :meth:`Progress.show` updates the step and the loss of the
bar in progress; the loop calls it with a loss only at ``log_every`` points, because reading a value
back from the GPU is a sync. Without a terminal, :meth:`~Progress.track` yields the items untouched and
:meth:`~Progress.show` does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _columns() -> list[Any]:
    """The bar's columns: rich is imported only when a bar is shown."""
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Batch(ProgressColumn):
        def render(self, task: Any) -> Text:
            total = f"/{int(task.total)}" if task.total is not None else ""
            return Text(f"batch {int(task.completed)}{total}")

    class Step(ProgressColumn):
        def render(self, task: Any) -> Text:
            start = task.fields.get("step")
            return Text("" if start is None else f"step {start + int(task.completed)}")

    class Loss(ProgressColumn):
        def render(self, task: Any) -> Text:
            loss = task.fields.get("loss")
            return Text("" if loss is None else f"loss {loss:.4g}")

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            unit = "steps/s" if task.fields.get("step") is not None else "batches/s"
            return Text(f"{task.speed:.1f} {unit}" if task.speed is not None else f"- {unit}")

    return [
        TextColumn("{task.description}"),
        BarColumn(),
        Batch(),
        Step(),
        Loss(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("<"),
        TimeRemainingColumn(),
    ]


class Progress:
    """Wraps iterables in a transient rich progress bar when ``enabled``.

    Args:
        enabled: show bars (on a terminal); otherwise :meth:`track` is a plain pass-through.
        console: where bars are drawn (a ``rich.console.Console``); default: rich's, on stdout.
    """

    def __init__(self, enabled: bool, console: Any = None):
        self.enabled = enabled
        self.console = console
        self._bar: Any = None  # the rich.progress.Progress of the bar in progress
        self._task: Any = None

    def track(
        self,
        items: Iterable[T],
        label: str,
        total: int | None = None,
        *,
        epoch: tuple[int, int] | None = None,
        step: int | None = None,
        done: int = 0,
    ) -> Iterator[T]:
        """Yield ``items``, with a bar while they are iterated.

        Args:
            items: what to iterate.
            label: what the pass is, e.g. ``train`` or ``val``.
            total: how many items the whole pass has; default: ``len(items)`` when it has one.
            epoch: ``(epoch, max_epochs)``, shown as ``epoch 3/10``.
            step: the global step before the first item; the bar counts on from it (one step per item)
                and shows ``steps/s``.
            done: items of this pass done before ``items`` starts (a run resumed mid-epoch).
        """
        if not self.enabled:
            yield from items
            return
        import rich.progress

        if total is None and hasattr(items, "__len__"):
            total = len(items) + done
        description = f"{label}  epoch {epoch[0]}/{epoch[1]}" if epoch is not None else label
        with rich.progress.Progress(*_columns(), console=self.console, transient=True) as bar:
            self._bar, self._task = (
                bar,
                bar.add_task(
                    description, total=total, completed=done, step=None if step is None else step - done, loss=None
                ),
            )
            try:
                for item in items:
                    yield item
                    bar.advance(self._task)
            finally:
                self._bar = self._task = None

    def show(self, step: int | None = None, loss: float | None = None) -> None:
        """Update the bar in progress (nothing without one).

        Args:
            step: the global step now (after the item just done).
            loss: the running loss, e.g. the objective over the last ``log_every`` steps.
        """
        if self._bar is None:
            return
        fields: dict[str, Any] = {}
        if step is not None:
            # the bar shows start + completed; the item just done is advanced after show() returns
            task = next(t for t in self._bar.tasks if t.id == self._task)
            fields["step"] = step - int(task.completed) - 1
        if loss is not None:
            fields["loss"] = loss
        self._bar.update(self._task, **fields)
