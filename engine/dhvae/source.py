"""Prompt sources: txt (one prompt a line), jsonl, or Parquet, an in-memory list of strings or
dicts (the Python API), or the built-in set.

Every input line becomes a ``PromptRecord``; a line that cannot be read keeps its place with an
``error``, so it lands in the rejected table instead of vanishing. jsonl / Parquet fields:
``text`` (required), ``id`` (optional, else the 0-based line index), ``num_frames`` (optional),
``text_features`` (optional, 768 floats, used with ``--text-encoder precomputed``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import pyarrow.parquet as pq

from motionfleet.common.text import builtin_prompts
from motionfleet.core.errors import RejectedInput
from motionfleet.core.io.inputs import check_id, decode_line, printable
from motionfleet.core.io.parquet_rows import CHUNK, RowGroupBytes, column_values, read_rows, row_group_bytes
from motionfleet.core.io.planned_bytes import CheckedFile, FileDigests, FileScan, scan_file
from motionfleet.core.shards import PlannedBytes, RangeItems, rows_of


@dataclass(frozen=True)
class PromptRecord:
    sample_id: str
    text: Any
    num_frames: Optional[int] = None
    text_features: Optional[tuple] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class PromptSet:
    records: tuple[PromptRecord, ...]
    name: str
    digest: str  # sha256 of the source bytes: part of the job's fingerprint


@dataclass(frozen=True)
class PromptItem:
    """One work item: a prompt record and which repeat of it."""

    record: PromptRecord
    repeat: int


def prompt_items(records: tuple[PromptRecord, ...], repeats: int) -> list[PromptItem]:
    """Repeats outermost, so the first shards hold every prompt once."""
    return [PromptItem(record, r) for r in range(repeats) for record in records]


def load_prompts(path: Optional[str | Path | list | tuple]) -> PromptSet:
    """Every record of a prompt source, in memory (the built-in set, a Python list, or a whole file:
    jobs over files plan with ``scan_prompt_file`` instead and read their rows on the workers)."""
    if path is None:
        lines = builtin_prompts()
        return PromptSet(_records_from_lines(lines), "builtin", _digest("\n".join(lines).encode()))
    if isinstance(path, (list, tuple)):
        return _records_from_memory(list(path))
    source = scan_prompt_file(path)
    return PromptSet(tuple(source.range_source(0, source.count).records()),
                     source.name, source.digest)


def _records_from_memory(prompts: list) -> PromptSet:
    """Strings are prompts; dicts have the jsonl fields; anything else is rejected by its index."""
    records = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, dict):
            records.append(_record_from_mapping(i, prompt))
        elif isinstance(prompt, str):
            records.append(PromptRecord(str(i), prompt))
        else:
            records.append(PromptRecord(str(i), repr(prompt), error=f"item {i} is a {type(prompt).__name__}, "
                                                                   "not a prompt string or a dict"))
    data = json.dumps(prompts, sort_keys=True, default=repr).encode()
    return PromptSet(mark_duplicate_ids(tuple(records)), f"memory ({len(prompts)} prompts)", _digest(data))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _records_from_lines(lines: list[str]) -> tuple[PromptRecord, ...]:
    return tuple(PromptRecord(str(i), line) for i, line in enumerate(lines))


def _records_from_text(lines: list[bytes], first: int = 0) -> tuple[PromptRecord, ...]:
    """One record a line (``first``: the first line's index); a line that is not UTF-8 keeps its
    place with the error."""
    records = []
    for i, line in enumerate(lines, first):
        try:
            records.append(PromptRecord(str(i), decode_line(line, f"line {i + 1}")))
        except RejectedInput as err:
            records.append(PromptRecord(str(i), _shown(line), error=err.reason))
    return tuple(records)


def _records_from_jsonl(lines: list[bytes], first: int = 0) -> tuple[PromptRecord, ...]:
    records = []
    for i, line in enumerate(lines, first):
        try:
            records.append(_record_from_json_line(i, line))
        except RejectedInput as err:
            records.append(PromptRecord(str(i), _shown(line), error=err.reason))
    return tuple(records)


def _record_from_json_line(index: int, line: bytes) -> PromptRecord:
    try:
        row = json.loads(decode_line(line, f"line {index + 1}"))
    except json.JSONDecodeError as err:
        raise RejectedInput(f"line {index + 1} is not valid JSON: {err.msg}") from None
    if not isinstance(row, dict):
        raise RejectedInput(f"line {index + 1} is not a JSON object")
    return _record_from_mapping(index, row)


def _shown(line: bytes) -> str:
    """A raw line as writable text for the rejected table (undecodable bytes escaped)."""
    return printable(line.decode("utf-8", "surrogateescape"))


def _record_from_mapping(index: int, row: dict) -> PromptRecord:
    features = row.get("text_features")
    record = PromptRecord(
        sample_id=str(index),
        text=row.get("text"),
        num_frames=row.get("num_frames"),
        text_features=tuple(features) if isinstance(features, (list, tuple)) else features,
    )
    if row.get("id") is None:
        return record
    try:
        return replace(record, sample_id=check_id(row["id"]))
    except RejectedInput as err:  # keeps a writable id (lone surrogates escaped) to name the row
        return replace(record, sample_id=printable(str(row["id"])), error=err.reason)


def mark_duplicate_ids(records):
    """Records (dataclasses with ``sample_id`` and ``error``) with every repeat of an id renamed
    ``<id>#dup<n>`` (n: its index) and marked as an error, so it is rejected and the first one runs."""
    duplicates = duplicate_rows(r.sample_id for r in records)
    return tuple(as_duplicate(r, i, duplicates[i]) if i in duplicates else r for i, r in enumerate(records))


def as_duplicate(record, row: int, sample_id: str):
    """``record`` (row ``row``) rejected as a repeat of an earlier row's id."""
    return replace(record, sample_id=f"{sample_id}#dup{row}", error=f"duplicate id {sample_id!r}")


# ----------------------------------------------------------------------------- streamed files
#
# A job over a prompt file never holds its rows on the driver: planning streams the bytes once
# (digest, block digests, line offsets, and for jsonl / Parquet the ids, to settle duplicates
# before any work), and each shard carries a descriptor (file, row range, the planned digests of
# the bytes it reads) its worker reads through ``planned_bytes.CheckedFile`` and validates.

@dataclass(frozen=True)
class PromptFile:
    """What planning knows of a prompt file: its kind, row count, digests (whole and per block), the
    byte offset where each text row starts (``starts[count]``: one past the last row's end, as if it
    ended in ``\n``) or where a Parquet file keeps its row groups, and the rows whose id repeats an
    earlier row's (row -> its id: rejected as duplicates)."""

    path: str
    kind: str  # "text", "jsonl" or "parquet"
    count: int
    scan: FileDigests
    starts: Optional[np.ndarray]
    duplicates: dict
    groups: Optional[RowGroupBytes] = None  # Parquet only

    @property
    def name(self) -> str:
        return self.path

    @property
    def digest(self) -> str:
        return self.scan.sha256

    def range_source(self, lo: int, hi: int) -> "RowRange":
        """The descriptor of rows [lo, hi): small, picklable, what a shard ships."""
        span = (int(self.starts[lo]), int(self.starts[hi]) - 1) if self.starts is not None and hi > lo else None
        planned = self.scan.planned(*(self.groups.of_rows(lo, hi) if self.groups else [span] if span else []))
        dups = {row: dup for row, dup in self.duplicates.items() if lo <= row < hi}
        return RowRange(self.kind, lo, hi, span, dups, planned)


class RowRange(NamedTuple):  # a tuple: every shard ships one, so it pickles without field names
    """Rows [lo, hi) of a prompt file; ``span``: their bytes [start, end) in a text file; ``planned``:
    the digests of the bytes they are read from (``InputChanged`` if the file differs there now)."""

    kind: str
    lo: int
    hi: int
    span: Optional[tuple[int, int]]
    duplicates: dict
    planned: PlannedBytes

    @property
    def path(self) -> str:
        return self.planned.path

    def records(self) -> list[PromptRecord]:
        if self.hi <= self.lo:
            return []
        if self.kind == "parquet":
            with CheckedFile(self.planned) as file:
                rows = read_rows(file, self.lo, self.hi)
            records = [_record_from_mapping(row, values) for row, values in enumerate(rows, self.lo)]
        else:
            read = _records_from_text if self.kind == "text" else _records_from_jsonl
            records = list(read(self._lines(), self.lo))
        return [as_duplicate(r, row, self.duplicates[row]) if row in self.duplicates else r
                for row, r in enumerate(records, self.lo)]

    def _lines(self) -> list[bytes]:
        if self.span is None:  # range_source gives every text or jsonl range of rows its bytes
            raise RuntimeError(f"{self.path}: rows [{self.lo}, {self.hi}) were planned without the span of their bytes")
        with CheckedFile(self.planned) as file:
            data = file.read_span(*self.span)
        return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]


def prompt_rows(source: PromptFile, start: int, stop: int) -> RangeItems:
    """The descriptor of job items [start, stop) over ``source`` (repeated: items past its rows)."""
    return RangeItems(source.range_source(*rows_of(start, stop, source.count)), start, stop, source.count, PromptItem)


def scan_prompt_file(path: str | Path) -> PromptFile:
    """One streaming pass over a prompt file's bytes (and its ids): no row is kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if path.suffix == ".parquet":
        scan, file = scan_file(path), pq.ParquetFile(path)
        ids = _parquet_ids(file)
        return PromptFile(str(path), "parquet", file.metadata.num_rows, scan, None, duplicate_rows(ids),
                          row_group_bytes(file, scan.size))
    if path.suffix not in (".txt", ".jsonl", ".json"):
        raise ValueError(f"unsupported prompt file {path}: use .txt, .jsonl or .parquet")
    scan, starts = _line_starts(path, f"prompt file {path}")
    if path.suffix == ".txt":  # a text file's ids are its line numbers: never repeated
        return PromptFile(str(path), "text", len(starts) - 1, scan, starts, {})
    source = PromptFile(str(path), "jsonl", len(starts) - 1, scan, starts, {})
    return replace(source, duplicates=duplicate_rows(_jsonl_ids(source)))


def _line_starts(path: Path, what: str) -> tuple[FileDigests, np.ndarray]:
    """(digests of the bytes, start offset of each line + one past the last), lines as ``text_lines``
    splits them; a file with NUL bytes is refused (ValueError)."""
    scan, newlines, size = FileScan(str(path)), [], 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            if b"\x00" in chunk:
                raise ValueError(f"{what} is binary (it holds NUL bytes), not UTF-8 text")
            scan.update(chunk)
            newlines.append(np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10) + size)
            size += len(chunk)
            last = chunk[-1:]
    ends = np.concatenate(newlines) if newlines else np.zeros(0, np.int64)
    if size and last != b"\n":
        ends = np.append(ends, size)  # the last line has no newline
    if size == 1 and last == b"\n":
        ends = ends[:0]  # a lone newline is an empty file (``text_lines``)
    return scan.finish(), np.concatenate([[0], ends + 1]).astype(np.int64)


def _parquet_ids(file: pq.ParquetFile):
    """Each row's sample id, from the ``id`` column alone, streamed."""
    return (_record_from_mapping(row, {"id": value}).sample_id
            for row, value in enumerate(column_values(file, "id")))


def _jsonl_ids(source: PromptFile):
    """Each line's sample id, read in blocks of lines."""
    block = 4096
    for lo in range(0, source.count, block):
        for record in source.range_source(lo, min(lo + block, source.count)).records():
            yield record.sample_id


def duplicate_rows(ids) -> dict:
    """Row -> id of every row whose id an earlier row has (``mark_duplicate_ids``' rule)."""
    seen, duplicates = set(), {}
    for row, sample_id in enumerate(ids):
        if sample_id in seen:
            duplicates[row] = sample_id
            sample_id = f"{sample_id}#dup{row}"
        seen.add(sample_id)
    return duplicates
