"""Where shards run: in this process, or on Ray actors (the only module that imports Ray).

Both executors hand each pending shard to a worker that writes the shard's files, then commit it
on the driver. Shards already committed are never scheduled again. A shard that raises is
retried; one that still fails after ``FaultPolicy.attempts`` is recorded in ``failed/`` and the
job goes on with the rest (the run returns the failures; the CLI exits 1 and a rerun retries
them). A batch that runs out of memory is split in halves and retried. On Ray, a worker that
dies (its process, or its node) gives its shards back to the queue, a worker that hangs past the
shard timeout is killed and restarted, and the last shards are also run on idle workers when
they lag: the first attempt to finish is committed (attempts of one shard write identical bytes).
"""

from __future__ import annotations

import errno
import math
import os
import socket
import statistics
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from tqdm import tqdm

from motionfleet.core import failures, prefetch
from motionfleet.core import progress as progress_of
from motionfleet.core.cluster import connect
from motionfleet.core.shards import Shard
from motionfleet.core.sink import FolderNotShared, JobFolder, check_visible, write_shard
from motionfleet.core.stopwatch import Timings

IN_FLIGHT_PER_WORKER = 2  # one running, one queued behind it so the worker never waits on the driver
PING_RETRY_S = 1.0  # how soon to ask a restarting actor again
POLL_S = 0.5  # how often the driver looks at timeouts and lagging shards while it waits


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


@dataclass(frozen=True)
class FaultPolicy:
    """How a job treats shards that fail, hang or lag."""

    attempts: int = 3  # tries of a shard that raises before it is recorded as failed
    shard_timeout_s: Optional[float] = None  # None: derived from the shard times measured so far
    timeout_factor: float = 5.0  # derived timeout = factor x the slowest shard measured ...
    timeout_floor_s: float = 60.0  # ... and never less than this
    first_timeout_s: float = 1800.0  # before any shard has been measured (model load, first compile)
    worker_deaths: int = 5  # a shard under which this many workers died is failed (it may be what kills them)
    speculate_factor: float = 2.0  # with the queue empty, a shard running this x the median also runs on an idle worker
    placement_timeout_s: float = 300.0  # no worker alive and placed for this long: the job stops

    def timeout_s(self, measured: list[float]) -> float:
        if self.shard_timeout_s is not None:
            return self.shard_timeout_s
        if not measured:
            return self.first_timeout_s
        return max(self.timeout_floor_s, self.timeout_factor * max(measured))


@dataclass
class RunOutcome:
    done: list[ShardDone] = field(default_factory=list)
    failed: list[failures.ShardFailure] = field(default_factory=list)


class OutputUnwritable(OSError):
    """The job folder cannot take more files (disk full, read-only, no permission): no retry helps."""


class NoWorkers(RuntimeError):
    """No worker could be placed on the cluster for ``placement_timeout_s``."""


_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def output_errors(out_dir: str):
    """Turn a disk-full / read-only / permission error writing the job folder into ``OutputUnwritable``."""
    try:
        yield
    except OSError as err:
        if err.errno not in _UNWRITABLE:
            raise
        where = f" ({err.filename})" if err.filename else ""
        raise OutputUnwritable(f"cannot write to the job folder {out_dir}: {err.strerror or err}{where}; free space or "
                               f"fix its permissions, then rerun (committed shards are kept)") from err


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
        self.concurrent_shards = getattr(cls, "concurrent_shards", False)  # run() may be called from several threads

    def __call__(self):
        worker = self.cls(*self.args)
        worker.warm_up()
        return worker


def _out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, (MemoryError, torch.OutOfMemoryError))


def run_split_on_oom(worker, items: tuple):
    """``worker.run(items)``; when it runs out of memory, the items in two halves (recursively),
    their tables concatenated in order. Rows depend only on their item, so the bytes match."""
    try:
        return worker.run(items)
    except BaseException as err:
        if not _out_of_memory(err) or len(items) < 2:
            raise
    import gc

    import pyarrow as pa

    gc.collect()
    half = len(items) // 2
    first, second = run_split_on_oom(worker, items[:half]), run_split_on_oom(worker, items[half:])
    first[2].add(second[2])
    return (pa.concat_tables([first[0], second[0]]).combine_chunks(),
            pa.concat_tables([first[1], second[1]]).combine_chunks(), first[2])


def process_shard(generator, shard: Shard, out_dir: str, metadata: dict[str, str], node: str = "") -> ShardDone:
    started_at = time.time()  # epoch: comparable between the shards of a worker, also across threads
    start = time.perf_counter()
    results, rejected, timings = run_split_on_oom(generator, shard.items)
    written = time.perf_counter()
    with output_errors(out_dir):
        files = write_shard(out_dir, shard.shard_id, results, rejected, metadata)
    end = time.perf_counter()
    return ShardDone(shard.shard_id, results.num_rows, rejected.num_rows, timings, *peak_memory_mb(), end - written,
                     end - start, node, files, f"{socket.gethostname()}:{os.getpid()}", started_at)


def one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0][:500] if text else type(err).__name__


@dataclass(frozen=True)
class Progress:
    """What the progress bar calls the job and its work items."""
    job: str
    unit: str

    def bar(self, shards: list[Shard], pending: list[Shard]) -> tqdm:
        total = sum(len(s.items) for s in shards)
        return tqdm(total=total, initial=total - sum(len(s.items) for s in pending), unit=self.unit,
                    desc=self.job, disable=os.environ.get("MOTIONFLEET_PROGRESS", "1") == "0")


class _Ledger:
    """Driver side: commits, failures and the attempts of each shard, shared by both executors."""

    def __init__(self, folder: JobFolder, out_dir: str, policy: "FaultPolicy", bar: tqdm):
        self.folder, self.out_dir, self.policy, self.bar = folder, out_dir, policy, bar
        self.outcome = RunOutcome()
        self.errors: dict[str, int] = {}
        self.deaths: dict[str, int] = {}
        self.finished: set[str] = set()
        self.shown: dict[str, int] = {}  # items of an unfinished shard the bar already counts

    def items_done(self, shard: Shard, count: int) -> None:
        """A batch of ``shard`` finished in a worker: the bar moves now, the commit adds the rest."""
        if shard.shard_id in self.finished:
            return
        count = min(count, len(shard.items) - self.shown.get(shard.shard_id, 0))
        self.shown[shard.shard_id] = self.shown.get(shard.shard_id, 0) + count
        self.bar.update(count)

    def commit(self, shard: Shard, report: ShardDone) -> bool:
        """Commit a finished attempt; False when another attempt of the shard already did (its files
        are removed: the first commit wins)."""
        if shard.shard_id in self.finished:
            self.folder.discard(report.files)
            return False
        with output_errors(self.out_dir):
            self.folder.commit(shard.shard_id, report.files, report.summary())
        failures.clear(self.out_dir, shard.shard_id)
        self.finished.add(shard.shard_id)
        self.outcome.done.append(report)
        self.bar.update(len(shard.items) - self.shown.pop(shard.shard_id, 0))
        return True

    def error(self, shard: Shard, err: str) -> bool:
        """An attempt raised (or timed out); True when the shard may be tried again."""
        self.errors[shard.shard_id] = self.errors.get(shard.shard_id, 0) + 1
        return self._retry_or_fail(shard, err, self.errors[shard.shard_id] < self.policy.attempts)

    def died(self, shard: Shard, err: str) -> bool:
        """The worker under an attempt died; True when the shard may be tried again."""
        self.deaths[shard.shard_id] = self.deaths.get(shard.shard_id, 0) + 1
        return self._retry_or_fail(shard, err, self.deaths[shard.shard_id] < self.policy.worker_deaths)

    def _retry_or_fail(self, shard: Shard, err: str, retry: bool) -> bool:
        if shard.shard_id in self.finished:
            return False
        if retry:
            return True
        attempts = self.errors.get(shard.shard_id, 0) + self.deaths.get(shard.shard_id, 0)
        failure = failures.ShardFailure(shard.shard_id, err, attempts)
        failures.record(self.out_dir, failure)
        self.finished.add(shard.shard_id)
        self.bar.update(-self.shown.pop(shard.shard_id, 0))
        self.outcome.failed.append(failure)
        return False


def run_in_process(make_worker: Callable, shards: list[Shard], folder: JobFolder, out_dir: str,
                   metadata: dict[str, str], progress: Progress, policy: FaultPolicy = FaultPolicy()) -> RunOutcome:
    pending = [s for s in shards if not folder.is_committed(s.shard_id)]
    if not pending:
        return RunOutcome()
    worker = make_worker()
    with progress.bar(shards, pending) as bar:
        ledger = _Ledger(folder, out_dir, policy, bar)
        for shard in pending:
            while True:
                try:
                    with progress_of.reporting(lambda count, shard=shard: ledger.items_done(shard, count)):
                        done = process_shard(worker, shard, out_dir, metadata)
                    ledger.commit(shard, done)
                    break
                except OutputUnwritable:
                    raise
                except Exception as err:  # any other error is this shard's: retried, then recorded
                    if not ledger.error(shard, one_line(err)):
                        break
    return ledger.outcome


def run_on_ray(make_worker: Callable, shards: list[Shard], folder: JobFolder, out_dir: str,
               metadata: dict[str, str], progress: Progress, workers: int, address: Optional[str],
               device: str, policy: FaultPolicy = FaultPolicy()) -> RunOutcome:
    """Run the pending shards on ``workers`` Ray actors spread over the cluster's nodes."""
    pending = [s for s in shards if not folder.is_committed(s.shard_id)]
    if not pending:
        return RunOutcome()
    connect(address)
    with progress.bar(shards, pending) as bar:
        scheduler = _RayScheduler(make_worker, out_dir, metadata, policy, _Ledger(folder, out_dir, policy, bar))
        try:
            nodes = _alive_nodes()
            places = placements(nodes, min(workers, len(pending)), device)
            scheduler.start(places, shards_at_once(places, spare_cpus(nodes, places),
                                                   getattr(make_worker, "concurrent_shards", False)))
            return scheduler.run(pending)
        finally:
            scheduler.stop()


@dataclass(frozen=True)
class Placement:
    """One actor: the node it is placed on and what it holds there."""
    node_id: str
    cpus: float
    gpus: float

    @property
    def threads(self) -> int:
        return max(1, math.floor(self.cpus))


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def placements(nodes: list[dict], workers: int, device: str) -> list[Placement]:
    """Spread ``workers`` actors over the nodes that have the resource they need, each the next
    to the node with the most of it left per actor. A CPU actor holds its equal share of its node's
    CPUs; a GPU actor one GPU (a share when there are more actors than GPUs) and its share of
    half the node's CPUs, the other half left to the CPU stages (video decoding) and Ray itself."""
    key = "GPU" if device == "cuda" else "CPU"
    usable = [n for n in nodes if n.get("Resources", {}).get(key, 0) > 0]
    if not usable:
        raise NoWorkers(f"no node of the Ray cluster offers a {key} (nodes: {len(nodes)})")
    counts = [0] * len(usable)
    for _ in range(workers):
        best = max(range(len(usable)), key=lambda i: (usable[i]["Resources"][key] / (counts[i] + 1), -i))
        counts[best] += 1
    out = []
    for node, count in zip(usable, counts):
        cpus, gpus = node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0)
        for _ in range(count):
            if key == "GPU":
                out.append(Placement(node["NodeID"], cpus / 2 / count, min(1.0, gpus / count)))
            else:
                out.append(Placement(node["NodeID"], cpus / count, 0.0))
    return out


def spare_cpus(nodes: list[dict], places: list[Placement]) -> float:
    """CPUs of the cluster that no model actor holds: where CPU stages (video decoding) run."""
    return sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes) - sum(p.cpus for p in places)


def shards_at_once(places: list[Placement], spare: float, concurrent: bool) -> int:
    """Shards each actor runs at the same time. One, unless the runner takes concurrent shards and
    the actors leave CPUs spare: then each shard's CPU stage is a one-CPU Ray task on a spare CPU
    (``prefetch.stream``), and each actor runs one shard more than its share of the spare CPUs, so
    that every spare CPU decodes and one shard's clips are always ready for the model."""
    if not concurrent or spare < 1 or not places:
        return 1
    return 1 + math.ceil(math.floor(spare) / len(places))


@dataclass
class _Slot:
    """One actor and what the driver knows of it."""
    placement: Placement
    handle: object = None
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
    def __init__(self, make_worker: Callable, out_dir: str, metadata: dict, policy: FaultPolicy, ledger: _Ledger):
        self.make_worker, self.out_dir, self.metadata, self.policy, self.ledger = make_worker, out_dir, metadata, policy, ledger
        self.slots: list[_Slot] = []
        self.attempts: dict = {}  # ObjectRef -> _Attempt
        self.queue: deque[Shard] = deque()
        self.measured: list[float] = []
        self.no_worker_since: Optional[float] = None
        self.probe: Optional[tuple[str, str, str]] = None
        self.progress = None  # a Ray queue of (shard id, items) the actors fill batch by batch
        self.at_once = 1  # shards an actor runs at the same time (> 1: their CPU stages run as Ray tasks)

    # actors
    def start(self, places: list[Placement], at_once: int = 1) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's own node: a queue on a worker node would die with it and take the job along.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.progress = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.probe = self.ledger.folder.visibility_probe()  # each actor must read it back before any work
        self.at_once = at_once
        for place in places:
            slot = _Slot(place)
            self._create(slot)
            self.slots.append(slot)

    def _create(self, slot: _Slot) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        place = slot.placement
        Actor = ray.remote(_RayShardWorker).options(
            num_cpus=place.cpus, num_gpus=place.gpus, max_restarts=-1, max_task_retries=0, max_concurrency=self.at_once,
            scheduling_strategy=NodeAffinitySchedulingStrategy(place.node_id, soft=True))
        slot.handle = Actor.remote(self.make_worker, place.threads)
        slot.ready, slot.in_flight = False, []
        slot.ping = slot.handle.ping.remote(self.probe)

    def stop(self) -> None:
        import ray

        for slot in self.slots:
            ray.kill(slot.handle, no_restart=True)
        if self.progress is not None:
            self.progress.shutdown()
        if self.probe is not None:
            self.ledger.folder.storage.delete(self.probe[1])

    # the loop
    def run(self, pending: list[Shard]) -> RunOutcome:
        import ray

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
        from ray.exceptions import RayError

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
        ref = slot.handle.process.remote(shard, self.out_dir, self.metadata, self.progress, self.at_once > 1)
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
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

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
        import ray
        from ray.exceptions import RayActorError, RayError

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
        import ray

        for ref, attempt in list(self.attempts.items()):
            if attempt.shard.shard_id == shard.shard_id:
                ray.cancel(ref)

    # hung, lagging and missing workers
    def _timeout(self) -> float:
        return self.policy.timeout_s(self.measured)

    def _time_out_hung(self) -> None:
        import ray

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
                            f"(resources now: {_resources_line()}); committed shards are kept, rerun when the "
                            f"cluster has room")


def _resources_line() -> str:
    import ray

    return ", ".join(f"{k} {v:g}" for k, v in sorted(ray.available_resources().items()) if k in ("CPU", "GPU")) or "none"


def _init_error(err) -> Exception:
    """The error that stopped an actor's constructor (a checkpoint the model cannot load, say)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, Exception) else RuntimeError(one_line(err))


class _RayShardWorker:
    def __init__(self, make_worker: Callable, threads: int):
        import torch

        self.threads = threads
        torch.set_num_threads(threads)
        self.worker = make_worker()

    def ping(self, probe: tuple[str, str, str]) -> dict:
        import ray
        import torch

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                "unseen": check_visible(probe)}

    def process(self, shard: Shard, out_dir: str, metadata: dict, progress=None, stage_elsewhere: bool = False) -> ShardDone:
        """Run one shard; with ``stage_elsewhere`` its CPU stage is a Ray task on a spare CPU (the
        actor runs several shards at once, each call in a thread of its own)."""
        import ray
        import torch

        def report(count: int) -> None:
            if progress is None:
                return
            try:
                progress.put_nowait((shard.shard_id, count))
            except ray.exceptions.RayError:  # the driver's bar is gone; the shard's work is not
                pass

        torch.set_num_threads(self.threads)  # per thread: a concurrent call runs in a thread of Ray's pool
        with progress_of.reporting(report), prefetch.placed(RayStream if stage_elsewhere else None):
            return process_shard(self.worker, shard, out_dir, metadata, ray.get_runtime_context().get_node_id())


@dataclass(frozen=True)
class _StageError:
    """The producer's exception, handed over as the stream's last item."""
    error: BaseException


def _produce(produce: Callable) -> object:
    """A CPU stage as a Ray generator task: its items, then its error if it raised one."""
    try:
        yield from prefetch.one_torch_thread(produce)
    except Exception as err:  # re-raised by the consumer (a RejectedInput, say)
        yield _StageError(err)


class RayStream:
    """``prefetch.stream`` as a Ray streaming-generator task of one CPU, wherever the cluster has
    one free (Ray's default policy: the caller's node first); Ray pauses the task while ``depth``
    of its items wait unconsumed (``_generator_backpressure_num_objects``), so the memory of a
    stream is bounded as in a thread. A failed task fails the shard, which the driver retries."""

    remote = True

    def __init__(self, produce: Callable, depth: int):
        import ray

        task = ray.remote(_produce).options(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=depth)
        self.items = task.remote(produce)
        self.wait_s = 0.0
        self.finished = False

    def __iter__(self):
        import ray

        while True:
            start = time.perf_counter()
            ref = next(self.items, None)
            item = None if ref is None else ray.get(ref)
            self.wait_s += time.perf_counter() - start
            if ref is None:
                self.finished = True
                return
            if isinstance(item, _StageError):
                self.finished = True
                raise item.error
            yield item

    def __enter__(self) -> "RayStream":
        return self

    def __exit__(self, *exc) -> None:
        if not self.finished:  # the consumer stopped early: stop the task too
            import ray

            ray.cancel(self.items)


def shutdown() -> None:
    from motionfleet.core.cluster import disconnect

    disconnect()
