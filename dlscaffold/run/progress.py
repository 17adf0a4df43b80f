"""Progress of a pass over data: a bar on a terminal, plain lines in a log, nothing otherwise.

On a terminal (``Progress(enabled=True)``) :meth:`Progress.track` wraps an iterable in a transient
rich bar: the label and epoch (``train  epoch 3/10``), the bar, the batch (``batch 12/50``), the
global step, the running loss, the rate (``steps/s`` on a bar that counts steps, ``batches/s``
otherwise) and the time elapsed and left. :meth:`Progress.show` updates the step and the loss of the
bar in progress; the loop calls it at ``log_every`` points only, because reading a value back from
the GPU is a sync, with the running mean of the epoch so far: the weighted total loss, and on a
terminal of 120 columns or more each loss's when there are a few (``loss 2.47 (ce 0.961,
reconstruction 3.01)``). Text never wraps on a narrow terminal: the bar shrinks, and below 100
columns the time elapsed is left out.

Without a terminal (a job's log file), ``Progress(False, every=30, echo=print)`` writes a plain line
instead, once ``every`` seconds have passed since the pass began or since its last line: no bar
redraws in the log, a steady heartbeat on a slow epoch, silence on a fast one (its epoch line says
it all). ``Progress(False)`` yields the items untouched and prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

PARTS = 3  # the running value of each loss is shown beside the total when there are at most this many


def loss_text(loss: float | None, parts: dict[str, float] | None = None) -> str:
    """``loss 2.47``, or with a few losses ``loss 2.47 (ce 0.961, reconstruction 3.01)`` ("" for None)."""
    if loss is None:
        return ""
    text = f"loss {loss:.4g}"
    if parts and 1 < len(parts) <= PARTS:
        text += " (" + ", ".join(f"{name} {value:.3g}" for name, value in parts.items()) + ")"
    return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _columns(width: int) -> list[Any]:
    """The bar's columns for a terminal ``width`` columns wide (rich is imported only when a bar is
    shown): text never wraps, the bar takes the room left; the time elapsed shows from 100 columns,
    each loss's value beside the total from 120."""
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Column
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
            return Text(loss_text(task.fields.get("loss"), task.fields.get("parts") if width >= 120 else None))

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            unit = "steps/s" if task.fields.get("step") is not None else "batches/s"
            return Text(f"{task.speed:.1f} {unit}" if task.speed is not None else f"- {unit}")

    def cell() -> Column:
        return Column(no_wrap=True)

    return [
        TextColumn("{task.description}", table_column=cell()),
        BarColumn(bar_width=None, table_column=Column(min_width=4)),
        Batch(table_column=cell()),
        Step(table_column=cell()),
        Loss(table_column=cell()),
        Rate(table_column=cell()),
        *([TimeElapsedColumn(table_column=cell()), TextColumn("<", table_column=cell())] if width >= 100 else []),
        TimeRemainingColumn(table_column=cell()),
    ]


class Progress:
    """Wraps iterables in a transient rich progress bar when ``enabled``, else in plain lines.

    Args:
        enabled: show bars (on a terminal).
        console: where bars are drawn (a ``rich.console.Console``); default: rich's, on stdout.
        every: without a bar, write a plain progress line through ``echo`` once this many seconds
            have passed since the pass began or since its last line; None or 0: no lines
            (:meth:`track` is a plain pass-through).
        echo: where the plain lines go.
        clock: the time in seconds (``time.monotonic``; a test passes its own).
    """

    def __init__(
        self,
        enabled: bool,
        console: Any = None,
        every: float | None = None,
        echo: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.enabled = enabled
        self.console = console
        self.every, self.echo, self.clock = every, echo, clock
        self._bar: Any = None  # the rich.progress.Progress of the bar in progress
        self._task: Any = None
        self._loss: tuple[float | None, dict[str, float] | None] = (None, None)  # shown on the plain lines

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
        """Yield ``items``, with a bar (or plain lines, see :class:`Progress`) while they are iterated.

        Args:
            items: what to iterate.
            label: what the pass is, e.g. ``train`` or ``val``.
            total: how many items the whole pass has; default: ``len(items)`` when it has one.
            epoch: ``(epoch, max_epochs)``, shown as ``epoch 3/10``.
            step: the global step before the first item; the bar counts on from it (one step per item)
                and shows ``steps/s``.
            done: items of this pass done before ``items`` starts (a run resumed mid-epoch).
        """
        if total is None and hasattr(items, "__len__"):
            total = len(items) + done
        description = f"{label}  epoch {epoch[0]}/{epoch[1]}" if epoch is not None else label
        if not self.enabled:
            if self.every:
                yield from self._lines(items, description, total, step, done)
            else:
                yield from items
            return
        import rich
        import rich.progress

        width = (self.console or rich.get_console()).width
        with rich.progress.Progress(*_columns(width), console=self.console, transient=True) as bar:
            self._bar, self._task = (
                bar,
                bar.add_task(
                    description,
                    total=total,
                    completed=done,
                    step=None if step is None else step - done,
                    loss=None,
                    parts=None,
                ),
            )
            try:
                for item in items:
                    yield item
                    bar.advance(self._task)
            finally:
                self._bar = self._task = None

    def _lines(
        self, items: Iterable[T], description: str, total: int | None, step: int | None, done: int
    ) -> Iterator[T]:
        """Yield ``items``, writing a plain line once ``every`` seconds have passed since the last one."""
        self._loss = (None, None)
        started = last = self.clock()
        count = done
        for item in items:
            yield item
            count += 1
            now = self.clock()
            if now - last >= self.every:
                last = now
                self.echo(self._line(description, count, total, step, done, now - started))

    def _line(
        self, description: str, count: int, total: int | None, step: int | None, done: int, elapsed: float
    ) -> str:
        """E.g. ``train  epoch 3/10  batch 120/500 (24%)  step 1120  loss 0.431  6.2 steps/s  0:00:19 elapsed,
        0:01:01 left`` (one line)."""
        rate = (count - done) / elapsed if elapsed > 0 else 0.0
        cells = [description, f"batch {count}/{total} ({100 * count // total}%)" if total else f"batch {count}"]
        if step is not None:
            cells.append(f"step {step - done + count}")
        cells.append(loss_text(*self._loss))
        cells.append(f"{rate:.1f} {'steps' if step is not None else 'batches'}/s")
        left = f", {_clock((total - count) / rate)} left" if total and rate > 0 else ""
        cells.append(f"{_clock(elapsed)} elapsed{left}")
        return "  ".join(cell for cell in cells if cell)

    def show(self, step: int | None = None, loss: float | None = None, parts: dict[str, float] | None = None) -> None:
        """Update the bar in progress (without one: the loss of the next plain line).

        Args:
            step: the global step now (after the item just done).
            loss: the running loss: the weighted total of the epoch so far.
            parts: each loss's running value by a short name, shown when there are a few.
        """
        if loss is not None:
            self._loss = (loss, parts)
        if self._bar is None:
            return
        fields: dict[str, Any] = {}
        if step is not None:
            # the bar shows start + completed; the item just done is advanced after show() returns
            task = next(t for t in self._bar.tasks if t.id == self._task)
            fields["step"] = step - int(task.completed) - 1
        if loss is not None:
            fields["loss"], fields["parts"] = loss, parts
        self._bar.update(self._task, **fields)
