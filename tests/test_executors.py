"""Executors without Ray: failing shards, out-of-memory splits, a full or read-only disk, placement
and the shard timeout's derivation. (With Ray and several nodes: test_cluster.py.)"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import toy_job
from killed_job import committed, result_mtimes

from motionfleet.core import jobs
from motionfleet.core.errors import NoWorkers
from motionfleet.core.execution import FaultPolicy, RunContext, WarmWorker, worker_layout
from motionfleet.core.execution.ray.placement import placements, shards_at_once, spare_cpus, stage_streams
from motionfleet.core.jobfolder import failures
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.core.options import UsageError

TOY = str(Path(__file__).with_name("toy_job.py"))
QUIET = {**os.environ, "MOTIONFLEET_PROGRESS": "0"}


def toy(tmp_path, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOY, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=QUIET)


def assert_exactly_once(out, items: int) -> None:
    ids = read_results(out).column("sample_id").to_pylist()
    assert sorted(ids) == [f"item-{i:03d}" for i in range(items)]


def run_toy(out, worker, items, per_shard=1, policy=FaultPolicy()):
    job = {"job": "toy", "items": items, "per_shard": per_shard}
    context = RunContext(str(out), job, workers=0, device="cpu", policy=policy)
    return jobs.run_shards(context, toy_job.plan(items, per_shard), WarmWorker(toy_job._Build, worker))


def test_a_failing_shard_is_recorded_the_rest_commits_and_a_rerun_retries_only_it(tmp_path):
    out = tmp_path / "job"
    first = toy(tmp_path, "--out", str(out), "--items", "6", "--fail", "item-002")
    assert first.returncode == 1
    assert "1 shard(s) failed" in first.stderr and "RuntimeError: toy failure on item-002" in first.stderr
    assert "Traceback" not in first.stderr
    [failure] = failures.read_all(out)
    assert (failure.shard_id, failure.attempts) == ("shard-00002", 3)
    records = committed(out)
    assert sorted(records) == [f"shard-{i:05d}" for i in (0, 1, 3, 4, 5)]
    before = result_mtimes(out, records)

    rerun = toy(tmp_path, "--out", str(out), "--items", "6")
    assert rerun.returncode == 0, rerun.stderr
    assert "done 1 failed 0" in rerun.stdout  # only the failed shard ran again
    assert before == result_mtimes(out, records)
    assert failures.read_all(out) == []
    assert_exactly_once(out, 6)


def test_an_out_of_memory_shard_is_split_and_writes_the_same_bytes(tmp_path):
    done, failed, _, _ = run_toy(tmp_path / "split", toy_job.ToyWorker(oom_above=1), items=8, per_shard=4)
    assert failed == [] and [d.timings.batches for d in done] == [[1, 1, 1, 1], [1, 1, 1, 1]]
    run_toy(tmp_path / "whole", toy_job.ToyWorker(), items=8, per_shard=4)
    assert read_results(tmp_path / "split").equals(read_results(tmp_path / "whole"))


def test_batches_span_shards_and_a_worker_dying_between_two_batches_of_a_shard_commits_it_once(tmp_path):
    """Shards of 3 in batches of 2: shard 0's items sit in batches 1 and 2, shard 1's in 2 and 3.
    The process exits as batch 3 starts: shard 0 is committed, shard 1 (one item done) is not;
    the rerun redoes shard 1 alone and leaves shard 0 as it was."""
    out = tmp_path / "job"
    args = ("--out", str(out), "--items", "6", "--per-shard", "3", "--batch-items", "2")
    first = toy(tmp_path, *args, "--exit-at-batch", "3")
    assert first.returncode == 9
    assert sorted(committed(out)) == ["shard-00000"]
    assert pq.read_table(out / committed(out)["shard-00000"]["files"]["results"]["path"]).num_rows == 3
    before = result_mtimes(out, committed(out))
    rerun = toy(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "done 1 failed 0" in rerun.stdout
    assert before == result_mtimes(out, {"shard-00000": committed(out)["shard-00000"]})
    assert_exactly_once(out, 6)
    assert read_results(out).equals(read_results(_one_shard_per_batch(tmp_path, 6, 3)))


def _one_shard_per_batch(tmp_path, items: int, per_shard: int):
    out = tmp_path / "alone"
    result = toy(tmp_path, "--out", str(out), "--items", str(items), "--per-shard", str(per_shard))
    assert result.returncode == 0, result.stderr
    return out


def test_a_model_actor_fills_its_batches_from_several_shards(tmp_path):
    out = tmp_path / "ray"
    result = toy(tmp_path, "--out", str(out), "--items", "12", "--per-shard", "1", "--batch-items", "4", "--workers", "1",
                 timeout=600)
    assert result.returncode == 0, result.stderr
    batches = sorted(b for record in committed(out).values() for b in record["summary"]["timings"]["batches"])
    assert sum(batches) == 12 and max(batches) > 1  # one-item shards, batched together on the actor
    assert read_results(out).equals(read_results(_one_shard_per_batch(tmp_path, 12, 1)))


def test_workers_auto_on_one_machine_runs_in_process_unless_it_has_several_gpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert worker_layout("auto", None, "cpu") == (0, "a CPU machine: one worker holding every core")
    assert worker_layout(2, None, "cpu") == (2, "as asked")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(UsageError, match="--workers 3: this machine has 2 CPUs and each worker holds at least one"):
        worker_layout(3, None, "cpu")  # each actor would share a core and load its own model
    assert worker_layout(3, "127.0.0.1:6379", "cpu") == (3, "as asked")  # a cluster's CPUs are its own
    assert worker_layout(3, None, "cuda") == (3, "as asked")  # GPU actors share a GPU by design
    for gpus, workers in ((1, 0), (4, 4)):
        monkeypatch.setattr(torch.cuda, "device_count", lambda gpus=gpus: gpus)
        assert worker_layout("auto", None, "cuda")[0] == workers


def _unshare_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _unshare_mount_works(), reason="needs `unshare -m` and tmpfs mounts (root)")


@needs_mount
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_disk_stops_the_job_with_one_line_and_nothing_corrupt(tmp_path, fault):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # A 128 KiB tmpfs holds a few shards, then ENOSPC; "read-only" mounts it read-only from the start.
    options = "size=128k" if fault == "full" else "size=128k,ro"
    script = (f"mount -t tmpfs -o {options} tmpfs {mnt} && {sys.executable} {TOY} --out {mnt}/job --items 40; "
              f"echo rc=$?; cp -r {mnt}/job {tmp_path}/copy 2>/dev/null; true")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=180, cwd=tmp_path,
                            env=QUIET)
    assert "rc=1" in result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("motionfleet: error: cannot write to the job folder"), result.stderr
    assert ("No space left on device" if fault == "full" else "Read-only file system") in errors[0]
    records = committed(tmp_path / "copy") if fault == "full" else {}
    for record in records.values():  # every committed shard is whole
        assert pq.read_table(tmp_path / "copy" / record["files"]["results"]["path"]).num_rows == 1


NO_RAY_IN_PROCESS = ("import sys, runpy; sys.argv = [sys.argv[1], *sys.argv[2:]]; "
                     "code = runpy.run_path(sys.argv[0], run_name='toy').get('main')(sys.argv[1:]); "
                     "assert 'ray' not in sys.modules, 'a job with --workers 0 imported ray'; sys.exit(code)")


def test_a_job_in_this_process_never_imports_ray(tmp_path):
    """Only ``executor_for`` imports the Ray package, and only for workers > 0 (the import rules in
    pyproject.toml check the static imports; this checks the one lazy import)."""
    done = subprocess.run([sys.executable, "-c", NO_RAY_IN_PROCESS, TOY, "--out", str(tmp_path / "job"), "--items", "2"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=QUIET)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp_path / "job", 2)


def test_actors_spread_over_nodes_sized_by_what_each_node_has():
    nodes = [{"NodeID": "head", "Resources": {"CPU": 0.0}},
             {"NodeID": "a", "Resources": {"CPU": 8.0, "GPU": 2.0}},
             {"NodeID": "b", "Resources": {"CPU": 4.0}}]
    cpu = placements(nodes, 3, "cpu")
    assert sorted((p.node_id, p.cpus, p.threads) for p in cpu) == [("a", 4.0, 4), ("a", 4.0, 4), ("b", 4.0, 4)]
    gpu = placements(nodes, 2, "cuda")
    assert [(p.node_id, p.gpus, p.cpus, p.threads) for p in gpu] == [("a", 1.0, 2.0, 2)] * 2
    with pytest.raises(NoWorkers):
        placements(nodes[2:], 1, "cuda")


def test_shards_run_at_once_when_the_models_leave_cpus_for_decoding():
    nodes = [{"NodeID": "a", "Resources": {"CPU": 16.0, "GPU": 2.0}}, {"NodeID": "b", "Resources": {"CPU": 5.0}}]
    gpu = placements(nodes, 2, "cuda")  # 4 CPUs each: 8 of a's and all of b's are spare
    assert spare_cpus(nodes, gpu) == 13.0
    assert shards_at_once(gpu, 13.0, concurrent=True) == 1 + 7
    assert shards_at_once(gpu, 13.0, concurrent=False) == 1  # a runner that takes one shard at a time
    cpu_nodes = [{"NodeID": "a", "Resources": {"CPU": 8.0}}, nodes[1]]
    cpu = placements(cpu_nodes, 2, "cpu")  # an actor on each node holds all of it: decoding stays in the actor
    assert spare_cpus(cpu_nodes, cpu) == 0.0 and shards_at_once(cpu, 0.0, concurrent=True) == 1
    assert spare_cpus(nodes, placements(nodes, 2, "cpu")) == 5.0  # both on a: b decodes
    assert shards_at_once(placements(nodes[:1], 1, "cpu"), 5.0, True) == 6


def test_an_actor_holds_open_no_more_cpu_stages_than_its_share_of_the_spare_cpus():
    """A batching actor's call opens a CPU stage per span: within its share of the spare CPUs, each
    open stage has a CPU (a paused one keeps its CPU), and at least one when any CPU is spare."""
    nodes = [{"NodeID": "a", "Resources": {"CPU": 16.0, "GPU": 2.0}}, {"NodeID": "b", "Resources": {"CPU": 5.0}}]
    gpu = placements(nodes, 2, "cuda")
    assert stage_streams(gpu, 13.0, concurrent=True) == 6 and stage_streams(gpu, 13.0, concurrent=False) == 0
    assert stage_streams(gpu, 1.0, concurrent=True) == 1  # two actors, one spare CPU: one stage each, read in turn
    assert stage_streams(gpu, 0.5, concurrent=True) == 0  # no whole CPU spare: stages run in the actors


def test_the_shard_timeout_comes_from_measured_shard_times_unless_set():
    policy = FaultPolicy(timeout_factor=5.0, timeout_floor_s=60.0, first_timeout_s=900.0)
    assert policy.timeout_s([]) == 900.0
    assert policy.timeout_s([1.0, 2.0]) == 60.0
    assert policy.timeout_s([3.0, 40.0]) == 200.0
    assert FaultPolicy(shard_timeout_s=7.0).timeout_s([3.0, 40.0]) == 7.0


RAY_STREAM = """
import time
from functools import partial

import ray

from motionfleet.core.errors import RejectedInput
from motionfleet.core.execution.ray.stream import RayStream

def items(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise RejectedInput("truncated: decoding ended early")
        yield i

ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
with RayStream(partial(items, 5), 2) as stream:
    assert list(stream) == [0, 1, 2, 3, 4] and stream.remote
try:
    with RayStream(partial(items, 5, 3), 2) as stream:
        list(stream)
    raise AssertionError("no error")
except RejectedInput as err:
    assert err.reason == "truncated: decoding ended early"
with RayStream(partial(items, 10**6), 2) as stream:
    next(iter(stream))
deadline = time.monotonic() + 30
while ray.available_resources().get("CPU") != 2.0:  # the cancelled task gives its CPU back
    assert time.monotonic() < deadline, ray.available_resources()
    time.sleep(0.1)
print("ok")
"""


def test_a_ray_stream_hands_over_items_and_the_producers_error_and_stops_when_left_early():
    """``RayStream`` (a CPU stage as a Ray task): items in order, a RejectedInput raised in the task
    re-raised in the consumer as itself, and a consumer that stops early cancels the task."""
    result = subprocess.run([sys.executable, "-c", RAY_STREAM], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
