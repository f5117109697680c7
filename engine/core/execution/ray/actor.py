"""The model actor: one worker (one model) in a Ray actor, running the shards the scheduler sends it.

Each ``process`` call runs in a thread of the actor's own. A worker that batches across shards
(``execution.batcher``) puts every call's shard into one ``SharedBatcher``, so the calls in
flight fill the model's batches together; any other worker runs each call's shard alone.
"""

from __future__ import annotations

import os
from typing import Callable

import ray
import torch

from motionfleet.core.execution.batcher import ShardBatcher, SharedBatcher, batches_across_shards
from motionfleet.core.execution.ray.stream import RayStream
from motionfleet.core.execution.worker import ShardDone, Started, process_shard, run_split_on_oom, write_run
from motionfleet.core.io import prefetch, progress
from motionfleet.core.jobfolder.sink import check_visible
from motionfleet.core.shards import Shard


class RayShardWorker:
    def __init__(self, make_worker: Callable, threads: int):
        self.threads = threads
        torch.set_num_threads(threads)
        self.worker = make_worker()
        self.queue = None  # the driver's progress queue, given with each call
        self.shared = (SharedBatcher(ShardBatcher(self.worker, self._run_items, self._report))
                       if batches_across_shards(self.worker) else None)

    def ping(self, probe: tuple[str, str, str]) -> dict:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                "unseen": check_visible(probe)}

    def process(self, shard: Shard, out_dir: str, metadata: dict, queue=None, stage_streams: int = 0) -> ShardDone:
        """Run one shard; with ``stage_streams`` its CPU stages are Ray tasks on spare CPUs, at most
        that many open at once (``placement.stage_streams``; the actor runs several shards at once,
        each call in a thread of its own)."""
        torch.set_num_threads(self.threads)  # per thread: a concurrent call runs in a thread of Ray's pool
        self.queue = queue
        node = ray.get_runtime_context().get_node_id()
        with prefetch.placed(RayStream if stage_streams else None, stage_streams or None):
            if self.shared is None:
                with progress.reporting(lambda count: self._report(shard, count)):
                    return process_shard(self.worker, shard, out_dir, metadata, node)
            started = Started.now()
            run = self.shared.run(shard)  # its batches run in whichever call's thread finds none running
        if run.error is not None:
            raise run.error
        return write_run(run, started, out_dir, metadata, node)

    def _run_items(self, items: tuple):
        torch.set_num_threads(self.threads)  # the batch runs in whichever call's thread finds none running
        return run_split_on_oom(self.worker, items)

    def _report(self, shard: Shard, count: int) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait((shard.shard_id, count))
        except ray.exceptions.RayError:  # the driver's bar is gone; the shard's work is not
            pass
