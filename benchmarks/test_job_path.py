"""The job a user runs against the model loop it is made of, in one session (issue 19: a gap between
them is a bug).

    python -m pytest benchmarks/test_job_path.py --benchmark-enable

dhvae: N prompts x 300 frames, 50 steps, batch 64, the official size with seeded dummy weights;
refine and reconstruct: their ``--demo`` jobs at every default, and the demo's inputs ``COPIES`` times
over as a user's files (an estimates Parquet file, a folder of videos). ``job`` is the command as typed (a
new process: imports, planning, worker start, warm-up, the model loop, commits, report) at the
default shard size and ``--workers``, run ``ROUNDS`` times, each run's report timeline kept
(``jobs.Timeline``: before the job, plan, stages, workers ready, shards, after). ``loop`` is the
family's runner over the same items, built (and warmed up where a job's worker is) outside the timing: all the items in one
call where the runner batches across shards (it cuts its own batches), else shard by shard as the
job runs them; one pass in a fresh process before each of the job's rounds, so the two alternate
(run in blocks, three loops then three jobs, the VM's speed drifted between the blocks: a refine
demo job's shards took 22-26 s against its loop's 18.8 s, 2026-12-06 21:07), timed in a process of
its own (``python -m benchmarks.test_job_path``: timed in pytest's, after the other cases, the
refine loop took 23.2 s against 18.5 s alone), the pass the job makes: a second pass is faster for
reasons no job has (generate's runner keeps each prompt's text features: 10.7 s against 12.0 s for
64 prompts). ``script`` is the same loop as a script of its own: its process's launch to the end of
its pass (the interpreter, imports, model build and warm-up, the pass), the start that any run pays
whoever wrote it. Each side's fastest run gives job / loop, what a user waits beyond the model, and
job / script, what the engine adds (planning, the job folder, commits, the report); each job round
against the loop run just before it gives ``job_over_loop_per_round``. dhvae's job / loop was ~3x at 64 prompts before batches
spanned shards (the default shards held 2 prompts, so the model ran batches of 2).
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.conftest import record

FRAMES, BATCH = 300, 64
VERBS = ("hug", "push", "greet", "follow", "dance with", "wave at", "chase", "help", "bow to", "high-five")
QUIET = {**os.environ, "MOTIONFLEET_PROGRESS": "0"}


def prompts(n: int) -> list[str]:
    return [f"one person {VERBS[i % len(VERBS)]}s the other, take {i}" for i in range(n)]


ROUNDS = 3  # of the job and of the loop's process: the machine's speed moves by up to 10 % from process to process


@pytest.mark.parametrize("count", [8, 64])
def test_dhvae_job_against_its_model_loop(benchmark, tmp_path, count):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts(count)) + "\n")
    loop = LoopRuns("generate", str(path))
    job = JobRuns(tmp_path, ["generate", "--prompts", str(path), "--num-frames", str(FRAMES), "--batch-size", str(BATCH)])
    benchmark.pedantic(job, setup=loop, rounds=ROUNDS, warmup_rounds=0)
    record_against_loop(benchmark, loop, job)


@pytest.mark.parametrize("command", ["refine", "reconstruct"])
def test_demo_job_against_its_model_loop(benchmark, tmp_path, command):
    loop = LoopRuns(command, str(tmp_path / "plan"))
    job = JobRuns(tmp_path, [command, "--demo"])
    benchmark.pedantic(job, setup=loop, rounds=ROUNDS, warmup_rounds=0)
    record_against_loop(benchmark, loop, job)


COPIES = 3  # of the demo's inputs in the large cases: 48 refine items, 27 reconstruct clips


@pytest.mark.parametrize("command", ["refine", "reconstruct"])
def test_large_job_against_its_model_loop(benchmark, tmp_path, command):
    """The demo's inputs ``COPIES`` times over, as a user's files (an estimates Parquet file, a
    folder of videos), at the demo's settings: the start a job pays once, against more items."""
    inputs = LARGE_INPUTS[command](tmp_path / "inputs")
    loop = LoopRuns(command, str(tmp_path / "plan"), str(inputs))
    job = JobRuns(tmp_path, [command, LARGE_FLAGS[command], str(inputs), *(["--control"] if command == "refine" else [])])
    benchmark.pedantic(job, setup=loop, rounds=ROUNDS, warmup_rounds=0)
    record_against_loop(benchmark, loop, job)


def write_refine_estimates(folder: Path) -> Path:
    """The demo scenes ``COPIES`` times, ids made unique, as an estimates file (docs/refine.md)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from motionfleet.demo.scenes import demo_scenes
    from motionfleet.scorehoi.model import PRESETS

    records = demo_scenes(PRESETS["released"].condition_dim).records
    rows = [{"id": f"{r.sample_id}-{copy}", **dict(r.values)} for copy in range(COPIES) for r in records]
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "estimates.parquet")
    return folder / "estimates.parquet"


def write_reconstruct_videos(folder: Path) -> Path:
    """The demo corpus ``COPIES`` times, each video with its track file where the demo has one."""
    import shutil

    from motionfleet.demo.videos import write_demo_corpus

    demo = write_demo_corpus(folder.parent / "demo")
    folder.mkdir(parents=True)
    for copy in range(COPIES):
        for path in demo.iterdir():
            stem, _, suffix = path.name.partition(".")
            shutil.copy(path, folder / f"{stem}-{copy}.{suffix}")
    return folder


LARGE_INPUTS = {"refine": write_refine_estimates, "reconstruct": write_reconstruct_videos}
LARGE_FLAGS = {"refine": "--estimates", "reconstruct": "--videos"}


class JobRuns:
    """A call that runs ``motionfleet ARGV --out`` a new folder each time, keeping each run's
    report timeline (``jobs.Timeline``: where its seconds went) and ``outside_s``, the run's wall
    less the timeline's parts: the process's launch to its start and its exit (the interpreter's
    teardown took 0.8 s of it before the console command ended without one)."""

    def __init__(self, tmp_path: Path, argv: list[str]):
        self.tmp_path, self.argv, self.timelines = tmp_path, argv, []

    def __call__(self) -> None:
        out = self.tmp_path / f"job-{len(self.timelines)}"
        start = time.perf_counter()
        result = subprocess.run(["motionfleet", *self.argv, "--out", str(out)], capture_output=True, text=True, env=QUIET)
        wall = time.perf_counter() - start
        assert result.returncode == 0, result.stderr[-2000:]
        timeline = json.loads((out / "report.json").read_text())["timeline"]
        self.timelines.append({**timeline, "outside_s": wall - sum(v for v in timeline.values() if v is not None)})


class LoopRuns:
    """The model loop of a case, ``loop_s`` in a new interpreter, run before each of the job's rounds
    (pytest-benchmark's untimed ``setup``), so that the two alternate and a drift of the machine's
    speed reaches both. Each run: ``(pass_s, script_s, items)``, ``script_s`` the process's launch
    to the end of its pass (CLOCK_MONOTONIC is one clock for every process of the machine)."""

    def __init__(self, command: str, where: str, inputs: str = ""):
        self.argv = [sys.executable, "-m", "benchmarks.test_job_path", command, where, inputs]
        self.runs: list[tuple[float, float, int]] = []

    def __call__(self) -> None:
        launched = time.monotonic()
        result = subprocess.run(self.argv, capture_output=True, text=True, env=QUIET, cwd=Path(__file__).parent.parent)
        assert result.returncode == 0, result.stderr[-2000:]
        seconds, items, first_pass_end = json.loads(result.stdout.splitlines()[-1])
        self.runs.append((seconds, first_pass_end - launched, items))


def record_against_loop(benchmark, loop: LoopRuns, job: JobRuns) -> None:
    """Counts and, when timed, the ratios the issue asks for: each side's fastest run, and each job
    round against the loop run just before it (their median beside)."""
    passes, scripts, items = zip(*loop.runs)
    record(benchmark, 0, items[0], loop_s=min(passes), script_s=min(scripts), loop_runs_s=list(passes),
           timelines=job.timelines)
    if not benchmark.disabled:
        fastest, rounds = benchmark.stats.stats.min, benchmark.stats.stats.data
        per_round = [j / p for j, p in zip(rounds, passes)]
        benchmark.extra_info.update(job_s=fastest, job_over_loop=fastest / min(passes), job_over_script=fastest / min(scripts),
                                    job_over_loop_per_round=per_round, job_over_loop_median=statistics.median(per_round))


def loop_s(command: str, where: str, inputs: str = "") -> tuple[float, int, float]:
    """generate: ``where`` is the prompt file; refine / reconstruct: a folder for the plan of
    ``inputs`` (an estimates file, a folder of videos; none: the ``--demo`` plan), at the demo's settings."""
    from motionfleet.core import jobs, registry
    from motionfleet.core.execution.batcher import batches_across_shards

    family = registry.get(command)
    if command == "generate":
        _, spec, config = jobs.checked_build(family, {"num_frames": FRAMES, "batch_size": BATCH}, demo=False)
        plan = family.plan(where, spec, config, None, Path(where).parent / "plan")
    else:
        settings = {"control": True} if command == "refine" and inputs else {}
        _, spec, config = jobs.checked_build(family, settings, demo=not inputs)
        plan = family.plan(inputs or None, spec, config, None, Path(where))
    runner = family.runner(spec, config)
    runner.warm_up()  # as ``WarmWorker`` does: on eager torch on CPU, nothing
    shards = [tuple(s.items) for s in plan.shards]  # a streamed shard reads its rows here, untimed
    calls = [tuple(i for items in shards for i in items)] if batches_across_shards(runner) else shards
    seconds = _timed(lambda: [runner.run(items) for items in calls])  # once: a second pass reuses the runner's caches
    return seconds, sum(map(len, calls)), time.monotonic()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    print(json.dumps(loop_s(*sys.argv[1:4])))
