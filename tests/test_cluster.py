"""Ray on a real multi-node cluster on this machine (a head without CPUs and two one-CPU worker
nodes on 127.0.0.2, ``loopback_cluster.py``): a job joined with an address whose actors run on
both nodes, a worker node killed mid-job, a worker actor SIGKILLed three times, a hung worker, a
lagging last shard; and the embedded cluster: unauthenticated clients refused, nothing left
behind by a killed driver. Every job must end with every row exactly once."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from loopback_cluster import LoopbackCluster
from test_executors import TOY, assert_exactly_once

from motionfleet.core.execution.ray import cluster as embedded
from motionfleet.core.jobfolder.sink import read_results


@pytest.fixture(scope="module")
def loopback():
    temp_dir = tempfile.mkdtemp(prefix="mf-test-ray-")  # short: Ray's socket paths must fit in 107 bytes
    cluster = LoopbackCluster(Path(temp_dir), nodes=2)
    yield cluster
    cluster.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


def start_toy(cluster, out: Path, *args, workers=2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, TOY, "--out", str(out), "--address", cluster.address, "--workers", str(workers),
                             "--pids", str(out.parent / "pids"), *args],
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(job: subprocess.Popen, timeout=240) -> str:
    stdout, stderr = job.communicate(timeout=timeout)
    assert job.returncode == 0, stderr[-3000:]
    return stdout


def committed(out: Path) -> int:
    return len(list((out / "commits").glob("*.json")))


def wait_for(condition, timeout=120, what="condition", job=None):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert job is None or job.poll() is None, f"the job ended before {what}: {job.communicate()}"
        time.sleep(0.1)


def actor_pids(pids: Path) -> dict[str, list[int]]:
    """actor id -> pids its processes had, in start order."""
    found: dict[str, list[tuple[float, int]]] = {}
    for marker in pids.glob("*-*"):
        actor, pid = marker.name.rsplit("-", 1)
        found.setdefault(actor, []).append((marker.stat().st_mtime, int(pid)))
    return {actor: [pid for _, pid in sorted(v)] for actor, v in found.items()}


def test_a_killed_worker_node_costs_no_row_and_a_quick_rerun_does_not_hang(loopback, tmp_path):
    out = tmp_path / "job"
    job = start_toy(loopback, out, "--items", "30", "--delay", "0.3")
    wait_for(lambda: committed(out) >= 6, what="20% of the shards")
    loopback.command("kill 1")
    stdout = finish(job)
    assert "nodes 2" in stdout and "failed 0" in stdout  # both nodes worked before one was lost
    assert_exactly_once(out, 30)
    # At once, before Ray declares the node dead (~15 s): the stale node must not stall the job.
    again = tmp_path / "again"
    finish(start_toy(loopback, again, "--items", "4"), timeout=120)
    assert_exactly_once(again, 4)
    loopback.command("add")


def test_the_same_worker_actor_sigkilled_three_times(loopback, tmp_path):
    out, pids = tmp_path / "job", tmp_path / "pids"
    job = start_toy(loopback, out, "--items", "60", "--delay", "1.0")
    wait_for(lambda: len(actor_pids(pids)) == 2, what="two actors")
    victim = sorted(actor_pids(pids))[0]
    for kill in range(3):
        wait_for(lambda: len(actor_pids(pids)[victim]) == kill + 1, what=f"restart {kill}", job=job)
        os.kill(actor_pids(pids)[victim][-1], signal.SIGKILL)
    finish(job)
    assert len(actor_pids(pids)[victim]) >= 3
    assert_exactly_once(out, 60)


def test_a_hung_worker_is_killed_after_the_shard_timeout(loopback, tmp_path):
    out, pids = tmp_path / "job", tmp_path / "pids"
    # One worker, so no idle worker can take over its shards: only the timeout ends the hang.
    job = start_toy(loopback, out, "--items", "8", "--delay", "0.3", "--shard-timeout", "5", workers=1)
    wait_for(lambda: committed(out) >= 2, what="a working actor", job=job)
    [(actor, [pid])] = actor_pids(pids).items()
    os.kill(pid, signal.SIGSTOP)
    finish(job)
    assert len(actor_pids(pids)[actor]) == 2  # killed at the timeout and restarted by Ray
    assert_exactly_once(out, 8)


def test_a_lagging_last_shard_also_runs_on_an_idle_worker_and_the_first_commit_wins(loopback, tmp_path):
    out = tmp_path / "job"
    # item-009's first attempt sleeps for 10 minutes; the job must finish through its speculative copy.
    finish(start_toy(loopback, out, "--items", "10", "--delay", "0.2", "--slow-once", "item-009"), timeout=200)
    assert (out / "slow-started").exists() and not (out / "slow-finished").exists()
    assert_exactly_once(out, 10)


PLAN_ON_CLUSTER = """
import sys
from motionfleet.core.execution.planning import map_ordered, planning
from motionfleet.core.execution.ray import scheduler
from motionfleet.socialmirror import source
from motionfleet.demo.videos import write_demo_corpus
from motionfleet.socialmirror.settings import ReconstructSettings
from motionfleet.socialmirror.video import list_videos

def node(_):
    import ray
    return ray.get_runtime_context().get_node_id()

videos = list_videos(write_demo_corpus(sys.argv[2]))
settings = ReconstructSettings(clips_per_shard=1)
plan = lambda: [(s.shard_id, len(s.items)) for s in source.plan_shards(videos, {}, 16, settings)]
here = plan()
scheduler.PLAN_CHUNK = 1  # one task a video, so that the three probes are spread
with planning(2, sys.argv[1]):
    assert plan() == here, "the plan depends on where it was probed"
    import ray
    nodes = set(map_ordered(node, list(range(8))))
    workers = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU", 0) > 0}
print(len(here), "shards;", len(nodes & workers), "worker nodes probed;", len(nodes - workers), "others")
"""


def test_videos_are_probed_on_the_cluster_and_the_plan_does_not_change(loopback, tmp_path):
    result = subprocess.run([sys.executable, "-c", PLAN_ON_CLUSTER, loopback.address, str(tmp_path / "videos")],
                            env=loopback.env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shards; 2 worker nodes probed; 0 others" in result.stdout


def test_workers_auto_on_a_cluster_is_one_actor_per_node_with_cpus(loopback):
    code = ("import sys; from motionfleet.core.execution import worker_layout; "
            "print(*worker_layout('auto', sys.argv[1], 'cpu'), sep='|')")
    result = subprocess.run([sys.executable, "-c", code, loopback.address], env=loopback.env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("2|one per node of the cluster (2)")  # the head node offers no CPU


@pytest.mark.parametrize("given", ["flag", "RAY_ADDRESS"])  # RAY_ADDRESS: what `ray job submit` sets
def test_an_unreachable_address_fails_in_seconds_with_one_line(tmp_path, given):
    flag = ["--address", "127.0.0.2:9"] if given == "flag" else []
    env = {**os.environ, **({"RAY_ADDRESS": "127.0.0.2:9"} if given != "flag" else {})}
    result = subprocess.run([sys.executable, "-m", "motionfleet.cli", "generate", "--out", str(tmp_path / "o"),
                             *flag, "--preset", "tiny"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "motionfleet: error: cannot reach a Ray cluster at 127.0.0.2:9 (Connection refused): start it with "
        "`ray start --head` or fix --address"]


EMBEDDED_DRIVER = """
import os, sys, time
from motionfleet.core.execution.ray import cluster
cluster.connect(None)
import ray
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(600)
"""

UNAUTHENTICATED_CLIENT = """
import sys, ray
ray.init(address=sys.argv[1])
print("RAN", ray.get(ray.remote(lambda: 42).remote()))
"""


def test_the_embedded_cluster_refuses_other_clients_and_dies_with_its_driver(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    driver = subprocess.Popen([sys.executable, "-c", EMBEDDED_DRIVER], env=env, stdout=subprocess.PIPE, text=True)
    gcs = driver.stdout.readline().strip()
    assert gcs, "the embedded cluster did not start"
    ray_processes = [p for p in _descendants(driver.pid)]
    intruder = subprocess.run([sys.executable, "-c", UNAUTHENTICATED_CLIENT, gcs], env=env, capture_output=True,
                              text=True, timeout=120)
    assert intruder.returncode != 0 and "RAN" not in intruder.stdout
    assert "Authentication token is missing or incorrect" in intruder.stderr

    temp_dirs = list(Path(tempfile.gettempdir()).glob(f"{embedded.TEMP_PREFIX}{driver.pid}-*"))
    assert temp_dirs
    driver.kill()
    driver.wait()
    wait_for(lambda: not [p for p in ray_processes if _alive(p)], timeout=15, what="Ray processes to exit")
    assert set(temp_dirs) <= set(embedded.remove_stale_temp_dirs())


def _descendants(pid: int) -> list[int]:
    from motionfleet.core.execution.ray.reaper import descendants

    return descendants(pid)


def _alive(pid: int) -> bool:
    from motionfleet.core.execution.ray.reaper import start_ticks

    return start_ticks(pid) is not None


def test_video_decoding_runs_on_the_cpus_the_model_actor_leaves_and_the_bytes_do_not_change(loopback, tmp_path):
    """One model actor holds one node's CPU; each shard's decoding is a Ray task on the other
    node's, two shards run at once in the actor, and the rows are the bytes of the same job run in
    one process; a video damaged mid-stream is rejected from the remote task with its reason (a
    truncated one is refused at planning, from its index: tests/test_odd_videos.py)."""
    from test_reconstruct_job import SETTINGS, write_good_videos

    from motionfleet.demo.videos import write_damaged_video

    corpus = write_good_videos(tmp_path / "videos")
    write_damaged_video(corpus / "cut.mp4", 0.8)  # a clip decodes before the damage
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    run = lambda out, *more: subprocess.run([sys.executable, "-m", "motionfleet", "reconstruct", "--videos", str(corpus),
                                             "--out", str(out), *flags, *more], env=loopback.env, capture_output=True,
                                            text=True, timeout=300)
    here = run(tmp_path / "here", "--workers", "0")
    there = run(tmp_path / "there", "--workers", "1", "--address", loopback.address)
    assert here.returncode == 0 and there.returncode == 0, (here.stderr + there.stderr)[-3000:]  # 1 rejected: exit 0
    timing = json.loads((tmp_path / "there" / "report.json").read_text())["timing"]
    assert timing["clips_decoded_elsewhere"] == timing["clips"] > 5  # the good videos have 5, the cut one some
    assert json.loads((tmp_path / "here" / "report.json").read_text())["timing"]["clips_decoded_elsewhere"] == 0
    assert read_results(tmp_path / "there").sort_by("video_id").equals(read_results(tmp_path / "here").sort_by("video_id"))
    rejected = read_results(tmp_path / "there", "rejected").to_pylist()
    assert [(r["video_id"], r["reason"].split(":")[0]) for r in rejected] == [("cut.mp4", "decode_error")]
