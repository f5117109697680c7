"""The batcher handing a model batch's rows back to its shards (``execution.batcher.rows_at``).

    python -m pytest benchmarks/test_batcher.py --benchmark-enable

A dhvae batch of 64 samples x 2 people x 300 frames x 262 float32 (the 64-prompt job's one batch),
cut into the rows of 32 shards of 2: as consecutive slices (what ``rows_at`` does) against a
``take`` per shard (what it did), which copies every nested motion value.
"""

import numpy as np
import pyarrow as pa
import pytest

from motionfleet.core.execution.batcher import rows_at
from motionfleet.core.io.columns import people_frames_column

SAMPLES, PER_SHARD = 64, 2


@pytest.fixture(scope="module")
def batch() -> pa.Table:
    motion = np.random.default_rng(0).standard_normal((SAMPLES, 2, 300, 262)).astype(np.float32)
    return pa.table({"sample_id": [f"s{i}" for i in range(SAMPLES)],
                     "motion": people_frames_column(list(motion), 2, 262)})


@pytest.mark.parametrize("how", ["slice (rows_at)", "take"])
def test_hand_a_batch_back_to_its_shards(benchmark, batch, how):
    shards = [list(range(i, i + PER_SHARD)) for i in range(0, SAMPLES, PER_SHARD)]
    cut = rows_at if how.startswith("slice") else (lambda table, rows: table.take(pa.array(rows, pa.int64())))
    parts = benchmark(lambda: [cut(batch, rows) for rows in shards])
    assert pa.concat_tables(parts).equals(batch)  # the same rows either way
    benchmark.extra_info.update({"how": how, "shards": len(shards)})
