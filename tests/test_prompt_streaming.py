"""Issue 14.2: a prompt file is planned from its bytes and metadata, never from its rows; each
shard is a descriptor its worker reads, and the items it yields are the old in-memory path's."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from motionfleet.core.io.inputs import text_lines
from motionfleet.core.options import UsageError
from motionfleet.core.shards import RangeItems, shard_size_for
from motionfleet.dhvae.family import plan
from motionfleet.dhvae.runner import GenerateSettings, ModelSpec
from motionfleet.dhvae.source import _record_from_mapping, _records_from_jsonl, _records_from_text, mark_duplicate_ids, prompt_items
from motionfleet.scorehoi.family import plan as refine_plan
from motionfleet.scorehoi.settings import RefineSettings, model_spec
from motionfleet.scorehoi.source import record_from_row, refine_items

ROWS = 10_000


def jsonl_lines(n: int) -> list[bytes]:
    """Prompts with the cases a reader must keep in place: duplicate ids, bad JSON, not UTF-8,
    a non-object, CRLF, an empty line, a missing id."""
    lines = []
    for i in range(n):
        if i % 997 == 5:
            lines.append(b"{not json")
        elif i % 1009 == 7:
            lines.append(b'{"id": "x", "text": "\xff\xfe"}')
        elif i % 1013 == 9:
            lines.append(b"[1, 2]")
        elif i % 991 == 11:
            lines.append(b"")
        elif i % 7 == 0:
            lines.append(json.dumps({"text": f"person {i} waves"}).encode() + b"\r")
        else:  # every 50th id repeats an earlier one
            lines.append(json.dumps({"id": f"p{i % 50 if i % 50 == 3 else i}", "text": f"two people hug {i}",
                                     "num_frames": 10 + i % 5}).encode())
    return lines


def old_items(records, repeats):
    """The items the old path built: every row in memory, duplicates marked globally."""
    return prompt_items(mark_duplicate_ids(tuple(records)), repeats)


def plan_items(path, repeats, shard_size=None):
    settings = GenerateSettings(repeats=repeats)
    shards = plan(str(path), ModelSpec(), settings, shard_size, path.parent).shards
    return shards, [item for shard in shards for item in pickle.loads(pickle.dumps(shard.items))]


@pytest.mark.parametrize("repeats, shard_size", [(1, None), (3, 257), (2, 9_999)])
def test_jsonl_plan_is_descriptors_and_yields_the_old_items(tmp_path, repeats, shard_size):
    lines = jsonl_lines(ROWS)
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    shards, items = plan_items(path, repeats, shard_size)
    assert items == old_items(_records_from_jsonl(text_lines(path.read_bytes(), "p")), repeats)
    assert all(isinstance(s.items, RangeItems) for s in shards)
    # descriptors only: a shard's size is its range and its duplicate rows, not its rows' bytes
    assert all(len(pickle.dumps(s)) < 400 + 16 * len(s.items.rows.duplicates) for s in shards)
    assert len(pickle.dumps(shards)) * 10 < path.stat().st_size * repeats
    repeated = sum(1 for line in lines if b'"id": "p3"' in line) - 1
    assert repeated > 100 and sum("duplicate id 'p3'" in (i.record.error or "") for i in items) == repeated * repeats


def test_text_plan_yields_the_old_items_and_splits_like_text_lines(tmp_path):
    data = b"".join(b"line %d\r\n" % i if i % 3 else b"a\x0cb \xff\n" for i in range(ROWS)) + b"last, no newline"
    path = tmp_path / "prompts.txt"
    path.write_bytes(data)
    _, items = plan_items(path, 2, 333)
    assert items == old_items(_records_from_text(text_lines(data, "p")), 2)
    for edge in (b"\n\n", b"\r\n", b"a", b"a\n\nb\n"):
        path.write_bytes(edge)
        assert plan_items(path, 1)[1] == old_items(_records_from_text(text_lines(edge, "p")), 1), edge
    for empty in (b"", b"\n"):  # a file that names no prompt is a usage error (tests/test_contract.py)
        path.write_bytes(empty)
        with pytest.raises(UsageError, match="holds no prompt"):
            plan_items(path, 1)


def test_parquet_plan_reads_only_its_row_groups_and_yields_the_old_items(tmp_path):
    ids = [f"p{i}" if i % 100 else "dup" for i in range(ROWS)] + [None, 3.5, "ok\ud800".encode("utf-8", "surrogatepass")
                                                                  .decode("utf-8", "replace")]
    table = pa.table({"id": [None if i is None else str(i) for i in ids],
                      "text": [f"two people hug {i}" for i in range(len(ids))]})
    path = tmp_path / "prompts.parquet"
    pq.write_table(table, path, row_group_size=700)
    shards, items = plan_items(path, 1)
    assert len(shards) == -(-len(ids) // shard_size_for(len(ids), 256))
    assert items == old_items([_record_from_mapping(i, r) for i, r in enumerate(table.to_pylist())], 1)
    assert sum(1 for i in items if i.record.error) == ROWS // 100 - 1


def test_default_shard_size_depends_on_the_items_only():
    assert [shard_size_for(n, 256) for n in (1, 31, 143, 286, 10**4, 10**6)] == [1, 1, 5, 9, 256, 256]


@pytest.mark.parametrize("control, shard_size", [(True, 77), (False, None)])
def test_refine_estimates_plan_is_descriptors_and_yields_the_old_items(tmp_path, control, shard_size):
    """refine streams its estimates the same way: rows read by their workers, duplicates settled by
    the id column alone, the referenced files' digest from their two columns."""
    n = 3_000
    table = pa.table({"id": [f"e{i}" if i % 300 else "same" for i in range(n)],
                      "pose": [[float(i)] * 6 for i in range(n)], "object": ["box"] * n,
                      "image_path": [None] * n})
    path = tmp_path / "estimates.parquet"
    pq.write_table(table, path, row_group_size=250)
    settings = RefineSettings(control=control)
    spec = model_spec("small", None, 0, None, None)
    shards = refine_plan(str(path), spec, settings, shard_size, tmp_path).shards
    items = [item for shard in shards for item in pickle.loads(pickle.dumps(shard.items))]
    old = mark_duplicate_ids([record_from_row(i, row, str(path.parent)) for i, row in enumerate(table.to_pylist())])
    assert items == refine_items(old, control)
    assert all(isinstance(s.items, RangeItems) and len(pickle.dumps(s)) < 400 + 16 * len(s.items.rows.duplicates)
               for s in shards)
    assert sum(1 for i in items if i.record.error == "duplicate id 'same'") == (n // 300 - 1) * (1 + control)
