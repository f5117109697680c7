"""Shards that still failed after their retries, recorded in the job folder.

``failed/<shard_id>.json`` holds the last error and the number of attempts. A failed shard is
not committed, so a rerun of the same command schedules it again (with the missing ones); its
record is removed when it commits.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FAILED_DIR = "failed"


@dataclass(frozen=True)
class ShardFailure:
    shard_id: str
    error: str  # the last attempt's error, one line
    attempts: int


def record(out_dir: str | Path, failure: ShardFailure) -> None:
    folder = Path(out_dir, FAILED_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{failure.shard_id}.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(failure), indent=1))
    os.replace(tmp, path)


def clear(out_dir: str | Path, shard_id: str) -> None:
    Path(out_dir, FAILED_DIR, f"{shard_id}.json").unlink(missing_ok=True)


def read_all(out_dir: str | Path) -> list[ShardFailure]:
    """The failures recorded in a job folder, by shard id."""
    folder = Path(out_dir, FAILED_DIR)
    return [ShardFailure(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def summary_line(out_dir: str | Path, failed: list[ShardFailure]) -> str:
    first = failed[0]
    return (f"{len(failed)} shard(s) failed after their retries (first: {first.shard_id}: {first.error}); "
            f"errors in {Path(out_dir, FAILED_DIR)}/. Rerun the same command to retry only the failed and missing shards")
