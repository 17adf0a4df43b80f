"""A progress bar on a terminal, nothing otherwise (logs and CI output stay clean)."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    """Wraps iterables in a transient rich progress bar when ``enabled``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def track(self, items: Iterable[T], label: str) -> Iterator[T]:
        if not self.enabled:
            yield from items
            return
        from rich.progress import track

        yield from track(items, description=label, transient=True, total=len(items) if hasattr(items, "__len__") else None)
