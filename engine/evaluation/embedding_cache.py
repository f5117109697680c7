"""The evaluator's embeddings of a real test set, cached under the engine cache
(``cache_dir("evaluation", "real-embeddings")``) by what decides their bits: the evaluator's
weights, the dataset, the device kind and torch version (``key``). Every evaluation of the same
set with the same evaluator (each leaderboard entry, each rerun) reads them instead of running
the evaluator again.

A cache file is untrusted data: one that cannot be read, was written for another key, or does not
hold one finite embedding per expected name is computed again (and rewritten), never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from motionfleet.core.io.cache import cache_dir

KEY_METADATA = b"motionfleet.key"
SCHEMA = pa.schema([("name", pa.string()), ("embedding", pa.list_(pa.float32()))])


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir("evaluation", "real-embeddings", f"{digest[:32]}.parquet")


def cached_embeddings(key: dict, names: list[str], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """(len(names), D) float32 embeddings: the cache file of ``key`` if it holds them, else
    ``compute()`` (rows in ``names``' order), written to the cache for the next evaluation."""
    path = cache_path(key)
    if path.is_file():
        try:
            return read_cache(path, key, names)
        except (OSError, ValueError, KeyError, pa.ArrowException) as err:
            print(f"motionfleet: {path}: not a usable embedding cache ({err}); computing it again", file=sys.stderr)
    embeddings = np.ascontiguousarray(compute(), dtype=np.float32)
    try:
        write_cache(path, key, names, embeddings)
    except OSError as err:  # a read-only or full cache costs the next evaluation a recomputation, nothing more
        print(f"motionfleet: cannot write the embedding cache {path} ({err}); continuing without it", file=sys.stderr)
    return embeddings


def read_cache(path: Path, key: dict, names: list[str]) -> np.ndarray:
    table = pq.read_table(path)
    stored = json.loads((table.schema.metadata or {}).get(KEY_METADATA, b"null"))
    if stored != key:
        raise ValueError("written for another evaluator or dataset")
    if table.schema.remove_metadata() != SCHEMA or table["name"].to_pylist() != list(names):
        raise ValueError("its motions are not the dataset's")
    rows = table["embedding"].to_pylist()
    if len({len(row) for row in rows}) != 1:
        raise ValueError("embeddings of different sizes")
    embeddings = np.asarray(rows, np.float32)
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings that are not finite")
    return embeddings


def write_cache(path: Path, key: dict, names: list[str], embeddings: np.ndarray) -> None:
    """Written to a name of this process, then renamed: workers filling the same entry at once
    each leave a whole file."""
    table = pa.Table.from_pydict({"name": list(names), "embedding": list(embeddings)}, schema=SCHEMA)
    table = table.replace_schema_metadata({KEY_METADATA: json.dumps(key, sort_keys=True).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
