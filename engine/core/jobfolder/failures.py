"""Shards that still failed after their retries, recorded in the job folder.

``failed/<shard_id>.json`` holds the last error and the number of attempts. A failed shard is
not committed, so a rerun of the same command schedules it again (with the missing ones); its
record is removed when it commits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from motionfleet.core.jobfolder.storage import Storage

FAILED_DIR = "failed"


@dataclass(frozen=True)
class ShardFailure:
    shard_id: str
    error: str  # the last attempt's error, one line
    attempts: int


def record(out_dir: str | Path, failure: ShardFailure) -> None:
    storage = Storage(out_dir)
    storage.makedirs(FAILED_DIR)
    storage.write(f"{FAILED_DIR}/{failure.shard_id}.json", json.dumps(asdict(failure), indent=1).encode())


def clear(out_dir: str | Path, shard_id: str) -> None:
    Storage(out_dir).delete(f"{FAILED_DIR}/{shard_id}.json")


def read_all(out_dir: str | Path) -> list[ShardFailure]:
    """The failures recorded in a job folder (a path or URI), by shard id; ``DamagedFile`` for a
    record that is not {"shard_id": str, "error": str, "attempts": int}."""
    storage = Storage(out_dir)
    names = sorted(n for n in storage.listing(FAILED_DIR) if n.endswith(".json"))
    return [_read(storage, f"{FAILED_DIR}/{n}") for n in names]


def _read(storage: Storage, rel: str) -> ShardFailure:
    fix = "remove it (a rerun retries every shard that is not committed)"
    value = storage.read_json(rel, fix)
    kinds = {"shard_id": str, "error": str, "attempts": int}
    if not isinstance(value, dict) or set(value) != set(kinds) or not all(isinstance(value[k], t) for k, t in kinds.items()):
        raise storage.damaged(rel, "not a failure record motionfleet wrote", fix)
    return ShardFailure(**value)


def summary_line(out_dir: str | Path, failed: list[ShardFailure]) -> str:
    first = failed[0]
    return (f"{len(failed)} shard(s) failed after their retries (first: {first.shard_id}: {first.error}); "
            f"errors in {str(out_dir).rstrip('/')}/{FAILED_DIR}/. Rerun the same command to retry only the failed and missing shards")
