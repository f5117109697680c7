"""Seconds per stage of a loop (denoiser, body model, loss, ...), device synchronised, and the one
timing type every family's worker returns.

``time.perf_counter`` around each stage; on CUDA the device is synchronised before reading the
clock, so a stage's time is its own and not the queue of kernels launched before it.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_started_at() -> float | None:
    """Epoch seconds this process started (Linux: ``/proc``, to 1 / CLK_TCK); None elsewhere."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        since_boot = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime + since_boot


class StageClock:
    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start


@dataclass
class Timings:
    """What a worker measured: seconds per stage, counts of what it produced (samples, frames,
    clips, ...) and per-batch records (dicts). Every family returns this type; its report turns
    the sums over shards into its headline figure (AITS, FPS). A batch record holds ``size``,
    ``start`` (epoch seconds the batch began) and ``seconds`` (its time), which ``motionfleet
    report`` plots over the job, and the family's own keys; the commit record of the shard keeps it."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    batches: list[dict] = field(default_factory=list)

    def add(self, other: "Timings") -> "Timings":
        for stage, value in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value
        for name, value in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        self.batches += other.batches
        return self


def total(timings: list[Timings]) -> Timings:
    """The sum of several shards' timings."""
    out = Timings()
    for t in timings:
        out.add(t)
    return out
