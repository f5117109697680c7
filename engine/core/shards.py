"""The shard: a fixed slice of the work, decided before any work starts.

A work item is whatever a family's runner takes (a (prompt, repeat) pair, an (estimate, variant)
pair, a clip of a video); the core never looks inside one. Items keep their input order, so
shard boundaries depend only on the inputs and the shard size, never on workers or batches. A
shard is the unit of scheduling, retry and commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

# Default shards a job is cut into (before the largest-shard cap): enough for 32 workers on a small
# job, and a count that depends on the inputs only, so shard ids never depend on the workers.
TARGET_SHARDS = 32


@dataclass(frozen=True)
class Shard:
    shard_id: str
    items: tuple[Any, ...]


def plan_shards(items: Sequence[Any], shard_size: int) -> list[Shard]:
    """Consecutive slices of ``shard_size`` items, named ``shard-00000``, ``shard-00001``, ..."""
    return plan_ranges(len(items), shard_size, lambda start, stop: tuple(items[start:stop]))


def plan_ranges(total: int, shard_size: int, items: Callable[[int, int], Any]) -> list[Shard]:
    """The shards of ``total`` items in consecutive ranges of ``shard_size``; ``items(start, stop)``
    is what a shard carries for its range (the items, or a descriptor its worker reads them from)."""
    if shard_size < 1:
        raise ValueError("shard size must be >= 1")
    return [Shard(f"shard-{i // shard_size:05d}", items(i, min(i + shard_size, total)))
            for i in range(0, total, shard_size)]


def shard_size_for(units: int, largest: int) -> int:
    """The default shard size: ``units / TARGET_SHARDS`` rounded up, at most ``largest`` (the unit
    of retry stays small) and at least 1. It depends on the inputs only, never on the workers, so a
    rerun with other workers resumes the same shards; 32 shards give every worker work on a small
    job (143 prompts: 5 a shard, 29 shards)."""
    return max(1, min(largest, math.ceil(units / TARGET_SHARDS)))


@dataclass(frozen=True)
class RangeItems:
    """A shard's items as a descriptor its worker reads (issue 14.2: the driver never holds the
    rows): job items [start, stop), item ``i`` being ``item(record, i // count)`` of row ``i % count``
    (copies outermost: repeats, variants). ``rows`` reads the file's rows it covers: it has ``lo``
    (its first row) and ``records()``."""

    rows: Any
    start: int
    stop: int
    count: int
    item: Callable[[Any, int], Any]

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        records = self.rows.records()
        return (self.item(records[i % self.count - self.rows.lo], i // self.count) for i in range(self.start, self.stop))

    def __getitem__(self, index):  # a worker splitting its shard (out of memory) reads it first
        return tuple(self)[index]


class PlannedBytes(NamedTuple):  # a tuple, beside RangeItems: a shard pickles it without field or module names
    """What a shard's descriptor may read of ``path``: the blocks [first, stop) of each run (of
    ``planned_bytes.BLOCK`` bytes), and one digest over their block digests (``planned_bytes``)."""

    path: str
    runs: tuple[tuple[int, int], ...]
    digest: bytes


def rows_of(start: int, stop: int, count: int) -> tuple[int, int]:
    """The rows [lo, hi) that job items [start, stop) over ``count`` rows (copied) touch."""
    return (start % count, (stop - 1) % count + 1) if start // count == (stop - 1) // count else (0, count)
