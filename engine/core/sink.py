"""Parquet output, exactly once per shard.

Layout of a job folder:
    results/<shard_id>.parquet    accepted samples (one row per (sample_id, repeat))
    rejected/<shard_id>.parquet   rejected items with a reason
    manifest.json                 the job fingerprint and the committed shard ids

A worker writes both files under temporary names and renames them into place; the driver then
adds the shard to the manifest (written to a temporary file and renamed). A crash at any point
leaves either a committed shard or one that a rerun recomputes and overwrites with the same
bytes, so every item ends up exactly once. A motion row reads back with
``np.asarray(row["motion"], np.float32).reshape(row["motion_shape"])``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
RESULTS_DIR = "results"
REJECTED_DIR = "rejected"

REJECTED_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("repeat", pa.int32()), ("input", pa.string()), ("reason", pa.string()),
])


class JobMismatch(RuntimeError):
    """The output folder holds shards of a different job."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_write_table(table: pa.Table, path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def write_shard(out_dir: str | Path, shard_id: str, results: pa.Table, rejected: pa.Table,
                metadata: dict[str, str]) -> None:
    """Worker side: both files of a shard, each under a temporary name then renamed."""
    out = Path(out_dir)
    _atomic_write_table(results, out / RESULTS_DIR / f"{shard_id}.parquet", metadata)
    _atomic_write_table(rejected, out / REJECTED_DIR / f"{shard_id}.parquet", metadata)


class Manifest:
    """Driver side: the committed shard ids of one job folder."""

    def __init__(self, out_dir: str | Path, fingerprint: str, job: dict):
        self.out = Path(out_dir)
        self.path = self.out / MANIFEST
        self.fingerprint = fingerprint
        self.job = job
        for sub in (RESULTS_DIR, REJECTED_DIR):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.committed = self._read_committed()
        self._remove_temporaries()

    def _read_committed(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        if data["fingerprint"] != self.fingerprint:
            raise JobMismatch(
                f"{self.out} holds results of another job (fingerprint {data['fingerprint'][:12]}, "
                f"this job {self.fingerprint[:12]}): use a new --out, or the same settings to resume")
        return data["shards"]

    def _remove_temporaries(self) -> None:
        for sub in (RESULTS_DIR, REJECTED_DIR):
            for tmp in (self.out / sub).glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)

    def is_committed(self, shard_id: str) -> bool:
        return shard_id in self.committed

    def commit(self, shard_id: str, summary: dict) -> None:
        self.committed[shard_id] = summary
        body = {"fingerprint": self.fingerprint, "job": self.job, "shards": dict(sorted(self.committed.items()))}
        _atomic_write_bytes(self.path, json.dumps(body, indent=1).encode())


def read_results(out_dir: str | Path, subdir: str = RESULTS_DIR) -> pa.Table:
    """All committed shards of one table (results or rejected), in shard order."""
    out = Path(out_dir)
    committed = json.loads((out / MANIFEST).read_text())["shards"]
    tables = [pq.read_table(out / subdir / f"{shard_id}.parquet") for shard_id in sorted(committed)]
    return pa.concat_tables(tables) if tables else pa.table({})


def motion_array(row: dict) -> np.ndarray:
    """(2, num_frames, 262) float32 motion of one result row (as a dict from ``to_pylist``)."""
    return np.asarray(row["motion"], np.float32).reshape(row["motion_shape"])
