"""The README's main job through the console command, exactly as a user types it."""

import json
import os
import subprocess
import sys

import pytest
import torch
from killed_job import committed

ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0")


def motionfleet(*args, cwd=None):
    return subprocess.run(["motionfleet", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=1200)


@pytest.mark.slow
def test_generate_with_no_other_flag_then_rerun_writes_nothing(tmp_path):
    out = tmp_path / "x"
    first = motionfleet("generate", "--out", str(out), "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert "AITS" in first.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["timing"]["sentences"] == 143 and report["job"]["weights"] == "dummy, seed 0"
    assert report["settings"]["steps"] == 50 and report["settings"]["guidance_scale"] == 3.5
    assert report["timing"]["aits_s"] > 0 and "torch" in report["versions"]
    assert report["workers"]["ran"] == 2  # --workers 2: the 143 prompts make two shards, one per actor
    assert sum(r["summary"]["results"] for r in committed(out).values()) == 143
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = motionfleet("generate", "--out", str(out), "--workers", "2")
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_unsafe_checkpoint_is_a_clear_error_not_a_crash(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Payload()}, evil)
    result = motionfleet("generate", "--out", str(tmp_path / "o"), "--workers", "0", "--checkpoint", str(evil))
    assert result.returncode == 1  # a checkpoint error
    assert "refused" in result.stderr and "should-not-run" not in result.stdout


def test_missing_checkpoint_names_the_file(tmp_path):
    result = motionfleet("generate", "--out", str(tmp_path / "o"), "--workers", "0", "--checkpoint", str(tmp_path / "nope.ckpt"))
    assert result.returncode == 2 and "nope.ckpt" in result.stderr


def test_the_console_command_exits_with_mains_code_and_its_output_flushed(tmp_path):
    """``console`` ends the process at once: what ``main`` printed must still reach the pipe, and its
    exit code the shell."""
    usage = subprocess.run([sys.executable, "-m", "motionfleet", "generate", "--steps", "0", "--out", str(tmp_path / "x")],
                           capture_output=True, text=True, env=ENV, timeout=600)
    assert usage.returncode == 2 and usage.stderr.strip().endswith("--steps: must be >= 1, got 0")
    listed = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['motionfleet', '--version']; "
                             "from motionfleet.cli import console; print('buffered, never flushed by hand', end=''); console()"],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert listed.returncode == 0 and listed.stdout.startswith("buffered, never flushed by hand")
    closed = subprocess.run([sys.executable, "-c", "import sys; sys.stdout = None; "  # what Python makes of a closed fd 1
                             f"sys.argv = ['motionfleet', 'generate', '--steps', '0', '--out', {str(tmp_path / 'y')!r}]; "
                             "from motionfleet.cli import console; console()"], capture_output=True, text=True, env=ENV, timeout=600)
    assert closed.returncode == 2 and closed.stderr.strip() == "motionfleet: error: --steps: must be >= 1, got 0"


def test_the_report_says_where_the_commands_time_went_in_order(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one person hugs the other\ntwo people dance\n")
    launched = __import__("time").perf_counter()
    done = motionfleet("generate", "--preset", "tiny", "--prompts", str(prompts), "--out", str(tmp_path / "job"))
    wall = __import__("time").perf_counter() - launched
    assert done.returncode == 0, done.stderr
    timeline = json.loads((tmp_path / "job" / "report.json").read_text())["timeline"]
    parts = ["before_job_s", "plan_s", "stages_s", "workers_ready_s", "shards_s", "after_shards_s"]
    assert list(timeline) == parts and all(timeline[p] >= 0 for p in parts)
    assert timeline["before_job_s"] > 0.1  # the interpreter and torch's import, at the least
    assert sum(timeline.values()) <= wall
    assert done.stdout.count("time: before the job ") == 1


def test_a_job_run_through_the_api_has_no_before_the_job_time(tmp_path):
    import motionfleet as mf

    report = mf.generate(["one person hugs the other"], out=str(tmp_path / "job"), preset="tiny", workers=0)
    assert report["timeline"]["before_job_s"] is None and report["timeline"]["shards_s"] >= 0
