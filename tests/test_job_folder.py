"""The job folder (issues 10.2-10.4, 10.12, 14.1): commits, the lease, refusals, damage, litter, reports."""

import contextlib
import json
import os
import socket
import threading
import time

import pyarrow as pa
import pytest
from killed_job import committed

import motionfleet
from motionfleet import cli
from motionfleet.core.execution import in_process
from motionfleet.core.jobfolder.lease import FolderInUse, Lease, LeaseLost
from motionfleet.core.jobfolder.sink import JobFolder, JobMismatch, UnrelatedFolder, check_visible, read_results, write_shard
from motionfleet.core.jobfolder.storage import Storage

JOB = {"job": "test", "seed": 0}
PROMPTS = ["two people hug", "they shake hands", "one pushes the other", "a slow waltz", "a high five"]


def table(n: int, tag: str = "a") -> pa.Table:
    return pa.table({"sample_id": [f"{tag}{i}" for i in range(n)], "value": list(range(n))})


def commit_shard(folder: JobFolder, shard_id: str, rows: int = 3) -> dict:
    files = write_shard(folder.location, shard_id, table(rows, shard_id), table(1, "r"), {})
    folder.commit(shard_id, files, {"results": rows})
    return files


def listing(root) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_readers_see_only_committed_attempts_and_the_first_commit_wins(tmp_path):
    with JobFolder(str(tmp_path)).open(JOB, "f" * 64) as folder:
        first = commit_shard(folder, "shard-00000")
        late = write_shard(folder.location, "shard-00000", table(3, "shard-00000"), table(1, "r"), {})
        assert folder.commit("shard-00000", late, {"results": 3}) is False
        assert not (tmp_path / late["results"]["path"]).exists()  # the duplicate attempt's files are gone
        write_shard(folder.location, "shard-00001", table(2), table(0), {})  # never committed: a crashed attempt
        assert read_results(tmp_path).column("sample_id").to_pylist() == ["shard-000000", "shard-000001", "shard-000002"]
    assert (tmp_path / first["results"]["path"]).exists()


def test_a_commit_checks_the_files_the_worker_says_it_wrote(tmp_path):
    with JobFolder(str(tmp_path)).open(JOB, "f" * 64) as folder:
        files = write_shard(folder.location, "shard-00000", table(3), table(0), {})
        os.remove(tmp_path / files["results"]["path"])  # what a driver sees of a worker's private disk
        with pytest.raises(OSError, match="every node shares"):
            folder.commit("shard-00000", files, {})
        assert not folder.is_committed("shard-00000")


def test_a_resume_reads_the_records_cache_but_the_listing_decides_what_is_committed(tmp_path):
    with JobFolder(str(tmp_path)).open(JOB, "f" * 64) as folder:
        for i in range(4):
            commit_shard(folder, f"shard-{i:05d}")
        folder.compact(every=4)
        written = {k: dict(v) for k, v in folder.committed.items()}
    [cache] = (tmp_path / "commits").glob("_records-*.parquet")
    with JobFolder(str(tmp_path)).open(JOB, "f" * 64) as folder:
        assert all(r.pop("cached") for r in folder.committed.values()) and folder.committed == written
        (tmp_path / "commits" / f"shard-00001.{written['shard-00001']['attempt']}.json").unlink()  # uncommitted
        commit_shard(folder, "shard-00009")
    with JobFolder(str(tmp_path)).open(JOB, "f" * 64) as folder:
        assert sorted(folder.committed) == ["shard-00000", "shard-00002", "shard-00003", "shard-00009"]
        assert [s for s, r in sorted(folder.committed.items()) if not r.get("cached")] == ["shard-00009"]
        folder.compact(every=1)
    assert not cache.exists() and len(list((tmp_path / "commits").glob("_records-*.parquet"))) == 1


def test_cleanup_removes_only_what_this_engine_named(tmp_path):
    with JobFolder(str(tmp_path)).open(JOB, "f" * 64) as folder:
        kept = commit_shard(folder, "shard-00000")
    orphan = write_shard(str(tmp_path), "shard-00001", table(1), table(0), {})
    killed_commit = tmp_path / "commits" / ".shard-00001.json.tmp-0123456789abcdef"  # a kill inside a commit
    killed_commit.write_text("{")
    users = [tmp_path / "results" / "notes.txt", tmp_path / "results" / ".draft.tmp-42", tmp_path / "commits" / "x.txt"]
    for path in users:
        path.write_text("mine")
    JobFolder(str(tmp_path)).open(JOB, "f" * 64).close()
    assert not killed_commit.exists() and not (tmp_path / orphan["results"]["path"]).exists()
    assert all(p.read_text() == "mine" for p in users) and (tmp_path / kept["results"]["path"]).exists()


@pytest.mark.parametrize("planted", [{"results/shard-00000.parquet": b"PAR1", "report.json": b"{}"},
                                     {"thesis.tex": b"\\section{}"}, {"manifest.json": b"{}"}])
def test_an_unrelated_non_empty_folder_is_refused_and_left_alone(tmp_path, planted, capsys):
    for name, data in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = listing(tmp_path)
    with pytest.raises(UnrelatedFolder, match="not a motionfleet job folder"):
        JobFolder(str(tmp_path)).open(JOB, "f" * 64)
    code = cli.main(["generate", "--out", str(tmp_path), "--preset", "tiny", "--steps", "2", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("motionfleet: error: ") and err.count("\n") == 1 and "empty --out" in err
    assert listing(tmp_path) == before


def test_one_job_per_folder_other_jobs_refused_at_once(tmp_path):
    holder = JobFolder(str(tmp_path)).open(JOB, "a" * 64)
    assert json.loads((tmp_path / "job.json").read_text())["fingerprint"] == "a" * 64  # identity before any shard
    with pytest.raises(JobMismatch):
        JobFolder(str(tmp_path)).open({**JOB, "seed": 1}, "b" * 64)
    with pytest.raises(FolderInUse, match="in use by another job"):
        JobFolder(str(tmp_path)).open(JOB, "a" * 64)
    holder.close()
    JobFolder(str(tmp_path)).open(JOB, "a" * 64).close()


def test_a_crashed_jobs_lease_does_not_keep_the_folder(tmp_path):
    storage = Storage(str(tmp_path))
    storage.makedirs("_lock")
    dead = {"owner": "x", "host": socket.gethostname(), "pid": 2**22 + 7, "expires": time.time() + 3600}
    expired = {"owner": "y", "host": "another-node", "pid": 1, "expires": time.time() - 1}
    storage.write("_lock/0000000000000001.json", json.dumps(dead).encode())
    storage.write("_lock/0000000000000002.json", json.dumps(expired).encode())
    JobFolder(str(tmp_path)).open(JOB, "a" * 64).close()
    assert not list((tmp_path / "_lock").iterdir())


def test_two_contenders_at_the_same_instant_never_both_hold_the_lease(tmp_path, monkeypatch):
    """A barrier between writing a lease and listing the others: each lists after both wrote, so at most
    one holds the folder (the first to list sees the other and withdraws; the second may then hold it)."""
    barrier = threading.Barrier(2)
    listing_others = Lease._other_live
    monkeypatch.setattr(Lease, "_other_live", lambda self: (barrier.wait(), listing_others(self))[1])
    outcomes = []

    def contend():
        lease = Lease(Storage(str(tmp_path)), "contender", ttl_s=60)
        try:
            lease.acquire()
            outcomes.append("held")
        except FolderInUse:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["held", "refused"], ["refused", "refused"])


def test_a_job_whose_lease_was_taken_over_stops_committing(tmp_path):
    folder = JobFolder(str(tmp_path), ttl_s=60).open(JOB, "a" * 64)
    os.remove(tmp_path / folder.lease.name)  # what a takeover after a long stall does
    folder.lease.confirmed_until = 0.0
    with pytest.raises(LeaseLost):
        commit_shard(folder, "shard-00000")
    assert not folder.is_committed("shard-00000") and not list((tmp_path / "commits").glob("*.json"))


def test_a_worker_that_cannot_see_the_folder_is_named(tmp_path):
    with JobFolder(str(tmp_path)).open(JOB, "a" * 64) as folder:
        location, path, token = folder.visibility_probe()
        assert check_visible((location, path, token)) is None
        other_node = tmp_path / "elsewhere"  # the same path on a node that does not share the disk
        assert "not visible from the worker node" in check_visible((str(other_node), path, token))


# --- whole jobs (tiny preset, 2 steps) ---------------------------------------------------------------------


def generate(out, seed=0, shard_size=2):
    return motionfleet.generate(str(out.parent / "prompts.txt"), out=str(out), preset="tiny", steps=2, seed=seed,
                                batch_size=4, num_frames=6, shard_size=shard_size, workers=0)


@pytest.fixture
def prompts(tmp_path):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")


def keyed(out) -> dict:
    return {r["sample_id"]: r["motion"] for r in read_results(out).to_pylist()}


def test_concurrent_jobs_into_one_folder_with_the_first_held_at_a_barrier(tmp_path, prompts, monkeypatch):
    """Job A stops inside its first shard; meanwhile a different job and an identical one are refused at
    once and touch nothing; A then completes with every row exactly once."""
    inside, release = threading.Event(), threading.Event()
    real = in_process.run_split_on_oom  # the model call of each batch (dhvae batches across shards)

    def held(*args):
        inside.set()
        release.wait(60)
        return real(*args)

    monkeypatch.setattr(in_process, "run_split_on_oom", held)
    out, errors = tmp_path / "job", []
    first = threading.Thread(target=lambda: errors.append(generate(out) is None))
    first.start()
    assert inside.wait(120)
    before = listing(out)
    monkeypatch.setattr(in_process, "run_split_on_oom", real)
    with pytest.raises(JobMismatch):
        generate(out, seed=1)
    with pytest.raises(FolderInUse):
        generate(out)
    assert listing(out) == before
    release.set()
    first.join()
    assert errors == [False] and sorted(keyed(out)) == [str(i) for i in range(len(PROMPTS))]


def test_damaged_shards_are_found_by_verify_and_recomputed_by_a_rerun(tmp_path, prompts, capsys):
    out = tmp_path / "job"
    generate(out)
    reference = keyed(out)
    records = committed(out)
    deleted, truncated, flipped = (out / records[s]["files"]["results"]["path"] for s in sorted(records))
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 1  # same size: only the checksum tells
    flipped.write_bytes(bytes(data))
    assert cli.main(["verify", str(out)]) == 1
    assert "3 damaged" in capsys.readouterr().out

    assert generate(out)["shards"]["run"] == 2  # the resume notices the missing and truncated files by their sizes
    flipped_rows = records[sorted(records)[2]]["files"]["results"]["rows"]
    assert cli.main(["verify", str(out), "--repair"]) == 0  # the bit flip is uncommitted ...
    printed = capsys.readouterr().out
    assert f"2 committed shards, {len(reference) - flipped_rows} rows" in printed and "; 0 damaged;" in printed
    assert "1 damaged shard uncommitted: rerun the job" in printed and "(uncommitted)" in printed
    assert generate(out)["shards"]["run"] == 1  # ... and computed again
    assert cli.main(["verify", str(out)]) == 0 and keyed(out) == reference
    assert "3 committed shards, 5 rows" in capsys.readouterr().out


def test_the_report_describes_the_whole_job_across_a_crash_and_a_resume(tmp_path, prompts, monkeypatch):
    out = tmp_path / "job"
    real, calls = in_process.write_run, []  # each finished shard is written, then committed

    def crash_on_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the driver dies after one commit
        return real(*args)

    monkeypatch.setattr(in_process, "write_run", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        generate(out)
    monkeypatch.setattr(in_process, "write_run", real)
    report = generate(out)
    assert report["shards"]["run"] == 2 and report["shards"]["total"] == 3
    assert report["timing"]["sentences"] == len(PROMPTS)  # all of them, not only the last run's
    assert json.loads((out / "report.json").read_text())["timing"]["sentences"] == len(PROMPTS)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name] and not list((out / "_lock").iterdir())


def test_a_job_whose_worker_cannot_see_the_folder_fails_at_once_with_one_line(tmp_path, prompts, monkeypatch, capsys):
    """The driver's probe names a file the worker's node does not have (as a local --out on another
    node's disk): the actor's first ping says so, and the job stops before any shard runs."""
    def elsewhere(folder):
        location, path, token = real_probe(folder)
        return str(tmp_path / "other-node-disk"), path, token

    real_probe = JobFolder.visibility_probe
    monkeypatch.setattr(JobFolder, "visibility_probe", elsewhere)
    out = tmp_path / "job"
    code = cli.main(["generate", "--out", str(out), "--prompts", str(tmp_path / "prompts.txt"), "--preset", "tiny",
                     "--steps", "2", "--workers", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("motionfleet")]
    assert code == 2 and len(err) == 1 and "not visible from the worker node" in err[0]
    assert not list((out / "commits").iterdir()) and not list((out / "results").iterdir())


def test_a_kill_inside_a_commit_leaves_nothing_a_rerun_does_not_clean(tmp_path, prompts, monkeypatch):
    """The driver dies between writing the second commit record's temporary file and its rename
    (the moment that used to leave ``.manifest.json.tmp-PID`` forever)."""
    from motionfleet.core.jobfolder import storage

    real_replace, renames = os.replace, []

    def killed_at_the_second_commit(src, dst):
        renames.append(dst)
        if "/commits/" in str(dst) and sum("/commits/" in str(d) for d in renames) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    out = tmp_path / "job"
    monkeypatch.setattr(storage.os, "replace", killed_at_the_second_commit)
    # A kill runs no cleanup: the removal of its temporary by an interrupted write (Ctrl-C, SIGTERM:
    # tests/test_stops.py) is switched off, so the temporary stays as after a SIGKILL.
    monkeypatch.setattr(storage, "_removed_if_unfinished", contextlib.nullcontext)
    with pytest.raises(KeyboardInterrupt):
        generate(out)
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert list((out / "commits").glob(".*.tmp-*")) and len(committed(out)) == 1
    assert generate(out)["shards"]["run"] == 2
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert sorted(keyed(out)) == [str(i) for i in range(len(PROMPTS))]
    assert len(list((out / "results").glob("*.parquet"))) == 3  # the killed attempt's files are gone


def test_a_shard_file_keeps_dictionaries_for_labels_and_none_for_motion_floats(tmp_path):
    """Dictionary-encoding a motion's floats cost most of a shard's write and grew the file."""
    import pyarrow.parquet as pq

    motion = pa.array([[[0.1 * i + j for j in range(4)] for _ in range(3)] for i in range(2)],
                      pa.list_(pa.list_(pa.float32())))
    results = pa.table({"sample_id": ["a", "b"], "model": ["dhvae", "dhvae"], "motion": motion, "scale": [2.5, 2.5]})
    for sub in ("results", "rejected"):
        (tmp_path / sub).mkdir()
    files = write_shard(str(tmp_path), "shard-00000", results, table(0), {})
    columns = pq.ParquetFile(tmp_path / files["results"]["path"]).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema.split(".")[0]: columns.column(i).encodings for i in range(columns.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["model"]) and any("DICTIONARY" in e for e in encodings["sample_id"])
    assert not any("DICTIONARY" in e for e in encodings["motion"]) and not any("DICTIONARY" in e for e in encodings["scale"])
