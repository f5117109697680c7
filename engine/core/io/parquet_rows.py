"""Reading a Parquet input without holding it: a row range from the row groups that hold it, one
column streamed in batches (the file's digest: ``digests.file_sha256``). What a streamed plan
(issue 14.2) and its workers read instead of ``read_table().to_pylist()``."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

CHUNK = 1 << 23  # bytes a streaming read takes at a time
FOOTER_READ = 1 << 16  # bytes of a file's end pyarrow reads first to find the footer (its default)


def read_rows(source: str | Path | io.IOBase, lo: int, hi: int) -> list[dict]:
    """Rows [lo, hi) as dicts (of a path, or a file object); only the row groups that hold them are read."""
    file = pq.ParquetFile(source)
    groups: list[int] = []
    first = row = 0
    for g in range(file.metadata.num_row_groups):
        size = file.metadata.row_group(g).num_rows
        if row < hi and row + size > lo:
            first = row if not groups else first
            groups.append(g)
        row += size
    return file.read_row_groups(groups).slice(lo - first, hi - lo).to_pylist() if groups else []


@dataclass(frozen=True)
class RowGroupBytes:
    """Where a Parquet file keeps its rows: the first row of each row group (then the row count),
    the bytes of each group's column chunks, and the end pyarrow reads to find the footer."""

    first_rows: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    tail: tuple[int, int]

    def of_rows(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The byte spans ``read_rows(lo, hi)`` reads: the footer and the groups holding those rows."""
        groups = [span for span, a, b in zip(self.spans, self.first_rows, self.first_rows[1:]) if a < hi and b > lo]
        return [self.tail, *groups]


def row_group_bytes(file: pq.ParquetFile, size: int) -> RowGroupBytes:
    """The ``RowGroupBytes`` of a file of ``size`` bytes, from its footer."""
    first_rows, spans = [0], []
    for g in range(file.metadata.num_row_groups):
        group = file.metadata.row_group(g)
        columns = [group.column(c) for c in range(group.num_columns)]
        starts = [min(o for o in (c.dictionary_page_offset, c.data_page_offset) if o) for c in columns]
        spans.append((min(starts, default=0), max((s + c.total_compressed_size for s, c in zip(starts, columns)), default=0)))
        first_rows.append(first_rows[-1] + group.num_rows)
    tail = max(FOOTER_READ, file.metadata.serialized_size + 8)  # the footer, its length and the magic
    return RowGroupBytes(tuple(first_rows), tuple(spans), (max(0, size - tail), size))


def column_values(file: pq.ParquetFile, column: str) -> Iterator:
    """Every value of ``column`` (None for every row if the file has no such column), in batches."""
    if column not in file.schema_arrow.names:
        return (None for _ in range(file.metadata.num_rows))
    return (v for batch in file.iter_batches(columns=[column]) for v in batch.column(0).to_pylist())
