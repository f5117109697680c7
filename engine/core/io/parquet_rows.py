"""Reading a Parquet input without holding it: a row range from the row groups that hold it, one
column streamed in batches (the file's digest: ``digests.file_sha256``). What a streamed plan (issue 14.2) and its
workers read instead of ``read_table().to_pylist()``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

CHUNK = 1 << 23  # bytes a streaming read takes at a time


def read_rows(path: str | Path, lo: int, hi: int) -> list[dict]:
    """Rows [lo, hi) as dicts; only the row groups that hold them are read."""
    file = pq.ParquetFile(path)
    groups, first, row = [], 0, 0
    for g in range(file.metadata.num_row_groups):
        size = file.metadata.row_group(g).num_rows
        if row < hi and row + size > lo:
            first = row if not groups else first
            groups.append(g)
        row += size
    return file.read_row_groups(groups).slice(lo - first, hi - lo).to_pylist() if groups else []


def column_values(file: pq.ParquetFile, column: str) -> Iterator:
    """Every value of ``column`` (None for every row if the file has no such column), in batches."""
    if column not in file.schema_arrow.names:
        return (None for _ in range(file.metadata.num_rows))
    return (v for batch in file.iter_batches(columns=[column]) for v in batch.column(0).to_pylist())
