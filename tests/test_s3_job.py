"""Jobs writing to an S3-protocol server on loopback (moto's standalone server), issue 14.1."""

import os
import socket
import subprocess
import sys

import pytest
from killed_job import kill_after_commits
from moto import server as moto_server

from motionfleet.core.jobfolder.lease import FolderInUse
from motionfleet.core.jobfolder.sink import JobFolder, read_results, verify_folder
from motionfleet.core.jobfolder.storage import Storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    """A fresh S3 server on 127.0.0.1 with one bucket; the environment pyarrow (and a child job) reads."""
    import boto3

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="jobs")
    yield env
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_the_lease_and_refusals_hold_on_an_object_store(s3_env):
    location = "s3://jobs/leased"
    with JobFolder(location).open({"job": "t"}, "a" * 64):
        with pytest.raises(FolderInUse):
            JobFolder(location).open({"job": "t"}, "a" * 64)
    JobFolder(location).open({"job": "t"}, "a" * 64).close()
    assert Storage(location).listing("_lock") == {}


def test_killed_driver_writing_to_s3_then_rerun_gives_every_row_exactly_once(s3_env, tmp_path):
    location = "s3://jobs/generate"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"two people wave, take {i}\n" for i in range(16)))
    cmd = [sys.executable, "-m", "motionfleet.cli", "generate", "--out", location, "--prompts", str(prompts),
           "--preset", "tiny", "--steps", "10", "--shard-size", "2", "--batch-size", "2", "--num-frames", "6",
           "--workers", "0"]
    env = dict(os.environ, **s3_env, MOTIONFLEET_PROGRESS="0")
    commits = lambda: sum(name.endswith(".json") for name in Storage(location).listing("commits"))
    kill_after_commits(cmd, tmp_path, env, count=commits)
    assert 2 <= commits() < 8, "the kill should land mid-job (16 prompts, 8 shards)"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    keys = [(r["sample_id"], r["repeat"]) for r in read_results(location).select(["sample_id", "repeat"]).to_pylist()]
    assert len(keys) == len(set(keys)) == 16
    found = verify_folder(location)
    assert found["shards"] == 8 and not found["damaged"] and not found["uncommitted_files"]
    storage = Storage(location)
    assert storage.listing("_lock") == {} and "report.json" in storage.listing()
    assert not (tmp_path / "s3:").exists() and not os.path.exists("s3:")  # no local folder named after the URI
