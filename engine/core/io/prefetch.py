"""A worker's CPU stage: an iterator produced a bounded number of items ahead of its consumer.

The reconstruct job decodes and crops video clips while the consumer runs the models. A runner
asks for ``stream(produce, depth)``; the executor decides where ``produce()`` runs:

* by default in a background thread of the worker's process (``Prefetch``: PyAV and torch
  release the GIL while they work);
* on a Ray job whose model actors leave CPUs free (a GPU node, or nodes without a model actor),
  as a Ray task of one CPU anywhere on the cluster (``execution.ray.stream``), so the stage scales with the
  cluster's CPUs rather than with the model workers.

Either way the producer runs on one torch thread, memory holds at most ``depth`` finished items
plus the one being produced whatever the length of the input, and ``wait_s`` is the time the
consumer spent blocked on the producer.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _END = "item", "error", "end"


class Prefetch(Generic[T]):
    """``for item in Prefetch(items, depth)``: the producer's exception is re-raised in the consumer.
    Use as a context manager (or call ``close``) so that an early exit stops the producer."""

    def __init__(self, items: Iterator[T], depth: int):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.items = items
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.wait_s = 0.0
        self.remote = False  # produced in this process
        self.thread = threading.Thread(target=self._produce, name="prefetch", daemon=True)
        self.thread.start()

    def _produce(self) -> None:
        try:
            for item in self.items:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put((_ERROR, err))
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()

    def _put(self, entry: tuple) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            start = time.perf_counter()
            kind, value = self.queue.get()
            self.wait_s += time.perf_counter() - start
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def __enter__(self) -> "Prefetch[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def one_torch_thread(produce: Callable[[], Iterator[T]]) -> Iterator[T]:
    """``produce()``'s items, computed on one torch thread in the thread that consumes them: the
    OpenMP thread count is per thread, so a model thread keeps its own and the two share the cores
    instead of each spinning up a full team."""
    import torch

    torch.set_num_threads(1)
    yield from produce()


_placement: contextvars.ContextVar[Optional[Callable]] = contextvars.ContextVar("stage_placement", default=None)
_at_once: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("stages_at_once", default=None)


def stream(produce: Callable[[], Iterator[T]], depth: int):
    """``produce()``'s items, ``depth`` ahead, where the executor placed the stage (see ``placed``).
    ``produce`` must be picklable (a ``functools.partial`` of a module-level generator function).
    Returns a context manager that iterates the items and has ``wait_s`` and ``remote``."""
    elsewhere = _placement.get()
    return elsewhere(produce, depth) if elsewhere else Prefetch(one_torch_thread(produce), depth)


def at_once() -> Optional[int]:
    """How many streams a consumer may hold open at once where ``placed`` put them (None: any)."""
    return _at_once.get()


@contextmanager
def placed(runner: Optional[Callable], streams_at_once: Optional[int] = None):
    """Within: ``stream`` calls ``runner(produce, depth)`` (None: a thread of this process), and a
    consumer holds at most ``streams_at_once`` streams open at once (``at_once``)."""
    token, bound = _placement.set(runner), _at_once.set(streams_at_once)
    try:
        yield
    finally:
        _at_once.reset(bound)
        _placement.reset(token)
