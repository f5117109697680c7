"""The shard: a fixed slice of the work, decided before any work starts.

A work item is whatever a family's runner takes (a (prompt, repeat) pair, an (estimate, variant)
pair, a clip of a video); the core never looks inside one. Items keep their input order, so
shard boundaries depend only on the inputs and the shard size, never on workers or batches. A
shard is the unit of scheduling, retry and commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Shard:
    shard_id: str
    items: tuple[Any, ...]


def plan_shards(items: Sequence[Any], shard_size: int) -> list[Shard]:
    """Consecutive slices of ``shard_size`` items, named ``shard-00000``, ``shard-00001``, ..."""
    if shard_size < 1:
        raise ValueError("shard size must be >= 1")
    return [Shard(f"shard-{i // shard_size:05d}", tuple(items[i : i + shard_size]))
            for i in range(0, len(items), shard_size)]


def shard_size_for(units: int, workers: int, largest: int) -> int:
    """The shard size that gives each of ``workers`` workers work: ``units / workers`` rounded up,
    at most ``largest`` (the unit of retry stays small) and at least 1."""
    return max(1, min(largest, math.ceil(units / max(workers, 1))))
