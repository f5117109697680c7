"""Worker side: one shard in, its files written, its record (``ShardDone``) out.

The same code runs in the driver's process and in a Ray actor. A batch that runs out of memory is
split in halves and retried (``run_split_on_oom``); rows depend only on their item, so the bytes match.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import torch

from motionfleet.core.execution.batcher import ShardRun, batches_across_shards
from motionfleet.core.execution.policy import output_errors
from motionfleet.core.jobfolder.sink import write_shard
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.core.shards import Shard


@dataclass
class ShardDone:
    shard_id: str
    results: int
    rejected: int
    timings: Timings
    peak_rss_mb: float
    peak_device_mb: float
    write_s: float = 0.0  # seconds writing the shard's Parquet files
    elapsed_s: float = 0.0  # the worker's seconds on the shard, run and write
    node: str = ""  # Ray node id of the worker ("" in process)
    files: dict = field(default_factory=dict)  # table -> the written file's record (sink.write_shard)
    worker: str = ""  # host:pid of the process that ran it (the report counts distinct ones)
    started_at: float = 0.0  # epoch seconds the worker started it (a worker's shards may overlap)

    def summary(self) -> dict:
        """What the commit record keeps of this shard (the report is rebuilt from it)."""
        return {k: v for k, v in asdict(self).items() if k != "files"}


def shard_done_from_summary(summary: dict) -> ShardDone:
    """A committed shard's ``ShardDone`` again (its timings: the one ``stopwatch.Timings`` type)."""
    fields = {k: v for k, v in summary.items() if k in ShardDone.__dataclass_fields__}
    return ShardDone(**{**fields, "timings": Timings(**summary["timings"])})


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB: Linux's VmHWM, which starts afresh at exec
    (``ru_maxrss`` keeps the high-water mark of the process that forked this one)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def peak_device_mb() -> float:
    """Peak CUDA allocation of this process in MiB (0 without CUDA)."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


class WarmWorker:
    """Picklable factory: ``WarmWorker(Cls, *args)()`` builds ``Cls(*args)`` and warms it up, so each
    worker (a Ray actor or this process) owns its own model."""

    def __init__(self, cls: type, *args):
        self.cls, self.args = cls, args
        # run() may be called from several threads, and on Ray its CPU stages run on spare CPUs (``prefetch.stream``)
        self.concurrent_shards = getattr(cls, "concurrent_shards", False)
        self.batches_across_shards = batches_across_shards(cls)  # its batches may take items of several shards

    def __call__(self):
        worker = self.cls(*self.args)
        worker.warm_up()
        return worker


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.OutOfMemoryError))


def run_split_on_oom(worker, items: tuple):
    """``worker.run(items)``; when it runs out of memory, the items in two halves (recursively),
    their tables concatenated in order. Rows depend only on their item, so the bytes match."""
    try:
        return worker.run(items)
    except BaseException as err:
        if not _out_of_memory(err) or len(items) < 2:
            raise
    gc.collect()
    half = len(items) // 2
    first, second = run_split_on_oom(worker, items[:half]), run_split_on_oom(worker, items[half:])
    first[2].add(second[2])
    return (pa.concat_tables([first[0], second[0]]).combine_chunks(),
            pa.concat_tables([first[1], second[1]]).combine_chunks(), first[2])


@dataclass(frozen=True)
class Started:
    """When a worker took a shard: epoch seconds (comparable between the shards of a worker, also
    across threads) and its ``perf_counter``."""

    epoch: float
    clock: float

    @classmethod
    def now(cls) -> "Started":
        return cls(time.time(), time.perf_counter())


def process_shard(generator, shard: Shard, out_dir: str, metadata: dict[str, str], node: str = "") -> ShardDone:
    started = Started.now()
    results, rejected, timings = run_split_on_oom(generator, shard.items)
    return write_run(ShardRun(shard, results, rejected, timings), started, out_dir, metadata, node)


def write_run(run: ShardRun, started: Started, out_dir: str, metadata: dict[str, str], node: str = "") -> ShardDone:
    """Write a finished shard's files; its record."""
    assert run.results is not None and run.rejected is not None and run.timings is not None, "a run that failed has no files"
    written = time.perf_counter()
    with output_errors(out_dir):
        files = write_shard(out_dir, run.shard.shard_id, run.results, run.rejected, metadata)
    end = time.perf_counter()
    return ShardDone(shard_id=run.shard.shard_id, results=run.results.num_rows, rejected=run.rejected.num_rows,
                     timings=run.timings, peak_rss_mb=peak_rss_mb(), peak_device_mb=peak_device_mb(),
                     write_s=end - written, elapsed_s=end - started.clock, node=node, files=files,
                     worker=f"{socket.gethostname()}:{os.getpid()}", started_at=started.epoch)
