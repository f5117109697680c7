"""The driver's cost per shard in the job folder (issue 14.8): commit latency with none and with
10^5 shards already committed, and the cost of opening (resuming) a folder that holds 10^5.

A commit checks the attempt's two files (size from the filesystem, rows from each Parquet footer)
and writes the shard's commit record: on a local disk a temporary file, fsync, rename, fsync of the
folder; on S3 (here moto's server on loopback) one PUT. It never reads or rewrites what was
committed before; the manifest it replaces rewrote every committed shard at each commit (issue
14: 52 ms per commit at 20,000 shards).

    python -m pytest benchmarks/test_job_folder.py --benchmark-enable --benchmark-json=benchmarks/results/job_folder_cpu.json
"""

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from motionfleet.core.jobfolder.sink import COMMITS_DIR, JobFolder, record_name, write_shard
from motionfleet.core.jobfolder.storage import Storage

JOB, FINGERPRINT = {"job": "bench"}, "b" * 64
MANY = 100_000
RESULTS = pa.table({"sample_id": [f"s{i}" for i in range(256)], "value": list(range(256))})
REJECTED = pa.table({"sample_id": ["r"], "reason": ["bad"]})


def fill(folder: JobFolder, count: int, threads: int = 1) -> None:
    """``count`` committed shards that all name one real attempt (so that a resume's size check passes),
    written as the commit would write them, without fsync (only the setup is faster)."""
    files = write_shard(folder.location, "shard-base", RESULTS, REJECTED, {})
    storage = folder.storage

    attempt = files["results"]["path"].split(".")[-2]

    def put(i: int) -> None:
        record = {"shard_id": f"shard-{i:07d}", "attempt": attempt, "files": files, "summary": {"results": 256},
                  **folder.run, "committed": 0.0}
        if storage.local:
            with open(storage.path(record_name(record)), "w") as handle:
                json.dump(record, handle)
        else:
            storage.write(record_name(record), json.dumps(record).encode())
        folder.committed[record["shard_id"]] = record

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(count)))


def bench_commits(benchmark, folder: JobFolder, rounds: int) -> None:
    """Median seconds of ``commit`` for fresh shards (writing the attempt's files is setup, untimed)."""
    counter = iter(range(10**9))

    def attempt():
        shard_id = f"new-{next(counter):07d}"
        return (shard_id, write_shard(folder.location, shard_id, RESULTS, REJECTED, {}), {"results": 256}), {}

    benchmark.pedantic(folder.commit, setup=attempt, rounds=rounds)
    benchmark.extra_info.update({"committed_before": len(folder.committed) - rounds, "median_s": benchmark.stats.stats.median,
                                 "load_average_1min": os.getloadavg()[0]})


@pytest.mark.parametrize("committed", [0, MANY])
def test_commit_latency_local_disk(benchmark, tmp_path, committed):
    with JobFolder(str(tmp_path / "job")).open(JOB, FINGERPRINT) as folder:
        fill(folder, committed)
        bench_commits(benchmark, folder, rounds=300)


@pytest.mark.parametrize("cache", [False, True])
def test_open_a_folder_with_many_committed_shards(benchmark, tmp_path, cache):
    """A resume: take the lease, list and read every commit record (from one cache object, as a
    finished run leaves it, or one file each), check sizes against one listing, clean up."""
    location = str(tmp_path / "job")
    with JobFolder(location).open(JOB, FINGERPRINT) as folder:
        fill(folder, MANY)
        folder.uncached = MANY
        if cache:
            folder.compact()
    opened = lambda: JobFolder(location).open(JOB, FINGERPRINT).close()
    benchmark.pedantic(opened, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update({"committed": MANY, "per_shard_s": benchmark.stats.stats.median / MANY,
                                 "load_average_1min": os.getloadavg()[0]})


@pytest.fixture(scope="module")
def s3():
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench")
    yield "s3://bench"
    server.stop()


@pytest.mark.parametrize("committed", [0, 2_000])
def test_commit_latency_loopback_s3(benchmark, s3, committed):
    """moto is a Python server: its absolute times are its own; what matters is that they do not grow."""
    with JobFolder(f"{s3}/job-{committed}").open(JOB, FINGERPRINT) as folder:
        fill(folder, committed, threads=16)
        assert len(Storage(folder.location).listing(COMMITS_DIR)) == committed
        bench_commits(benchmark, folder, rounds=100)


@pytest.mark.parametrize("dictionary", ["not on floats", "on every column"])
def test_encode_a_motion_shard(benchmark, dictionary):
    """One dhvae shard's results as Parquet bytes (2 samples x 2 people x 300 frames x 262 float32,
    with its label columns): the shard write's encoding, with the engine's choice of dictionary
    columns (``sink.dictionary_columns``) against Parquet's default of trying one on every column."""
    import numpy as np
    import pyarrow.parquet as pq

    from motionfleet.core.jobfolder.sink import dictionary_columns

    motion = np.random.default_rng(0).standard_normal((2, 2, 300, 262)).astype(np.float32)
    table = pa.table({"sample_id": ["a", "b"], "model": ["dhvae/official"] * 2, "weights": ["dummy, seed 0"] * 2,
                      "motion": pa.array(motion.tolist(), pa.list_(pa.list_(pa.list_(pa.float32()))))})
    use = dictionary_columns(table.schema) if dictionary == "not on floats" else True

    def encode() -> int:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", use_dictionary=use)
        return len(sink.getvalue())

    size = benchmark(encode)
    benchmark.extra_info.update({"bytes": size, "dictionary": dictionary})
