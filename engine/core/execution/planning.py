"""Planning work (probing videos, say) runs where the job will run: on its Ray cluster, or here."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Optional, Sequence

from motionfleet.core.execution import executor_for

_planning: contextvars.ContextVar = contextvars.ContextVar("planning", default=(0, None))


@contextmanager
def planning(workers: int, address: Optional[str]):
    """Within this block, ``map_ordered`` runs on the job's cluster (``workers`` > 0) or here."""
    token = _planning.set((workers, address))
    try:
        yield
    finally:
        _planning.reset(token)


def map_ordered(fn: Callable, items: Sequence) -> list:
    """``[fn(item) for item in items]``, computed in parallel by the job's executor (``planning``):
    as Ray tasks over the cluster's CPUs, or on a few threads here. ``fn`` must be picklable (a
    module-level function or a ``functools.partial`` of one); results come back in input order, so
    a plan built from them does not depend on where they ran."""
    workers, address = _planning.get()
    return executor_for(workers).map_ordered(fn, items, address)
