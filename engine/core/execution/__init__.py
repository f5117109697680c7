"""Execution: where and how a job's shards run.

* worker side (``worker``): the shard record ``ShardDone``, ``process_shard`` (run a shard, write
  its files), the out-of-memory split, the memory probes, ``WarmWorker``; ``batcher`` (model
  batches cut across a worker's open shards);
* driver side: the ``Executor`` interface (``executor``), the ``RunContext`` of a run (``context``),
  the fault policy (``policy``), the ledger that commits through the job folder and the progress
  bar (``ledger``), planning work (``planning``);
* the two executors: ``in_process`` (no Ray) and ``ray.scheduler``. ``executor_for`` chooses one,
  and is the one place that imports the ``ray`` package: nothing else here imports Ray, so the
  in-process path and the command line never load it.
"""

from __future__ import annotations

import sys

from motionfleet.core.execution.context import RunContext
from motionfleet.core.execution.executor import Executor
from motionfleet.core.execution.in_process import InProcessExecutor
from motionfleet.core.execution.ledger import RunOutcome
from motionfleet.core.execution.policy import FaultPolicy, OutputUnwritable
from motionfleet.core.execution.worker import ShardDone, WarmWorker, shard_done_from_summary

__all__ = ["Executor", "FaultPolicy", "InProcessExecutor", "OutputUnwritable", "RunContext", "RunOutcome", "ShardDone",
           "WarmWorker", "executor_for", "shard_done_from_summary", "shutdown"]


def executor_for(workers: int) -> type[Executor]:
    """The executor of a job with ``workers`` Ray actors: in this process for 0, else on Ray."""
    if workers == 0:
        return InProcessExecutor
    from motionfleet.core.execution.ray.scheduler import RayExecutor  # the one import of Ray's package

    return RayExecutor


def shutdown() -> None:
    """Stop the Ray cluster this process started or joined, if Ray was used at all."""
    if "ray" in sys.modules:
        executor_for(1).shutdown()
