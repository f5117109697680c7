"""Stops and stalls a cluster produces (issue 23.2): a driver stalled past its lease, contenders, `verify --repair`
beside a live job, the Python API from two threads."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_job_folder import JOB, commit_shard

import motionfleet
from motionfleet.core.jobfolder.lease import TTL_VARIABLE, FolderInUse, Lease, LeaseLost, lease_ttl_s
from motionfleet.core.jobfolder.sink import JobFolder, read_results, verify_folder
from motionfleet.core.jobfolder.storage import Storage
from motionfleet.core.options import UsageError

FINGERPRINT = "a" * 64


def records(root) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "commits").glob("*.json"))]


def test_a_renewal_racing_a_takeover_of_its_expired_lease_loses_it(tmp_path, monkeypatch):
    """A stalled past its lease resumes between B reading A's expired lease and B removing it: A must not
    count the lease as held (before: A rewrote it, B removed it and took the folder: two writers)."""
    a = JobFolder(str(tmp_path), ttl_s=60).open(JOB, FINGERPRINT)
    a.lease._stop.set()  # no heartbeat: this test drives A's renewal by hand
    a.lease._thread.join()
    a.lease.confirmed_until = time.monotonic() - 1  # stalled past the confirmation...
    lapsed = {"expires": time.time() - 1}
    reading = Lease._leases

    def b_reads_then_a_renews(self):
        found = reading(self)
        if self is not a.lease and a.lease.name.split("/")[1] in found:
            found[a.lease.name.split("/")[1]].update(lapsed)  # ...and past the expiry, as B judges it
            a.lease._renew()  # A resumes here, between B's read and B's removal
        return found

    monkeypatch.setattr(Lease, "_leases", b_reads_then_a_renews)
    b = JobFolder(str(tmp_path), ttl_s=60).open(JOB, FINGERPRINT)
    monkeypatch.setattr(Lease, "_leases", reading)
    with pytest.raises(LeaseLost):
        commit_shard(a, "shard-00000")
    commit_shard(b, "shard-00000")
    assert [r["run"] for r in records(tmp_path)] == [b.run["run"]]
    b.close()
    a.close()


def test_a_contenders_leftover_lease_does_not_stop_the_holder(tmp_path):
    """A contender on another host that crashed between writing its lease and withdrawing it leaves a live lease:
    the job that held the folder all along keeps it (before: its next renewal gave it up and it stopped)."""
    with JobFolder(str(tmp_path), ttl_s=60).open(JOB, FINGERPRINT) as folder:
        crashed = {"owner": "contender", "host": "another-node", "pid": 7, "expires": time.time() + 60}
        Storage(str(tmp_path)).write("_lock/00000000000000ff.json", json.dumps(crashed).encode())
        folder.lease._renew()
        commit_shard(folder, "shard-00000")
    assert [r["shard_id"] for r in records(tmp_path)] == ["shard-00000"]


def test_a_commit_written_after_the_lease_lapsed_is_taken_back(tmp_path, monkeypatch):
    """A driver stalled inside the write of a commit record resumes after its lease lapsed: the record is removed
    and the driver stops, so a job that took over is the only one committing."""
    folder = JobFolder(str(tmp_path), ttl_s=60).open(JOB, FINGERPRINT)
    writing = Storage.write

    def stalled_in_the_write(self, rel, data):
        writing(self, rel, data)
        if rel.startswith("commits/"):
            folder.lease.confirmed_until = time.monotonic() - 1

    monkeypatch.setattr(Storage, "write", stalled_in_the_write)
    with pytest.raises(LeaseLost):
        commit_shard(folder, "shard-00000")
    assert records(tmp_path) == [] and not folder.is_committed("shard-00000")
    folder.close()


def test_verify_repair_beside_a_live_job_is_refused_and_removes_nothing(tmp_path):
    """Before: `verify --repair` removed records while the job that committed them ran (it counted them done)."""
    with JobFolder(str(tmp_path), ttl_s=60).open(JOB, FINGERPRINT) as folder:
        files = commit_shard(folder, "shard-00000")
        (tmp_path / files["results"]["path"]).write_bytes(b"truncated")
        before = records(tmp_path)
        assert verify_folder(str(tmp_path))["damaged"]  # a check only reads: allowed beside the job
        with pytest.raises(FolderInUse, match="verify --repair changes the folder"):
            verify_folder(str(tmp_path), repair=True)
        assert records(tmp_path) == before
    assert list(verify_folder(str(tmp_path), repair=True)["damaged"]) == ["shard-00000"]
    assert records(tmp_path) == [] and not list((tmp_path / "_lock").iterdir())


def test_verify_repair_in_a_loop_while_a_job_commits(tmp_path):
    """Every shard the job commits stays committed, once; each repair either ran between jobs or was refused."""
    folder = JobFolder(str(tmp_path), ttl_s=60).open(JOB, FINGERPRINT)
    done, outcomes = threading.Event(), []

    def repair_loop():
        while not done.is_set():
            try:
                outcomes.append(verify_folder(str(tmp_path), repair=True)["damaged"])
            except FolderInUse:
                outcomes.append("refused")

    repairer = threading.Thread(target=repair_loop)
    repairer.start()
    for i in range(20):
        commit_shard(folder, f"shard-{i:05d}")
    folder.close()
    done.set()
    repairer.join()
    assert "refused" in outcomes and all(o in ("refused", {}) for o in outcomes)
    assert sorted(r["shard_id"] for r in records(tmp_path)) == [f"shard-{i:05d}" for i in range(20)]
    assert read_results(str(tmp_path)).num_rows == 20 * 3


def test_the_lease_time_is_one_documented_setting(monkeypatch):
    monkeypatch.delenv(TTL_VARIABLE, raising=False)
    assert lease_ttl_s() == 60
    monkeypatch.setenv(TTL_VARIABLE, "7.5")
    assert lease_ttl_s() == 7.5 and Lease(Storage("."), "x").ttl_s == 7.5
    for bad in ("soon", "0", "nan", "-3"):
        monkeypatch.setenv(TTL_VARIABLE, bad)
        with pytest.raises(UsageError, match=TTL_VARIABLE):
            lease_ttl_s()


DRIVER = """
import sys, time
from pathlib import Path
from test_job_folder import JOB, commit_shard
from motionfleet.core.jobfolder.sink import JobFolder
out = Path(sys.argv[1])
folder = JobFolder(str(out)).open(JOB, "a" * 64)
commit_shard(folder, "shard-00000")
(out.parent / "ready").touch()
while not (out.parent / "go").exists():
    time.sleep(0.05)
try:
    commit_shard(folder, "shard-00001")
except Exception as err:
    print(f"{type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(3)
"""


def test_a_driver_stalled_past_its_lease_stops_before_committing_again(tmp_path):
    """SIGSTOP a driver past its lease (MOTIONFLEET_LEASE_S=3), let a second driver take the folder and commit,
    SIGCONT the first: it stops with LeaseLost, one line, and every shard is committed once, by the second."""
    out = tmp_path / "job"
    env = {**os.environ, TTL_VARIABLE: "3", "PYTHONPATH": os.path.dirname(__file__)}
    a = subprocess.Popen([sys.executable, "-c", DRIVER, str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists() and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        time.sleep(3.5)  # past A's expiry
        with JobFolder(str(out), ttl_s=60).open(JOB, FINGERPRINT) as b:
            assert b.is_committed("shard-00000")
            commit_shard(b, "shard-00001")
            (tmp_path / "go").touch()
            os.kill(a.pid, signal.SIGCONT)
            _, err = a.communicate(timeout=60)
            assert a.returncode == 3 and err.startswith("LeaseLost: the lease on") and err.count("\n") == 1
            commit_shard(b, "shard-00002")  # B still holds the folder
    finally:
        if a.poll() is None:  # the assertions above failed: end the stopped driver rather than wait on it
            a.kill()
            a.wait()
    assert sorted(r["shard_id"] for r in records(out)) == ["shard-00000", "shard-00001", "shard-00002"]
    assert read_results(str(out)).num_rows == 9


def api_job(out, workers, errors):
    try:
        return motionfleet.generate(["two people hug", "they shake hands"], out=str(out), preset="tiny", steps=2,
                                    batch_size=2, num_frames=6, shard_size=1, workers=workers)
    except Exception as err:  # noqa: BLE001 - the test asserts what each thread raised
        errors.append(err)


def test_the_api_from_two_threads_on_one_folder_refuses_one(tmp_path, monkeypatch):
    """The first job is held inside its first commit; a second thread's job on that folder is refused by the
    lease and touches nothing; the first then finishes with every row once."""
    inside, release = threading.Event(), threading.Event()
    committing = JobFolder.commit

    def held(self, *args):
        inside.set()
        release.wait(60)
        return committing(self, *args)

    monkeypatch.setattr(JobFolder, "commit", held)
    out, errors = tmp_path / "job", []
    first = threading.Thread(target=api_job, args=(out, 0, errors))
    first.start()
    assert inside.wait(120)
    second = threading.Thread(target=api_job, args=(out, 0, errors))
    second.start()
    second.join()
    assert len(errors) == 1 and isinstance(errors[0], FolderInUse)
    release.set()
    first.join()
    assert len(errors) == 1 and sorted(read_results(str(out)).column("sample_id").to_pylist()) == ["0", "1"]


TWO_THREADS_TWO_FOLDERS = """
import sys, threading
import motionfleet
from motionfleet.core.jobfolder.sink import read_results

errors = []

def job(out):
    try:
        motionfleet.generate(["two people hug", "they shake hands"], out=out, preset="tiny", steps=2, batch_size=2,
                             num_frames=6, shard_size=1, workers=1)
    except Exception as err:
        errors.append(repr(err))

outs = [sys.argv[1] + "/a", sys.argv[1] + "/b"]
threads = [threading.Thread(target=job, args=(out,)) for out in outs]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("errors", errors)
print("rows", [sorted(read_results(out).column("sample_id").to_pylist()) for out in outs])
"""


def test_the_api_from_two_threads_on_two_folders_shares_one_embedded_ray(tmp_path):
    """Both threads of a user's program start the embedded Ray at once (before: the second ray.init raised);
    both jobs finish with every row. Its own interpreter, as a user's program has: in pytest's process an
    earlier test's Ray state would be shared."""
    result = subprocess.run([sys.executable, "-c", TWO_THREADS_TWO_FOLDERS, str(tmp_path)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "errors []" in result.stdout and "rows [['0', '1'], ['0', '1']]" in result.stdout, result.stdout + result.stderr[-2000:]
