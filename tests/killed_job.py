"""Kill a job's driver mid-run, then check what the rerun did to the shards it had committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def committed(out: Path) -> dict:
    """shard id -> commit record (empty before the first commit)."""
    records = {}
    for path in (out / "commits").glob("*.json"):
        record = json.loads(path.read_text())
        records[record["shard_id"]] = record
    return records


def kill_after_commits(cmd: list[str], out: Path, env: dict, commits: int = 2, count=None) -> dict:
    """Start ``cmd`` in its own process group, SIGKILL the group once ``count()`` (default: the
    local commit records) reaches ``commits`` (the driver and every worker it started), and return
    the count seen."""
    count = count or (lambda: len(committed(out)))
    driver = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while count() < commits and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    return committed(out)


def result_mtimes(out: Path, records: dict) -> dict:
    """shard -> modification time of its committed results file, to show a rerun left it alone."""
    return {s: (out / r["files"]["results"]["path"]).stat().st_mtime_ns for s, r in records.items()}
