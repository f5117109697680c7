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
from typing import Any, Optional

import pyarrow.parquet as pq

from motionfleet.common.text import builtin_prompts
from motionfleet.core.errors import RejectedInput
from motionfleet.core.inputs import check_id, decode_line, printable, text_lines


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


def load_prompts(path: Optional[str | Path | list]) -> PromptSet:
    if path is None:
        lines = builtin_prompts()
        return PromptSet(_records_from_lines(lines), "builtin", _digest("\n".join(lines).encode()))
    if isinstance(path, (list, tuple)):
        return _records_from_memory(list(path))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    data = path.read_bytes()
    if path.suffix == ".txt":
        records = _records_from_text(text_lines(data, f"prompt file {path}"))
    elif path.suffix in (".jsonl", ".json"):
        records = _records_from_jsonl(text_lines(data, f"prompt file {path}"))
    elif path.suffix == ".parquet":
        records = tuple(_record_from_mapping(i, row) for i, row in enumerate(pq.read_table(path).to_pylist()))
    else:
        raise ValueError(f"unsupported prompt file {path}: use .txt, .jsonl or .parquet")
    return PromptSet(mark_duplicate_ids(records), str(path), _digest(data))


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


def _records_from_text(lines: list[bytes]) -> tuple[PromptRecord, ...]:
    """One record a line; a line that is not UTF-8 keeps its place with the error."""
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(PromptRecord(str(i), decode_line(line, f"line {i + 1}")))
        except RejectedInput as err:
            records.append(PromptRecord(str(i), _shown(line), error=err.reason))
    return tuple(records)


def _records_from_jsonl(lines: list[bytes]) -> tuple[PromptRecord, ...]:
    records = []
    for i, line in enumerate(lines):
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
    ``<id>#dup<n>`` and marked as an error, so it is rejected and the first one runs."""
    seen: set[str] = set()
    out = []
    for record in records:
        if record.sample_id in seen:
            record = replace(record, sample_id=f"{record.sample_id}#dup{len(out)}",
                             error=f"duplicate id {record.sample_id!r}")
        seen.add(record.sample_id)
        out.append(record)
    return tuple(out)
