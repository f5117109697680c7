"""Kill the embedded Ray cluster's processes soon after its driver dies.

Ray ties its GCS and raylet to the driver (PR_SET_PDEATHSIG), but the raylet's agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) notice a dead raylet only after trying to
report to the dead GCS: measured 20-40 s on a loaded 2-core machine, minutes under more load.
``python -I reaper.py DRIVER_PID PID:START_TICKS ...`` (this file alone: it needs nothing of the engine) runs in its own session,
polls the driver, and SIGKILLs the listed processes once it is gone (the start time guards
against a reused pid). The driver stops it on a clean shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first); [] when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_ticks(pid: int) -> int | None:
    """The start time of a live (not zombie) process, in clock ticks since boot (field 22)."""
    fields = _stat(pid)
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def watch(driver: int) -> subprocess.Popen | None:
    """Start a reaper for the current descendants of ``driver`` (Linux only; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    marks = [f"{pid}:{start_ticks(pid)}" for pid in descendants(driver) if start_ticks(pid) is not None]
    return subprocess.Popen([sys.executable, "-I", __file__, str(driver), *marks],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def main(argv: list[str]) -> None:
    driver, marks = int(argv[0]), [tuple(map(int, mark.split(":"))) for mark in argv[1:]]
    while start_ticks(driver) is not None:
        time.sleep(POLL_S)
    for pid, ticks in marks:
        if start_ticks(pid) == ticks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
