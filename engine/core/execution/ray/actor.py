"""The model actor: one worker (one model) in a Ray actor, running the shards the scheduler sends it."""

from __future__ import annotations

import os
from typing import Callable

import ray
import torch

from motionfleet.core.execution.ray.stream import RayStream
from motionfleet.core.execution.worker import ShardDone, process_shard
from motionfleet.core.io import prefetch, progress
from motionfleet.core.jobfolder.sink import check_visible
from motionfleet.core.shards import Shard


class RayShardWorker:
    def __init__(self, make_worker: Callable, threads: int):
        self.threads = threads
        torch.set_num_threads(threads)
        self.worker = make_worker()

    def ping(self, probe: tuple[str, str, str]) -> dict:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                "unseen": check_visible(probe)}

    def process(self, shard: Shard, out_dir: str, metadata: dict, queue=None, stage_elsewhere: bool = False) -> ShardDone:
        """Run one shard; with ``stage_elsewhere`` its CPU stage is a Ray task on a spare CPU (the
        actor runs several shards at once, each call in a thread of its own)."""

        def report(count: int) -> None:
            if queue is None:
                return
            try:
                queue.put_nowait((shard.shard_id, count))
            except ray.exceptions.RayError:  # the driver's bar is gone; the shard's work is not
                pass

        torch.set_num_threads(self.threads)  # per thread: a concurrent call runs in a thread of Ray's pool
        with progress.reporting(report), prefetch.placed(RayStream if stage_elsewhere else None):
            return process_shard(self.worker, shard, out_dir, metadata, ray.get_runtime_context().get_node_id())
