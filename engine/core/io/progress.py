"""Progress per batch: a runner calls ``items_done(n)`` after each batch of its shard; the
executor running it decides where that goes (the driver's bar in this process; from a Ray actor,
a queue the driver drains while it waits). The bar counts the rest of a shard at its commit.
The sink is a context variable: an actor running several shards at once, one per thread, reports
each to its own shard."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Optional

_sink: contextvars.ContextVar[Optional[Callable[[int], None]]] = contextvars.ContextVar("progress_sink", default=None)


def items_done(count: int) -> None:
    sink = _sink.get()
    if sink is not None and count:
        sink(count)


@contextmanager
def reporting(sink: Callable[[int], None]):
    """Within: ``items_done`` calls ``sink``."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
