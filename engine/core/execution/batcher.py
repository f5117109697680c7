"""Model batches across shards: the shard is the unit of commit and retry, the batch the unit of compute.

A worker holds several shards open and forms each model batch from their items in order, so a
batch is full whatever the shard size (as vLLM's continuous batching, or Ray Data's
``map_batches`` over blocks); a shard is handed back when its last item is done, and is then
written and committed on its own, exactly once as before. A row depends only on its item
(per-sample noise; batch-invariant GEMMs, ``runtime.batching``), so each shard's rows are the
bytes it gets alone; they are put in the order of the shard's items (a rejected row too), which
no batch boundary can change.

A runner takes part when it says how to match rows to items: ``item_key(item)`` and
``row_keys(table)`` (one hashable key per row of a results or rejected table), and
``batch_items`` (items per model batch). A runner whose items can reject their whole shard (the
clips of a video that fails to decode part way) also gives ``settle_shard(run)``: the finished
shard's ``ShardRun`` as the shard alone gives it, from the rows its parts gave in their batches.
Other runners run each shard alone, as one call.

A batch that raises is no shard's fault yet: its shards are taken back to their first item not
done and run alone from then on; a shard that raises alone fails (the driver retries it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

import pyarrow as pa

from motionfleet.core.io import progress
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.core.shards import Shard


def batches_across_shards(worker: Any) -> bool:
    """Whether ``worker`` can run the items of several shards in one call (it matches rows to items)."""
    return all(callable(getattr(worker, name, None)) for name in ("item_key", "row_keys")) and hasattr(worker, "batch_items")


@dataclass
class ShardRun:
    """A shard's outcome: its tables and timings, or the error it failed with alone."""

    shard: Shard
    results: Optional[pa.Table] = None
    rejected: Optional[pa.Table] = None
    timings: Optional[Timings] = None
    error: Optional[Exception] = None


@dataclass
class _Open:
    shard: Shard
    items: tuple
    position: dict  # item key -> index in the shard
    taken: int = 0  # items handed to batches so far
    done: int = 0  # items whose rows came back
    alone: bool = False
    results: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def left(self) -> int:
        return len(self.items) - self.taken


class ShardBatcher:
    """The open shards of one worker and the batches cut from them.

    ``run(items)`` is the worker's call (``execution.run_split_on_oom`` of it, in practice);
    ``reported(shard, count)`` hears of items done, batch by batch."""

    def __init__(self, worker: Any, run: Callable[[tuple], tuple], reported: Callable[[Shard, int], None] = lambda s, n: None):
        self.worker, self.run_items, self.reported = worker, run, reported
        self.size = max(1, int(worker.batch_items))
        self.open_shards: list[_Open] = []

    def open(self, shard: Shard) -> None:
        items = tuple(shard.items)  # a streamed shard (shards.RangeItems) reads its rows here, once
        self.open_shards.append(_Open(shard, items, {self.worker.item_key(item): i for i, item in enumerate(items)}))

    def waiting(self) -> int:
        """Items of the open shards not yet in a batch."""
        return sum(s.left for s in self.open_shards)

    def full(self) -> bool:
        return self.waiting() >= self.size

    def run_batch(self) -> list[ShardRun]:
        """Run one batch; the shards it finished (or that failed alone)."""
        parts = self._cut()
        if not parts:  # only empty shards are open
            return self._finished()
        items = tuple(item for s, lo, hi in parts for item in s.items[lo:hi])
        try:
            with progress.reporting(lambda count: None):  # counted per shard below, once the rows are matched
                results, rejected, timings = self.run_items(items)
        except Exception as err:
            return self._failed(parts, err)
        self._hand_back(parts, results, rejected, timings)
        return self._finished()

    def _cut(self) -> list[tuple[_Open, int, int]]:
        """(shard, first, end) ranges of the next batch: a shard running alone fills a batch by
        itself; others share one in order. A key seen twice (a duplicate id) ends the batch, so
        each row matches one item."""
        alone = [s for s in self.open_shards if s.alone and s.left][:1]
        parts, room, keys = [], self.size, set()
        for s in alone or [s for s in self.open_shards if not s.alone]:
            end = s.taken
            while end < len(s.items) and room:
                key = self.worker.item_key(s.items[end])
                if key in keys:
                    room = 0
                    break
                keys.add(key)
                end, room = end + 1, room - 1
            if end > s.taken:
                parts.append((s, s.taken, end))
                s.taken = end
            if not room:
                break
        return parts

    def _failed(self, parts, err: Exception) -> list[ShardRun]:
        if len(parts) == 1 and parts[0][0].alone:
            s = parts[0][0]
            self.open_shards.remove(s)
            return [ShardRun(s.shard, error=err)]
        for s, lo, _ in parts:  # run again alone from the first item of this batch
            s.taken, s.alone = lo, True
        return []

    def _hand_back(self, parts, results: pa.Table, rejected: pa.Table, timings: Timings) -> None:
        owner = {self.worker.item_key(item): s for s, lo, hi in parts for item in s.items[lo:hi]}
        for table, kind in ((results, "results"), (rejected, "rejected")):
            rows_of: dict[int, list[int]] = {}
            for row, key in enumerate(self.worker.row_keys(table)):
                if key not in owner:
                    raise RuntimeError(f"a {kind} row with key {key!r} matches no item of the batch")
                rows_of.setdefault(id(owner[key]), []).append(row)
            for s, _, _ in parts:
                getattr(s, kind).append(rows_at(table, rows_of.get(id(s), [])))
        total, start = sum(hi - lo for _, lo, hi in parts), 0
        for s, lo, hi in parts:
            s.timings.add(share(timings, start, start + hi - lo, total))
            start += hi - lo
            s.done += hi - lo
            self.reported(s.shard, hi - lo)

    def _finished(self) -> list[ShardRun]:
        done = [s for s in self.open_shards if s.done == len(s.items)]
        for s in done:
            self.open_shards.remove(s)
        settle = getattr(self.worker, "settle_shard", lambda run: run)
        return [settle(ShardRun(s.shard, *self._tables(s), s.timings)) for s in done]

    def _tables(self, s: _Open) -> tuple[pa.Table, pa.Table]:
        """The shard's rows in the order of its items."""
        if not s.items:  # nothing ran: the worker's empty tables
            results, rejected, _ = self.run_items(())
            return results, rejected
        out = []
        for parts in (s.results, s.rejected):
            table = pa.concat_tables(parts).combine_chunks()
            keys = self.worker.row_keys(table)
            order = sorted(range(table.num_rows), key=lambda row: s.position[keys[row]])
            out.append(rows_at(table, order))
        return out[0], out[1]


def rows_at(table: pa.Table, rows: list[int]) -> pa.Table:
    """``table``'s rows at ``rows``, in that order: a slice (no copy) when they are consecutive, as
    a shard's rows in its own batch are. A ``take`` copies every nested motion value: 3.7 ms against
    0.04 ms to cut a 64-sample dhvae batch into 32 shards (``benchmarks/test_batcher.py``)."""
    first = rows[0] if rows else 0
    if rows == list(range(first, first + len(rows))):
        return table.slice(first, len(rows))
    return table.take(pa.array(rows, pa.int64()))


class SharedBatcher:
    """One ``ShardBatcher`` fed by concurrent calls, one per shard (a Ray actor's threads): each
    call opens its shard and waits for it; a waiting call that finds no batch running runs the
    next one, full, or short once no shard has arrived for ``LINGER_S`` (the driver keeps enough
    shards in flight to fill a batch, so a short batch means the job is ending)."""

    LINGER_S = 0.05

    def __init__(self, batcher: ShardBatcher):
        self.batcher = batcher
        self.changed = threading.Condition()
        self.running = False
        self.outcomes: dict[str, ShardRun] = {}
        self.last_open = 0.0

    def run(self, shard: Shard) -> ShardRun:
        with self.changed:
            self.batcher.open(shard)
            self.last_open = time.monotonic()
            self.changed.notify_all()
            while shard.shard_id not in self.outcomes:
                linger = self.LINGER_S - (time.monotonic() - self.last_open)
                if self.running or (not self.batcher.full() and linger > 0):
                    self.changed.wait(None if self.running else linger)
                else:
                    self._run_batch()
            return self.outcomes.pop(shard.shard_id)

    def _run_batch(self) -> None:
        """Called holding the lock; runs the batch without it."""
        self.running = True
        self.changed.release()
        try:
            runs = self.batcher.run_batch()
        finally:
            self.changed.acquire()
            self.running = False
            self.changed.notify_all()
        self.outcomes.update((run.shard.shard_id, run) for run in runs)


def share(timings: Timings, start: int, end: int, whole: int) -> Timings:
    """The part of a batch's timings that items [start, end) of its ``whole`` items take: seconds
    in proportion, counts cut at the same places (so the parts add up to the whole), and the
    batch records with the part that starts the batch, so that each batch is counted once."""
    fraction = (end - start) / whole
    counts = {name: value * end // whole - value * start // whole for name, value in timings.counts.items()}
    return Timings({k: v * fraction for k, v in timings.seconds.items()}, counts, list(timings.batches) if start == 0 else [])


def key_of(*columns: str) -> Callable[[pa.Table], list[Hashable]]:
    """``row_keys`` of a table keyed by ``columns``."""
    def keys(table: pa.Table) -> list[Hashable]:
        return list(zip(*(table.column(c).to_pylist() for c in columns)))
    return keys
