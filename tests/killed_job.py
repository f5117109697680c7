"""Kill a job's driver mid-run, then check what the rerun did to the shards it had committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def committed(out: Path) -> dict:
    """The manifest's committed shards (empty before the first commit)."""
    try:
        return json.loads((out / "manifest.json").read_text())["shards"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def kill_after_commits(cmd: list[str], out: Path, env: dict, commits: int = 2) -> dict:
    """Start ``cmd`` in its own process group, SIGKILL the group once ``commits`` shards are
    committed (the driver and every worker it started), and return the committed shards."""
    driver = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(committed(out)) < commits and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    return committed(out)


def result_mtimes(out: Path, shards) -> dict:
    """shard -> modification time of its results file, to show a rerun left it alone."""
    return {s: (out / "results" / f"{s}.parquet").stat().st_mtime_ns for s in shards}
