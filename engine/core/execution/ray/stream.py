"""A worker's CPU stage (``prefetch.stream``) as a Ray task on a spare CPU of the cluster."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import ray

from motionfleet.core.io import prefetch


@dataclass(frozen=True)
class _StageError:
    """The producer's exception, handed over as the stream's last item."""
    error: BaseException


def _produce(produce: Callable) -> Iterator[object]:
    """A CPU stage as a Ray generator task: its items, then its error if it raised one."""
    try:
        yield from prefetch.one_torch_thread(produce)
    except Exception as err:  # re-raised by the consumer (a RejectedInput, say)
        yield _StageError(err)


class RayStream:
    """``prefetch.stream`` as a Ray streaming-generator task of one CPU, wherever the cluster has
    one free (Ray's default policy: the caller's node first); Ray pauses the task while ``depth``
    of its items wait unconsumed (``_generator_backpressure_num_objects``), so the memory of a
    stream is bounded as in a thread. A failed task fails the shard, which the driver retries."""

    remote = True

    def __init__(self, produce: Callable, depth: int):
        task = ray.remote(_produce).options(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=depth)
        self.items: ray.ObjectRefGenerator = task.remote(produce)
        self.wait_s = 0.0
        self.finished = False

    def __iter__(self):
        while True:
            start = time.perf_counter()
            ref = next(self.items, None)
            item = None if ref is None else ray.get(ref)
            self.wait_s += time.perf_counter() - start
            if ref is None:
                self.finished = True
                return
            if isinstance(item, _StageError):
                self.finished = True
                raise item.error
            yield item

    def __enter__(self) -> "RayStream":
        return self

    def __exit__(self, *exc) -> None:
        if not self.finished:  # the consumer stopped early: stop the task too
            ray.cancel(self.items)
