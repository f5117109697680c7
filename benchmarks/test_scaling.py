"""How the Ray executor scales: throughput against workers and nodes, and the driver's own cost
per shard (shards per second it sustains when shards are tiny).

Whole jobs through ``jobs.run_shards`` with a CPU-bound toy worker (a fixed number of 256 x 256
fp32 matmuls per item, so an item costs the same on every worker) or a no-op one (tiny shards:
what remains is the driver's scheduling, Ray's round trip and the commit). Nodes are real Ray
nodes on loopback (``tests/loopback_cluster.py``). Results: ``benchmarks/results/scaling_cpu.json``.
On a 2-core machine shared with others, quote the load average next to every figure.
"""

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from motionfleet.core import jobs
from motionfleet.core.execution import RunContext, WarmWorker, shutdown
from motionfleet.core.io.rejections import rejected_schema
from motionfleet.core.shards import Shard

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scaling_cpu.json"
MATMULS_PER_ITEM = 50  # 1.7 GFLOP an item: ~0.1 s of one idle core here
SCHEMA = pa.schema([("sample_id", pa.string()), ("repeat", pa.int32()), ("value", pa.float64())])


@dataclass
class Timings:
    samples: int = 0

    def add(self, other: "Timings") -> None:
        self.samples += other.samples


class MatmulWorker:
    """``matmuls`` 256 x 256 products per item; rows depend only on the item."""

    def __init__(self, matmuls: int):
        self.matmuls = matmuls

    def warm_up(self) -> None:
        pass

    def run(self, items: tuple):
        import torch

        a = torch.ones(256, 256) / 256
        for _ in range(self.matmuls * len(items)):
            a = a @ a
        rows = [{"sample_id": item, "repeat": 0, "value": float(a[0, 0])} for item in items]
        return pa.Table.from_pylist(rows, schema=SCHEMA), rejected_schema("sample_id").empty_table(), Timings(len(items))


def plan(items: int, per_shard: int) -> list[Shard]:
    ids = [f"item-{i:05d}" for i in range(items)]
    return [Shard(f"shard-{i // per_shard:05d}", tuple(ids[i : i + per_shard])) for i in range(0, items, per_shard)]


def run_job(out: Path, items: int, per_shard: int, matmuls: int, workers: int, address=None) -> dict:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import benchmarks/
    job = {"job": "scaling", "items": items, "per_shard": per_shard, "matmuls": matmuls}
    start, cpu = time.perf_counter(), time.process_time()
    context = RunContext(str(out), job, workers=workers, address=address, device="cpu")
    done, failed, _, _ = jobs.run_shards(context, plan(items, per_shard), WarmWorker(MatmulWorker, matmuls))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu  # cpu: the driver's own (this process)
    assert not failed and len(done) == len(plan(items, per_shard))
    return {"items": items, "shards": len(done), "workers": workers, "wall_s": wall,
            "items_per_s": items / wall, "shards_per_s": len(done) / wall,
            "driver_cpu_ms_per_shard": 1e3 * cpu / len(done),
            "nodes": len({d.node for d in done if d.node}) or 1, "load_avg_1m": os.getloadavg()[0]}


def save(name: str, entry: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = {**entry, "machine": "2-core AMD EPYC (AVX2), shared"}
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))


@pytest.fixture
def embedded():
    yield
    shutdown()


@pytest.mark.parametrize("workers", [1, 2])
def test_throughput_against_workers_on_one_node(benchmark, tmp_path, embedded, workers):
    # Warm the cluster and the actors once: the timed job measures steady-state work, not start-up.
    run_job(tmp_path / "warm", items=4, per_shard=1, matmuls=1, workers=workers)
    entry = benchmark.pedantic(run_job, args=(tmp_path / "job", 24, 2, MATMULS_PER_ITEM, workers), rounds=1)
    save(f"one_node_workers_{workers}", entry)


def test_throughput_on_two_loopback_nodes(benchmark, tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from loopback_cluster import LoopbackCluster

    temp_dir = tempfile.mkdtemp(prefix="mf-bench-ray-")
    cluster = LoopbackCluster(Path(temp_dir), nodes=2)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"])
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        run_job(tmp_path / "warm", items=4, per_shard=1, matmuls=1, workers=2, address=cluster.address)
        entry = benchmark.pedantic(run_job, args=(tmp_path / "job", 24, 2, MATMULS_PER_ITEM, 2, cluster.address), rounds=1)
        save("two_nodes_workers_2", entry)
    finally:
        shutdown()
        cluster.close()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.mark.parametrize("workers", [0, 2])
def test_driver_shards_per_second_with_tiny_shards(benchmark, tmp_path, embedded, workers):
    if workers:
        run_job(tmp_path / "warm", items=4, per_shard=1, matmuls=0, workers=workers)
    entry = benchmark.pedantic(run_job, args=(tmp_path / "job", 1000, 1, 0, workers), rounds=1)
    save(f"tiny_shards_workers_{workers}", entry)
