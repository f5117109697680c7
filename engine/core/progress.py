"""Progress per batch: a runner calls ``items_done(n)`` after each batch of its shard; the
executor running it decides where that goes (the driver's bar in this process; from a Ray actor,
a queue the driver drains while it waits). The bar counts the rest of a shard at its commit."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Optional

_sink: Optional[Callable[[int], None]] = None


def items_done(count: int) -> None:
    if _sink is not None and count:
        _sink(count)


@contextmanager
def reporting(sink: Callable[[int], None]):
    """Within: ``items_done`` calls ``sink``."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
