"""A job with a toy worker whose faults the tests choose, run through the real executors (``motionfleet.core.execution``).

``python tests/toy_job.py --out D --items N [--address A --workers W] [faults]`` plans N one-item
shards (ids item-000..), runs them with ``jobs.run_shards`` and exits like the CLI: 0, 1 with a
summary when shards failed, 1 with one line when the job folder is unwritable. The worker writes
``<pids>/<actor id>-<pid>`` when it starts so that a test can kill or stop it, and each row is a
pure function of its item, so every attempt writes the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from motionfleet.core import jobs
from motionfleet.core.execution import FaultPolicy, OutputUnwritable, RunContext, WarmWorker, shutdown
from motionfleet.core.io.rejections import rejected_schema
from motionfleet.core.jobfolder import failures
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.core.shards import Shard

RESULT_SCHEMA = pa.schema([("sample_id", pa.string()), ("repeat", pa.int32()), ("value", pa.float64())])


@dataclass
class ToyWorker:
    delay_s: float = 0.0
    fail: tuple = ()  # item ids that always raise
    oom_above: int = 0  # a run of more items than this raises MemoryError (0: never)
    slow_once: str = ""  # this item's first attempt sleeps until killed; markers in ``markers``
    markers: str = ""
    pids: str = ""

    def warm_up(self) -> None:
        if self.pids:
            actor = _actor_id()
            Path(self.pids).mkdir(parents=True, exist_ok=True)
            Path(self.pids, f"{actor}-{os.getpid()}").touch()

    def run(self, items: tuple) -> tuple[pa.Table, pa.Table, Timings]:
        if self.oom_above and len(items) > self.oom_above:
            raise MemoryError(f"toy: {len(items)} items do not fit")
        for item in items:
            if item in self.fail:
                raise RuntimeError(f"toy failure on {item}")
            if item == self.slow_once and not _first_touch(Path(self.markers, "slow-started")):
                time.sleep(600)
                Path(self.markers, "slow-finished").touch()
        time.sleep(self.delay_s * len(items))
        rows = [{"sample_id": item, "repeat": 0, "value": float(sum(map(ord, item)))} for item in items]
        return (pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), rejected_schema("sample_id").empty_table(),
                Timings({}, {"samples": len(items)}, [len(items)]))


@dataclass
class BatchingToyWorker(ToyWorker):
    """A toy whose batches take items of several shards (``execution.batcher``); with
    ``exit_at_batch`` its process exits when that batch starts, once (a marker in ``markers``)."""

    batch_items: int = 2
    exit_at_batch: int = 0
    calls: int = 0

    @staticmethod
    def item_key(item: str) -> tuple[str, int]:
        return item, 0

    @staticmethod
    def row_keys(table: pa.Table) -> list[tuple[str, int]]:
        return list(zip(table.column("sample_id").to_pylist(), table.column("repeat").to_pylist()))

    def run(self, items: tuple) -> tuple[pa.Table, pa.Table, Timings]:
        self.calls += 1
        if self.calls == self.exit_at_batch and not _first_touch(Path(self.markers, "exited")):
            os._exit(9)  # as a killed worker: no cleanup, no exception
        return super().run(items)


def _actor_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_actor_id() or "local"
    except Exception:
        return "local"


def _first_touch(marker: Path) -> bool:
    """True when ``marker`` already existed (creating it otherwise)."""
    try:
        marker.touch(exist_ok=False)
        return False
    except FileExistsError:
        return True


def plan(items: int, per_shard: int = 1) -> list[Shard]:
    ids = [f"item-{i:03d}" for i in range(items)]
    return [Shard(f"shard-{i // per_shard:05d}", tuple(ids[i : i + per_shard])) for i in range(0, items, per_shard)]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--items", type=int, default=10)
    p.add_argument("--per-shard", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--address")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--fail", nargs="*", default=())
    p.add_argument("--oom-above", type=int, default=0)
    p.add_argument("--slow-once", default="")
    p.add_argument("--pids", default="")
    p.add_argument("--shard-timeout", type=float)
    p.add_argument("--batch-items", type=int, default=0, help="batch across shards, this many items a batch")
    p.add_argument("--exit-at-batch", type=int, default=0)
    args = p.parse_args(argv)
    fields = (args.delay, tuple(args.fail), args.oom_above, args.slow_once, args.out, args.pids)
    make_worker = (WarmWorker(BatchingToyWorker, *fields, args.batch_items, args.exit_at_batch) if args.batch_items
                   else WarmWorker(_Build, ToyWorker(*fields)))
    job = {"job": "toy", "items": args.items, "per_shard": args.per_shard}
    try:
        context = RunContext(args.out, job, workers=args.workers, address=args.address, device="cpu",
                             batch_items=max(1, args.batch_items), policy=FaultPolicy(shard_timeout_s=args.shard_timeout))
        done, failed, _, _ = jobs.run_shards(context, plan(args.items, args.per_shard), make_worker)
    except OutputUnwritable as err:
        print(f"motionfleet: error: {err}", file=sys.stderr)
        return 1
    finally:
        shutdown()
    print(f"done {len(done)} failed {len(failed)} nodes {len({d.node for d in done if d.node})}")
    if failed:
        print(f"motionfleet: error: {failures.summary_line(args.out, failed)}", file=sys.stderr)
        return 1
    return 0


def _Build(worker: ToyWorker) -> ToyWorker:  # WarmWorker calls cls(*args), then warm_up()
    return worker


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
