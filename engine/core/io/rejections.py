"""The rejected table: one row per input that could not be processed, with the reason.

Columns: the family's own id column (``sample_id``, ``video_id``, ...), ``repeat`` (which repeat
or variant of the input), ``input`` (the input as JSON, whole: ``json.loads`` gives it back) and
``reason``.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa


def rejected_schema(id_column: str) -> pa.Schema:
    return pa.schema([(id_column, pa.string()), ("repeat", pa.int32()), ("input", pa.string()),
                      ("reason", pa.string())])


def rejected_row(id_column: str, item_id: str, repeat: int, value: Any, reason: str) -> dict:
    return {id_column: item_id, "repeat": repeat, "input": as_json(value), "reason": reason}


def as_json(value: Any) -> str:
    """``value`` as JSON (numpy arrays as lists, other objects as their text); ASCII, so no control
    or direction character of an untrusted input reaches a terminal unescaped."""
    return json.dumps(value, default=_plain)


def _plain(value: Any):
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)


def rejected_table(rows: list[dict], id_column: str) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=rejected_schema(id_column))
