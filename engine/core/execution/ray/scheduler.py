"""The Ray executor: pending shards on model actors spread over the cluster's nodes.

A worker that dies (its process, or its node) gives its shards back to the queue, a worker that
hangs past the shard timeout is killed and restarted, and the last shards are also run on idle
workers when they lag: the first attempt to finish is committed (attempts of one shard write
identical bytes; ``JobFolder.commit`` decides which is first). An error a Ray worker raised leaves
this package as itself, without Ray's wrapper (``plain_errors``).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError, RayTaskError
from ray.util.queue import Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from motionfleet.core.errors import DataError, NoWorkers
from motionfleet.core.execution.context import RunContext
from motionfleet.core.execution.executor import Executor
from motionfleet.core.execution.ledger import Ledger, RunOutcome, progress_bar
from motionfleet.core.execution.policy import OutputUnwritable, one_line
from motionfleet.core.execution.ray import cluster
from motionfleet.core.execution.ray.actor import RayShardWorker
from motionfleet.core.execution.ray.placement import (
    Placement,
    alive_nodes,
    placements,
    resources_line,
    shards_at_once,
    spare_cpus,
    stage_streams,
)
from motionfleet.core.jobfolder.sink import FolderNotShared, JobFolder
from motionfleet.core.shards import Shard

IN_FLIGHT_PER_WORKER = 2  # one running, one queued behind it so the worker never waits on the driver
PING_RETRY_S = 1.0  # how soon to ask a restarting actor again
POLL_S = 0.5  # how often the driver looks at timeouts and lagging shards while it waits
MAX_SHARDS_AT_ONCE = 64  # threads of one model actor, each waiting on its shard's items
PLAN_CHUNK = 64  # items a planning task takes (a Ray task costs ~ms; a video probe ~10 ms)


class RayExecutor(Executor):
    def run(self, make_worker: Callable, shards: list[Shard], folder: JobFolder) -> RunOutcome:
        """Run the pending shards on ``context.workers`` Ray actors spread over the cluster's nodes."""
        pending = self.pending(shards, folder)
        if not pending:
            return RunOutcome()
        with plain_errors():
            cluster.connect(self.context.address)
            with progress_bar(self.context, shards, pending) as bar:
                scheduler = _RayScheduler(make_worker, self.context, Ledger(folder, self.context, bar))
                try:
                    nodes = alive_nodes()
                    places = placements(nodes, min(self.context.workers, len(pending)), self.context.device)
                    streams = stage_streams(places, spare_cpus(nodes, places), getattr(make_worker, "concurrent_shards", False))
                    scheduler.start(places, self._shards_at_once(make_worker, places, nodes, pending), streams)
                    return scheduler.run(pending)
                finally:
                    scheduler.stop()

    def _shards_at_once(self, make_worker, places: list[Placement], nodes: list[dict], pending: list[Shard]) -> int:
        """Shards each actor holds at once: enough to fill a model batch for a worker that batches
        across shards (its calls share one batcher), else ``placement.shards_at_once``."""
        if getattr(make_worker, "batches_across_shards", False):
            return batch_fill(self.context.batch_items, pending)
        return shards_at_once(places, spare_cpus(nodes, places), getattr(make_worker, "concurrent_shards", False))

    @classmethod
    def map_ordered(cls, fn: Callable, items: Sequence, address: Optional[str]) -> list:
        """As Ray tasks of ``PLAN_CHUNK`` items over the cluster's CPUs when there is more than one chunk."""
        chunks = [list(items[i : i + PLAN_CHUNK]) for i in range(0, len(items), PLAN_CHUNK)]
        if len(chunks) < 2:
            return super().map_ordered(fn, items, address)
        with plain_errors():
            return cluster.run_chunks(fn, chunks, address)

    @classmethod
    def auto_workers(cls, address: Optional[str], device: str) -> tuple[int, str]:
        """One actor per GPU of the cluster for CUDA jobs, else one per node holding its CPUs."""
        with plain_errors():
            cluster.connect(address)
            nodes = alive_nodes()
        gpus = int(sum(n.get("Resources", {}).get("GPU", 0) for n in nodes))
        if device == "cuda" and gpus:
            return gpus, f"one per GPU of the cluster ({gpus} on {len(nodes)} nodes)"
        with_cpus = sum(1 for n in nodes if n.get("Resources", {}).get("CPU", 0) > 0)
        if not with_cpus:
            raise NoWorkers(f"no node of the Ray cluster offers a CPU (nodes: {len(nodes)})")
        return with_cpus, f"one per node of the cluster ({with_cpus}), each holding the node's CPUs"

    @classmethod
    def shutdown(cls) -> None:
        cluster.disconnect()


def batch_fill(batch_items: int, pending: list[Shard]) -> int:
    """Shards that hold a model batch's items when each holds as few as the smallest pending one,
    at most ``MAX_SHARDS_AT_ONCE`` (each is a thread of the actor)."""
    smallest = max(1, min(len(s.items) for s in pending))
    return max(1, min(MAX_SHARDS_AT_ONCE, -(-batch_items // smallest)))


@contextmanager
def plain_errors():
    """Re-raise the error a Ray worker raised as itself (without Ray's wrapper and its remote
    traceback); a dead worker's as a ``DataError`` naming its cause."""
    try:
        yield
    except (RayTaskError, RayActorError) as err:
        raise _plain(err) from None


def _plain(err: BaseException) -> BaseException:
    if isinstance(err, RayTaskError) and err.cause is not None:
        return _plain(err.cause)
    if isinstance(err, RayActorError):
        cause = getattr(err, "error_msg", "") or str(err)
        return DataError(f"a Ray worker died: {cause.strip().splitlines()[0]}")
    return err


@dataclass
class _Slot:
    """One actor and what the driver knows of it."""
    placement: Placement
    handle: Any = None  # the ActorHandle: Any, as Ray adds each method's .remote at run time, which its type hints lack
    ready: bool = False
    ping: object = None  # the ObjectRef of an outstanding ping (the actor is starting or restarting)
    in_flight: list = field(default_factory=list)  # ObjectRefs, in the actor's order
    busy_since: float = 0.0  # when the actor started its current shard
    ping_at: float = 0.0  # when to ask a restarting actor again


@dataclass
class _Attempt:
    shard: Shard
    slot: _Slot
    submitted: float
    timed_out: bool = False


class _RayScheduler:
    def __init__(self, make_worker: Callable, context: RunContext, ledger: Ledger):
        self.make_worker, self.ledger = make_worker, ledger
        self.out_dir, self.metadata, self.policy = context.out_dir, context.metadata, context.policy
        self.slots: list[_Slot] = []
        self.attempts: dict = {}  # ObjectRef -> _Attempt
        self.queue: deque[Shard] = deque()
        self.measured: list[float] = []
        self.no_worker_since: Optional[float] = None
        self.probe: Optional[tuple[str, str, str]] = None
        self.progress: Optional[Queue] = None  # a Ray queue of (shard id, items) the actors fill batch by batch
        self.at_once = 1  # shards an actor runs at the same time
        self.stage_streams = 0  # CPU stages an actor holds open at once as Ray tasks (0: in its threads)

    # actors
    def start(self, places: list[Placement], at_once: int = 1, stage_streams: int = 0) -> None:
        # On the driver's own node: a queue on a worker node would die with it and take the job along.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.progress = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.probe = self.ledger.folder.visibility_probe()  # each actor must read it back before any work
        self.at_once, self.stage_streams = at_once, stage_streams
        for place in places:
            slot = _Slot(place)
            self._create(slot)
            self.slots.append(slot)

    def _create(self, slot: _Slot) -> None:
        place = slot.placement
        Actor = ray.remote(RayShardWorker).options(
            num_cpus=place.cpus, num_gpus=place.gpus, max_restarts=-1, max_task_retries=0, max_concurrency=self.at_once,
            scheduling_strategy=NodeAffinitySchedulingStrategy(place.node_id, soft=True))
        slot.handle = Actor.remote(self.make_worker, place.threads)
        slot.ready, slot.in_flight = False, []
        slot.ping = slot.handle.ping.remote(self.probe)

    def stop(self) -> None:
        for slot in self.slots:
            ray.kill(slot.handle, no_restart=True)
        if self.progress is not None:
            self.progress.shutdown()
        if self.probe is not None:
            self.ledger.folder.storage.delete(self.probe[1])

    # the loop
    def run(self, pending: list[Shard]) -> RunOutcome:
        self.queue.extend(pending)
        total = len(pending)
        while len(self.ledger.finished) < total:
            self._fill()
            refs = list(self.attempts) + [s.ping for s in self.slots if s.ping is not None]
            ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S) if refs else ([], [])
            if ready:  # take every other result that is already there too
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            self._show_progress()
            for ref in ready:
                self._on_ready(ref)
            self._ping_again()
            self._time_out_hung()
            self._speculate()
            self._check_placed()
        return self.ledger.outcome

    def _show_progress(self) -> None:
        """Move the bar by the batches the actors finished since the last look."""
        if self.progress is None:
            return
        shards = {a.shard.shard_id: a.shard for a in self.attempts.values()}
        try:
            while not self.progress.empty():
                shard_id, count = self.progress.get_nowait()
                if shard_id in shards:
                    self.ledger.items_done(shards[shard_id], count)
        except RayError:  # the bar is a view: losing it (its node died) must not lose the job
            self.progress = None

    def _fill(self) -> None:
        """Give each ready actor the shards it runs at once and one queued behind them, but give an
        actor more than one only when the actors without work (starting ones too) still get one each."""
        for slot in self.slots:
            while slot.ready and len(slot.in_flight) < self.at_once + IN_FLIGHT_PER_WORKER - 1 and self.queue:
                if slot.in_flight and len(self.queue) <= sum(not s.in_flight for s in self.slots if s is not slot):
                    break
                shard = self.queue.popleft()
                if shard.shard_id not in self.ledger.finished:
                    self._submit(slot, shard)

    def _submit(self, slot: _Slot, shard: Shard) -> None:
        ref = slot.handle.process.remote(shard, self.out_dir, self.metadata, self.progress, self.stage_streams)
        if not slot.in_flight:
            slot.busy_since = time.monotonic()
        slot.in_flight.append(ref)
        self.attempts[ref] = _Attempt(shard, slot, time.monotonic())

    def _on_ready(self, ref) -> None:
        slot = next((s for s in self.slots if s.ping == ref), None)
        if slot is not None:
            self._on_ping(slot, ref)
        else:
            self._on_result(ref, self.attempts.pop(ref))

    def _on_ping(self, slot: _Slot, ref) -> None:
        slot.ping = None
        try:
            unseen = ray.get(ref)["unseen"]
        except ActorUnavailableError:  # restarting, or its node is not yet declared dead: ask again soon
            slot.ping_at = time.monotonic() + PING_RETRY_S
            return
        except RayActorError as err:
            if err.actor_init_failed:  # the model did not load: every worker would fail the same way
                raise _init_error(err) from None
            ray.kill(slot.handle, no_restart=True)
            self._create(slot)  # gone for good (its node was lost, say): a new actor in its place
            return
        if unseen:  # a node that cannot see the job folder (a local --out on a multi-node cluster)
            raise FolderNotShared(unseen)
        slot.ready = True

    def _ping_again(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if not slot.ready and slot.ping is None and slot.ping_at and slot.ping_at <= now:
                slot.ping_at, slot.ping = 0.0, slot.handle.ping.remote(self.probe)

    def _on_result(self, ref, attempt: _Attempt) -> None:
        slot, shard = attempt.slot, attempt.shard
        if ref in slot.in_flight:
            slot.in_flight.remove(ref)
            slot.busy_since = time.monotonic()
        try:
            report = ray.get(ref)
        except RayActorError as err:
            self._lost_worker(slot)
            retry = (self.ledger.error(shard, f"timed out after {self._timeout():.0f} s") if attempt.timed_out
                     else self.ledger.died(shard, one_line(err)))
            self._requeue(shard, retry)
            return
        except RayError as err:  # the shard raised (RayTaskError), or its speculative twin won (cancelled)
            cause = getattr(err, "cause", None) or err
            if isinstance(cause, OutputUnwritable):
                raise cause from None
            if shard.shard_id not in self.ledger.finished:
                self._requeue(shard, self.ledger.error(shard, one_line(cause)))
            return
        if self.ledger.commit(shard, report):
            self.measured.append(report.elapsed_s)
            self._cancel_others(shard)

    def _requeue(self, shard: Shard, retry: bool) -> None:
        running = any(a.shard.shard_id == shard.shard_id for a in self.attempts.values())
        if retry and not running:
            self.queue.appendleft(shard)

    def _lost_worker(self, slot: _Slot) -> None:
        """The actor died under a task: ask it to answer again (Ray restarts it, or says it is gone)."""
        slot.ready = False
        if slot.ping is None:
            slot.ping_at, slot.ping = 0.0, slot.handle.ping.remote(self.probe)

    def _cancel_others(self, shard: Shard) -> None:
        for ref, attempt in list(self.attempts.items()):
            if attempt.shard.shard_id == shard.shard_id:
                ray.cancel(ref)

    # hung, lagging and missing workers
    def _timeout(self) -> float:
        return self.policy.timeout_s(self.measured)

    def _time_out_hung(self) -> None:
        now, limit = time.monotonic(), self._timeout()
        for slot in self.slots:
            if slot.ready and slot.in_flight and now - slot.busy_since > limit:
                self.attempts[slot.in_flight[0]].timed_out = True
                slot.ready = False
                ray.kill(slot.handle, no_restart=False)  # its tasks fail; Ray restarts the actor

    def _speculate(self) -> None:
        if self.queue or not self.measured:
            return
        idle = [s for s in self.slots if s.ready and not s.in_flight]
        if not idle:
            return
        now, median = time.monotonic(), statistics.median(self.measured)
        counts: dict[str, int] = {}
        for attempt in self.attempts.values():
            counts[attempt.shard.shard_id] = counts.get(attempt.shard.shard_id, 0) + 1
        lagging = sorted((a for a in self.attempts.values()
                          if counts[a.shard.shard_id] == 1 and now - a.submitted > self.policy.speculate_factor * median),
                         key=lambda a: a.submitted)
        for slot, attempt in zip(idle, lagging):
            self._submit(slot, attempt.shard)

    def _check_placed(self) -> None:
        if any(s.ready for s in self.slots):
            self.no_worker_since = None
            return
        now = time.monotonic()
        self.no_worker_since = self.no_worker_since or now
        if now - self.no_worker_since > self.policy.placement_timeout_s:
            raise NoWorkers(f"no worker has been alive on the Ray cluster for {self.policy.placement_timeout_s:.0f} s "
                            f"(resources now: {resources_line()}); committed shards are kept, rerun when the "
                            f"cluster has room")


def _init_error(err) -> Exception:
    """The error that stopped an actor's constructor (a checkpoint the model cannot load, say)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, Exception) else RuntimeError(one_line(err))


