"""The CPU side of ``benchmarks/gpu_check.sh``: its argument handling, its refusal without a GPU,
and the summary it writes from a results folder (``benchmarks/gpu_report.py``)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from motionfleet.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_dry_run_plans_every_headline_step(tmp_path):
    result = run("--dry-run", "--out", str(tmp_path / "gpu"), "--budget-s", "480")
    assert result.returncode == 0, result.stderr
    plan = result.stdout
    for expected in ("pytest -m gpu", "--batch-sizes 1,64,1024", "tensorrt", "torch-cudagraphs", "--precision fp16",
                     "--refine-preset paper", "reconstruct --demo", "test_decode_stage.py", "benchmarks.gpu_report"):
        assert expected in plan, expected
    shares = [int(line.split("(")[1].split("s)")[0]) for line in plan.splitlines() if "s): " in line]
    assert sum(shares) <= 480


@pytest.mark.parametrize("args,message", [(["--budget-s", "ten"], "whole number"), (["--budget-s", "30"], "at least 60"),
                                          (["--frobnicate"], "unknown argument"), (["--out"], "needs a folder")])
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_a_gpu(tmp_path):
    result = run("--out", str(tmp_path / "gpu"))
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr


def test_summary_from_a_results_folder(tmp_path):
    from benchmarks import gpu_report

    folder = tmp_path / "gpu"
    assert main(["bench", "--families", "dhvae", "--backends", "torch", "--preset", "tiny", "--steps", "2",
                 "--num-frames", "4", "--repeats", "3", "--batch-sizes", "1", "--out", str(folder / "bench")]) == 0
    (folder / "steps.tsv").write_text("tests\t0\t41\ndhvae_fp16\t124\t96\n")
    (folder / "gpu-tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_backends" name="test_a"/>'
        '<testcase classname="tests.test_backends" name="test_b"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_backends" name="test_c"><skipped/></testcase></testsuite></testsuites>')
    (folder / "socialmirror").mkdir()
    (folder / "socialmirror" / "report.json").write_text(json.dumps({"timing": {"frames": 96, "fps_end_to_end": 40.0,
                                                                                "stages": {"decode": 1.0}}}))
    (folder / "decode_stage.json").write_text(json.dumps({"benchmarks": [
        {"extra_info": {"decode_cpus": 2, "frames_per_s": 150.0}}, {"extra_info": {"decode_cpus": 1, "frames_per_s": 90.0}}]}))
    body = gpu_report.summarise(folder)
    assert body["tests"]["passed"] == 1 and body["tests"]["failed"] == ["tests.test_backends::test_b"]
    assert [s["timed_out"] for s in body["steps"]] == [False, True]
    assert body["benchmarks"][0]["batch"] == 1 and body["socialmirror"]["frames"] == 96
    assert [c["decode_cpus"] for c in body["decode_scaling"]] == [1, 2]
    assert "socialmirror decode on 2 CPUs: 150 frames/s" in gpu_report.lines(body)
    assert json.loads((folder / "gpu_check.json").read_text()) == body
    assert (folder / "gpu_check.png").stat().st_size > 10_000
    assert any("out of time" in line for line in gpu_report.lines(body))
