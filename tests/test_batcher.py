"""Model batches across shards (core batcher): full batches, each shard's rows as if it ran alone."""

import random

import pyarrow as pa
import pytest

from motionfleet.core.execution.batcher import ShardBatcher, batches_across_shards, key_of, rows_at
from motionfleet.core.io.rejections import rejected_row, rejected_table
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.core.shards import Shard

RESULTS = pa.schema([("sample_id", pa.string()), ("repeat", pa.int32()), ("value", pa.float64())])


class KeyedToy:
    """Item (id, repeat) -> one row: rejected when the id starts with "bad", "nan" rejected after
    the batch ran (as a non-finite output is), else a value of the item alone."""

    row_keys = staticmethod(key_of("sample_id", "repeat"))

    def __init__(self, batch_items: int, poison: str = ""):
        self.batch_items, self.poison, self.calls = batch_items, poison, []

    def item_key(self, item):
        return item

    def run(self, items):
        self.calls.append(len(items))
        if any(i == self.poison for i, _ in items):
            raise RuntimeError(f"toy failure on {self.poison}")
        checked = [rejected_row("sample_id", i, r, i, "bad id") for i, r in items if i.startswith("bad")]
        rows = [{"sample_id": i, "repeat": r, "value": float(sum(map(ord, i)) + r)} for i, r in items
                if not i.startswith(("bad", "nan"))]
        late = [rejected_row("sample_id", i, r, i, "not finite") for i, r in items if i.startswith("nan")]
        return (pa.Table.from_pylist(rows, schema=RESULTS), rejected_table(checked + late, "sample_id"),
                Timings({"model": 1.0 * len(items)}, {"samples": len(items)}, [{"size": len(items)}]))


def shards_of(ids: list[str], sizes: list[int]) -> list[Shard]:
    out, start = [], 0
    for n, size in enumerate(sizes):
        out.append(Shard(f"shard-{n:05d}", tuple((i, 0) for i in ids[start : start + size])))
        start += size
    return out


def run_all(worker, shards, reported=None):
    batcher = ShardBatcher(worker, worker.run, reported or (lambda s, n: None))
    queue, runs = list(shards), []
    while queue or batcher.open_shards:
        while queue and not batcher.full():
            batcher.open(queue.pop(0))
        runs += batcher.run_batch()
    return {r.shard.shard_id: r for r in runs}


def test_a_toy_with_keys_batches_across_shards_and_one_without_does_not():
    assert batches_across_shards(KeyedToy(4))
    assert not batches_across_shards(object())


@pytest.mark.parametrize("batch", [1, 3, 8, 64])
def test_each_shard_gets_the_rows_it_gets_alone_whatever_the_batch(batch):
    rng = random.Random(batch)
    sizes = [rng.randint(0, 9) for _ in range(20)]  # an empty shard too, now and then
    ids = [rng.choice(["ok", "ok", "ok", "bad", "nan"]) + f"-{n:03d}" for n in range(sum(sizes))]
    shards = shards_of(ids, sizes)
    together = run_all(KeyedToy(batch), shards)
    for shard in shards:
        alone = run_all(KeyedToy(1), [shard])[shard.shard_id]
        got = together[shard.shard_id]
        assert got.error is None
        assert got.results.equals(alone.results) and got.rejected.equals(alone.rejected)
        assert got.results.num_rows + got.rejected.num_rows == len(shard.items)
        # rows in the order of the shard's items, rejected ones too
        keys = [k for k in shard.items if k in set(key_of("sample_id", "repeat")(got.rejected))]
        assert key_of("sample_id", "repeat")(got.rejected) == keys


def test_batches_are_full_whatever_the_shard_size():
    worker = KeyedToy(16)
    ids = [f"ok-{n:03d}" for n in range(100)]
    run_all(worker, shards_of(ids, [3] * 33 + [1]))
    assert worker.calls == [16] * 6 + [4]  # shards of 3: only the job's last batch is short


def test_counts_and_seconds_add_up_over_the_shards_and_each_batch_is_counted_once():
    worker = KeyedToy(7)
    runs = run_all(worker, shards_of([f"ok-{n:03d}" for n in range(30)], [4] * 7 + [2]))
    assert sum(r.timings.counts["samples"] for r in runs.values()) == 30
    assert sum(r.timings.seconds["model"] for r in runs.values()) == pytest.approx(30.0)
    assert sum(len(r.timings.batches) for r in runs.values()) == len(worker.calls)


def test_progress_is_reported_per_shard_as_batches_finish():
    seen = {}
    shards = shards_of([f"ok-{n:03d}" for n in range(10)], [5, 5])
    run_all(KeyedToy(3), shards, lambda s, n: seen.__setitem__(s.shard_id, seen.get(s.shard_id, 0) + n))
    assert seen == {"shard-00000": 5, "shard-00001": 5}


def test_a_failing_batch_fails_only_the_shard_that_fails_alone():
    ids = [f"ok-{n:03d}" for n in range(20)]
    shards = shards_of(ids, [4] * 5)
    runs = run_all(KeyedToy(8, poison="ok-009"), shards)
    assert [s for s, r in runs.items() if r.error is not None] == ["shard-00002"]
    assert "ok-009" in str(runs["shard-00002"].error)
    for shard in shards:
        if shard.shard_id != "shard-00002":
            assert runs[shard.shard_id].results.num_rows == 4


def test_a_key_in_two_shards_never_shares_a_batch():
    shards = [Shard("shard-00000", (("a", 0), ("b", 0))), Shard("shard-00001", (("a", 0), ("c", 0)))]
    worker = KeyedToy(8)
    runs = run_all(worker, shards)
    assert worker.calls == [2, 2]
    assert runs["shard-00000"].results.column("sample_id").to_pylist() == ["a", "b"]
    assert runs["shard-00001"].results.column("sample_id").to_pylist() == ["a", "c"]


@pytest.mark.parametrize("rows", [[2, 3, 4], [], [0], [4, 2, 3], [1, 3]])
def test_rows_at_gives_the_rows_asked_for_in_order_and_shares_a_consecutive_runs_buffers(rows):
    table = pa.table({"motion": pa.array([[float(i)] * 3 for i in range(6)], pa.list_(pa.float32()))})
    picked = rows_at(table, rows)
    assert picked.column("motion").to_pylist() == [[float(i)] * 3 for i in rows]
    consecutive = rows == list(range(rows[0], rows[0] + len(rows))) if rows else False
    values = [picked.column("motion").chunk(0).values, table.column("motion").chunk(0).values] if picked.num_rows else []
    if consecutive:  # a slice: the same value buffer, no copy of the motion
        assert values[0].buffers()[1].address == values[1].buffers()[1].address
