"""The executor interface: what runs a job's pending shards, and its planning work."""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

from motionfleet.core.execution.context import RunContext
from motionfleet.core.execution.ledger import RunOutcome
from motionfleet.core.jobfolder.sink import JobFolder
from motionfleet.core.shards import Shard

LOCAL_THREADS = 8  # planning probes are mostly I/O and FFmpeg, which release the GIL


class Executor(ABC):
    """Hands each pending shard of a job to a worker that writes the shard's files, then commits it
    on the driver (``Ledger``). Shards already committed are never scheduled again. A shard that
    raises is retried; one that still fails after ``FaultPolicy.attempts`` is recorded in
    ``failed/`` and the job goes on with the rest (the run returns the failures; the CLI exits 1 and
    a rerun retries them). A batch that runs out of memory is split in halves and retried."""

    def __init__(self, context: RunContext):
        self.context = context

    @abstractmethod
    def run(self, make_worker: Callable, shards: list[Shard], folder: JobFolder) -> RunOutcome:
        """Run the shards of ``shards`` that ``folder`` has not committed. ``make_worker`` builds a
        worker (it must be picklable: a Ray actor builds its own)."""

    @staticmethod
    def pending(shards: list[Shard], folder: JobFolder) -> list[Shard]:
        return [s for s in shards if not folder.is_committed(s.shard_id)]

    @classmethod
    def map_ordered(cls, fn: Callable, items: Sequence, address: Optional[str]) -> list:
        """``[fn(item) for item in items]`` for planning, on a few threads of this process."""
        with ThreadPoolExecutor(LOCAL_THREADS) as pool:
            return list(pool.map(fn, items))

    @classmethod
    def shutdown(cls) -> None:
        """Release what the executor holds beyond a run (a Ray cluster)."""
