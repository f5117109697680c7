"""Run an iterator in a background thread, a bounded number of items ahead of its consumer.

The reconstruct job decodes and crops video clips (PyAV and torch release the GIL while they
work) while the consumer runs the models: memory holds at most ``depth`` finished items plus the
one being produced, whatever the length of the input. ``wait_s`` is the time the consumer spent
blocked on the producer, so ``1 - wait_s / producer busy time`` is the share of producing that
was hidden behind consuming.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

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
