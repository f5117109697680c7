"""SIGTERM (what Kubernetes, Slurm and ``ray job stop`` send) stops a job the way Ctrl-C does: exit
143 with one line, the lease released, no partial or temporary file left, the embedded Ray cluster's
processes gone; rerunning the same command gives every prompt exactly once."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from killed_job import committed

import motionfleet
from motionfleet.core.execution.ray.reaper import descendants, start_ticks
from motionfleet.core.jobfolder.storage import TEMPORARY

ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1")
PROMPTS = 24
STOPPED = "motionfleet: terminated (SIGTERM): committed shards are kept; run the same command again to resume"

# The CLI with one write of ``sys.argv[1]`` (``results``: a worker's attempt file, ``commits``: the
# driver's commit record) made to send this process SIGTERM on the second shard, while the bytes are
# on disk but before the write finishes (the sleep is where the handler runs).
STOP_INSIDE_A_WRITE = """
import os, signal, sys, time
from motionfleet import cli
from motionfleet.core.jobfolder import storage

folder, seen, write = sys.argv.pop(1), [], storage._write_durably
def write_then_stop(path, data):
    write(path, data)
    if path.parent.name == folder:
        seen.append(path)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
storage._write_durably = write_then_stop
sys.exit(cli.main())
"""


def generate(tmp_path, workers: int, steps: int = 30) -> tuple[list[str], object]:
    out, prompts = tmp_path / "job", tmp_path / "prompts.txt"
    prompts.write_text("".join(f"two people greet each other, take {i}\n" for i in range(PROMPTS)))
    return ["generate", "--prompts", str(prompts), "--out", str(out), "--preset", "tiny", "--steps", str(steps),
            "--num-frames", "8", "--shard-size", "4", "--batch-size", "4", "--workers", str(workers)], out


def assert_stopped_cleanly(returncode: int, err: str, out) -> dict:
    """The stop's exit code and line, the lease released, no temporary and no partial file (an attempt
    the stop left uncommitted may leave whole files, which the rerun removes); returns the commits."""
    assert returncode == 143 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == STOPPED
    assert not list((out / "_lock").iterdir())  # released, not left to expire
    assert not [p for p in out.rglob("*") if TEMPORARY.match(p.name)]
    for path in (p for sub in ("results", "rejected") for p in (out / sub).iterdir()):
        assert pq.ParquetFile(path).metadata.num_rows >= 0, path  # whole: its footer reads
    records = committed(out)
    assert 1 <= len(records) < PROMPTS // 4
    return records


def assert_rerun_gives_each_prompt_once(argv: list[str], out, before: dict) -> None:
    rerun = subprocess.run([sys.executable, "-m", "motionfleet", *argv], env=ENV, capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    keys = motionfleet.read_results(out)["sample_id"].to_pylist()
    assert len(keys) == len(set(keys)) == PROMPTS
    after = committed(out)
    assert {s: after[s]["files"] for s in before} == {s: r["files"] for s, r in before.items()}
    named = {out / f["path"] for r in after.values() for f in r["files"].values()}
    assert {p for sub in ("results", "rejected") for p in (out / sub).iterdir()} == named


def sigterm_after_first_commit(argv: list[str], out) -> tuple[subprocess.Popen, str, list[tuple[int, int]]]:
    """Run the CLI, SIGTERM the driver alone (as Kubernetes does) once a shard is committed; returns
    the driver, its stderr and the (pid, start time) of every process it had started by then."""
    driver = subprocess.Popen([sys.executable, "-m", "motionfleet", *argv], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not committed(out) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    started = [(pid, start_ticks(pid)) for pid in descendants(driver.pid)]
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    return driver, err, [(pid, ticks) for pid, ticks in started if ticks is not None]


def test_sigterm_in_process_stops_like_ctrl_c_and_the_rerun_gives_each_prompt_once(tmp_path):
    argv, out = generate(tmp_path, workers=0)
    driver, err, _ = sigterm_after_first_commit(argv, out)
    before = assert_stopped_cleanly(driver.returncode, err, out)
    assert_rerun_gives_each_prompt_once(argv, out, before)


@pytest.mark.parametrize("folder", ["results", "commits"])
def test_sigterm_inside_a_write_leaves_no_partial_file_and_the_rerun_gives_each_prompt_once(tmp_path, folder):
    argv, out = generate(tmp_path, workers=0, steps=2)
    stopped = subprocess.run([sys.executable, "-c", STOP_INSIDE_A_WRITE, folder, *argv], env=ENV,
                             capture_output=True, text=True, timeout=600)
    before = assert_stopped_cleanly(stopped.returncode, stopped.stderr, out)
    assert len(before) == 1  # the second shard's write was the one stopped
    assert_rerun_gives_each_prompt_once(argv, out, before)


def test_sigterm_on_ray_stops_the_embedded_cluster_and_the_rerun_gives_each_prompt_once(tmp_path):
    argv, out = generate(tmp_path, workers=1)
    driver, err, started = sigterm_after_first_commit(argv, out)
    # Ray's C handler (absl's) must not take the signal: it prints a stack and aborts the process
    # 3 s later (exit -6) if the stop's cleanup is still running, as on a loaded machine
    assert "SIGTERM received" not in err, err[-3000:]
    before = assert_stopped_cleanly(driver.returncode, err, out)
    assert len(started) >= 2, "the driver had started no Ray cluster"  # its GCS, raylet, workers, reaper
    deadline = time.monotonic() + 10
    while (left := [pid for pid, ticks in started if start_ticks(pid) == ticks]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes of the stopped job still run: {left}"
    assert not list(Path(tempfile.gettempdir()).glob(f"mf-ray-{driver.pid}-*"))  # its session folder is gone
    assert_rerun_gives_each_prompt_once([*argv[:-1], "0"], out, before)  # in process: same job, same bytes


@pytest.fixture
def default_sigterm():
    """SIGTERM as a fresh process has it: an earlier test's ray.init leaves Ray's handler installed."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_raises_terminated_once_and_the_handler_before_comes_back(monkeypatch, default_sigterm):
    from motionfleet.core.io import interrupts

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with interrupts.sigterm_interrupts():
        assert signal.getsignal(signal.SIGTERM) is interrupts._interrupt  # else the kill below would end pytest
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what ray.init does (with its own handler)
        interrupts.reclaim()
        with pytest.raises(interrupts.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        os.kill(os.getpid(), signal.SIGTERM)  # a second one, during the cleanup: ignored
        time.sleep(0.2)
    assert interrupts.terminated() and issubclass(interrupts.Terminated, KeyboardInterrupt)  # Ctrl-C's paths
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # what the block ended with is restored
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_the_python_api_runs_a_job_with_sigterm_turned_into_terminated(monkeypatch, tmp_path, default_sigterm):
    from motionfleet.core import jobs
    from motionfleet.core.io import interrupts

    seen = []
    monkeypatch.setattr(jobs, "run", lambda *args, **kwargs: seen.append(signal.getsignal(signal.SIGTERM)))
    motionfleet.generate(["two people hug"], out=tmp_path / "job", workers=0)
    assert seen == [interrupts._interrupt] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_exit_codes_of_a_stop_are_in_the_help_and_the_docs():
    from motionfleet import cli

    assert "143  SIGTERM" in cli.build_parser().format_help() and "130  Ctrl-C" in cli.build_parser().format_help()
    jobs_page = (Path(__file__).resolve().parents[1] / "docs" / "jobs.md").read_text()
    assert "130 Ctrl-C; 143\nSIGTERM" in jobs_page
