"""An object store that stalls, refuses the credentials or lacks the bucket (issue 23.2): the job
fails within a bounded time with one line (exit 1), and a rerun resumes; never a hang."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from motionfleet.core.jobfolder.sink import read_results
from motionfleet.core.jobfolder.storage import Storage

TIMEOUT_S, ATTEMPTS = 2, 2  # the store limits the jobs below run with
OPERATION_BOUND_S = TIMEOUT_S * ATTEMPTS + 2  # one stalled store operation, with the SDK's backoff
HANG_GUARD_S = 3 * 3 * OPERATION_BOUND_S  # 3x the documented job bound (the operation, the lease's beat, its release)
STARTUP_S = 90  # importing torch and building the tiny model on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_env(endpoint: str) -> dict:
    return dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                MOTIONFLEET_PROGRESS="0", MOTIONFLEET_S3_TIMEOUT=str(TIMEOUT_S), MOTIONFLEET_S3_ATTEMPTS=str(ATTEMPTS))


def moto_process(**env) -> tuple[subprocess.Popen, str]:
    """A moto S3 server in its own process (so that it can be paused); returns it and its endpoint."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto server did not start")


@pytest.fixture
def moto():
    server, endpoint = moto_process()
    yield endpoint, server
    os.kill(server.pid, signal.SIGCONT)
    server.kill()
    server.wait()


@pytest.fixture
def silent_endpoint():
    """Accepts every connection and never answers: a stalled store, not a refusing one."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []

    def accept():
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in held:
        conn.close()


def generate(location: str, prompts, count: int = 16) -> list[str]:
    prompts.write_text("".join(f"two people wave, take {i}\n" for i in range(count)))
    return [sys.executable, "-m", "motionfleet.cli", "generate", "--out", location, "--prompts", str(prompts),
            "--preset", "tiny", "--steps", "10", "--shard-size", "2", "--batch-size", "2", "--num-frames", "6",
            "--workers", "0"]


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("motionfleet: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def make_bucket(endpoint: str, name: str = "jobs") -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=name)


def test_wrong_credentials_fail_with_one_line_naming_the_variables(tmp_path):
    server, endpoint = moto_process(INITIAL_NO_AUTH_ACTION_COUNT="0")  # every key is unknown to this server
    try:
        run = subprocess.run(generate("s3://jobs/job", tmp_path / "p.txt"), env=store_env(endpoint), capture_output=True,
                             text=True, timeout=STARTUP_S + HANG_GUARD_S)
    finally:
        server.kill()
        server.wait()
    assert run.returncode == 1, run.stderr
    line = one_error_line(run.stderr)
    assert "refused the credentials" in line and "AWS_ACCESS_KEY_ID" in line and "s3://jobs/job" in line, line


def test_a_missing_bucket_fails_with_one_line_saying_to_create_it(moto, tmp_path):
    endpoint, _ = moto
    run = subprocess.run(generate("s3://nobucket/job", tmp_path / "p.txt"), env=store_env(endpoint), capture_output=True,
                         text=True, timeout=STARTUP_S + HANG_GUARD_S)
    assert run.returncode == 1, run.stderr
    line = one_error_line(run.stderr)
    assert "no bucket nobucket" in line and "create the bucket, or fix --out" in line, line


def test_a_store_that_never_answers_fails_the_job_within_the_bound(silent_endpoint, tmp_path):
    started = time.monotonic()
    run = subprocess.run(generate("s3://jobs/job", tmp_path / "p.txt"), env=store_env(silent_endpoint),
                         capture_output=True, text=True, timeout=STARTUP_S + HANG_GUARD_S)
    assert time.monotonic() - started < STARTUP_S + HANG_GUARD_S
    assert run.returncode == 1, run.stderr
    line = one_error_line(run.stderr)
    assert "did not answer within 2 x 2 s" in line and silent_endpoint in line, line


def test_a_store_stalled_mid_job_fails_it_in_bounded_time_and_the_rerun_resumes(moto, tmp_path, monkeypatch):
    endpoint, server = moto
    make_bucket(endpoint)
    location, env = "s3://jobs/stalled", store_env(endpoint)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(name, env[name])  # this process reads the folder too
    cmd = generate(location, tmp_path / "p.txt")
    commits = lambda: sum(name.endswith(".json") for name in Storage(location).listing("commits"))
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while commits() < 1 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGSTOP)
    stalled_at = time.monotonic()
    try:
        _, stderr = job.communicate(timeout=HANG_GUARD_S)
    finally:
        job.kill()
        os.kill(server.pid, signal.SIGCONT)
    assert time.monotonic() - stalled_at < HANG_GUARD_S
    assert job.returncode == 1, stderr
    assert "did not answer" in one_error_line(stderr)
    assert 1 <= commits() < 8, "the stall should land mid-job (16 prompts, 8 shards)"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    keys = [(r["sample_id"], r["repeat"]) for r in read_results(location).select(["sample_id", "repeat"]).to_pylist()]
    assert len(keys) == len(set(keys)) == 16
