"""File names from sample ids: readable, unique per id, and inside the output folder whatever the id holds."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
READABLE_CHARS = 60


def file_stem(key: str) -> str:
    """The id with every run of other characters than letters, digits, ``_`` and ``-`` as one ``_``
    (cut to 60), then 10 hex digits of the raw id's sha256: ids that sanitise alike ("a/b", "a b")
    still get their own file, and no stem holds a path separator or a dot."""
    readable = UNSAFE.sub("_", key)[:READABLE_CHARS].strip("_") or "sample"
    return f"{readable}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def output_path(out: Path, key: str, suffix: str) -> Path:
    path = out / f"{file_stem(key)}{suffix}"
    if path.resolve().parent != out.resolve():  # cannot happen with the stem above; a name never leaves OUT
        raise ValueError(f"{path} is not inside {out}")
    return path
