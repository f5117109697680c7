"""Where shards run: in this process, or on Ray actors (the only module that imports Ray).

Both executors hand each pending shard to a worker that writes the shard's files, then commit it
in the manifest on the driver. Shards already committed are never scheduled again.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

from tqdm import tqdm

from motionfleet.core.shards import Shard
from motionfleet.core.sink import Manifest, write_shard
from motionfleet.dhvae.runner import Timings


@dataclass
class ShardDone:
    shard_id: str
    results: int
    rejected: int
    timings: Timings
    peak_rss_mb: float
    peak_device_mb: float
    write_s: float = 0.0  # seconds writing the shard's Parquet files


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB: Linux's VmHWM, which starts afresh at exec
    (``ru_maxrss`` keeps the high-water mark of the process that forked this one)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        import sys

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def peak_memory_mb() -> tuple[float, float]:
    """(peak resident set of this process, peak CUDA allocation) in MiB."""
    import torch

    device = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return peak_rss_mb(), device


class WarmWorker:
    """Picklable factory: ``WarmWorker(Cls, *args)()`` builds ``Cls(*args)`` and warms it up, so each
    worker (a Ray actor or this process) owns its own model."""

    def __init__(self, cls: type, *args):
        self.cls, self.args = cls, args

    def __call__(self):
        worker = self.cls(*self.args)
        worker.warm_up()
        return worker


def process_shard(generator, shard: Shard, out_dir: str, metadata: dict[str, str]) -> ShardDone:
    results, rejected, timings = generator.run(shard.items)
    start = time.perf_counter()
    write_shard(out_dir, shard.shard_id, results, rejected, metadata)
    write_s = time.perf_counter() - start
    return ShardDone(shard.shard_id, results.num_rows, rejected.num_rows, timings, *peak_memory_mb(), write_s)


@dataclass(frozen=True)
class Progress:
    """What the progress bar calls the job and its work items."""
    job: str
    unit: str

    def bar(self, shards: list[Shard], pending: list[Shard]) -> tqdm:
        total = sum(len(s.items) for s in shards)
        return tqdm(total=total, initial=total - sum(len(s.items) for s in pending), unit=self.unit,
                    desc=self.job, disable=os.environ.get("MOTIONFLEET_PROGRESS", "1") == "0")


def run_in_process(make_worker: Callable, shards: list[Shard], manifest: Manifest, out_dir: str,
                   metadata: dict[str, str], progress: Progress) -> list[ShardDone]:
    pending = [s for s in shards if not manifest.is_committed(s.shard_id)]
    if not pending:
        return []
    worker = make_worker()
    done = []
    with progress.bar(shards, pending) as bar:
        for shard in pending:
            report = process_shard(worker, shard, out_dir, metadata)
            manifest.commit(shard.shard_id, {"results": report.results, "rejected": report.rejected})
            done.append(report)
            bar.update(len(shard.items))
    return done


def _init_ray(address: Optional[str], num_cpus: Optional[int]) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="ERROR")
        return
    # An embedded single-machine cluster: no token auth, no dashboard, a short temp folder
    # (Ray's socket paths must stay under the 107-byte AF_UNIX limit).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level="ERROR",
             _temp_dir=tempfile.mkdtemp(prefix="mf-ray-"))


def run_on_ray(make_worker: Callable, shards: list[Shard], manifest: Manifest, out_dir: str,
               metadata: dict[str, str], progress: Progress, workers: int, address: Optional[str],
               device: str) -> list[ShardDone]:
    """One actor per worker, each holding its own model; at most two shards in flight per actor.

    CPU actors ask for a fraction of a CPU so that Ray's own tasks are never starved (on a
    2-CPU machine, two whole-CPU actors leave nothing for anything else); each actor sets its
    torch thread count to its share of the machine instead.
    """
    import ray

    pending = [s for s in shards if not manifest.is_committed(s.shard_id)]
    if not pending:
        return []
    _init_ray(address, None)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // workers)
    options = {"num_gpus": 1} if device == "cuda" else {"num_cpus": min(1.0, cpus / (workers + 1))}
    Worker = ray.remote(max_restarts=2, max_task_retries=2, **options)(_RayShardWorker)
    actors = [Worker.remote(make_worker, threads) for _ in range(min(workers, len(pending)))]
    queue, in_flight, done = list(reversed(pending)), {}, []
    with progress.bar(shards, pending) as bar:
        for actor in actors:
            for _ in range(2):
                _submit(queue, in_flight, actor, out_dir, metadata)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor, shard = in_flight.pop(ready[0])
            report = ray.get(ready[0])
            manifest.commit(shard.shard_id, {"results": report.results, "rejected": report.rejected})
            done.append(report)
            bar.update(len(shard.items))
            _submit(queue, in_flight, actor, out_dir, metadata)
    return done


def _submit(queue: list, in_flight: dict, actor, out_dir: str, metadata: dict) -> None:
    if queue:
        shard = queue.pop()
        in_flight[actor.process.remote(shard, out_dir, metadata)] = (actor, shard)


class _RayShardWorker:
    def __init__(self, make_worker: Callable, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.worker = make_worker()

    def process(self, shard: Shard, out_dir: str, metadata: dict) -> ShardDone:
        return process_shard(self.worker, shard, out_dir, metadata)


def shutdown() -> None:
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
