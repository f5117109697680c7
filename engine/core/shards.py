"""The shard: a fixed slice of the work, decided before any work starts.

Work items are (prompt record, repeat) pairs in input order, repeats outermost, so shard
boundaries depend only on the inputs and the shard size, never on workers or batches. A shard is
the unit of scheduling, retry and commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from motionfleet.dhvae.source import PromptRecord


@dataclass(frozen=True)
class WorkItem:
    record: PromptRecord
    repeat: int


@dataclass(frozen=True)
class Shard:
    shard_id: str
    items: tuple[WorkItem, ...]


def plan_shards(records: tuple[PromptRecord, ...], repeats: int, shard_size: int) -> list[Shard]:
    if repeats < 1 or shard_size < 1:
        raise ValueError("repeats and shard size must be >= 1")
    items = [WorkItem(record, r) for r in range(repeats) for record in records]
    return [
        Shard(f"shard-{i // shard_size:05d}", tuple(items[i : i + shard_size]))
        for i in range(0, len(items), shard_size)
    ]
