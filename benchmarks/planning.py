"""Planning a 10^6-prompt generate job (issue 14.2): time to plan, time to the first commit and the
driver's peak resident memory (VmHWM), for a .jsonl and a .parquet prompt file.

Planning is measured in this process (``dhvae.family.plan``, one run: it streams the file once).
The job is ``motionfleet generate --workers 0`` in a child process (so its peak RSS includes the
tiny model and torch: an upper bound on a Ray driver's): this script polls the job folder for the
first commit record, reads the child's VmHWM from /proc, then stops it. The job runs shards of 16
(62,500 descriptors, 16x the default's 3,907: the driver's plan is at its largest) so that the
first commit measures planning, not 256 samples of model time on a shared 2-core machine.

    python benchmarks/planning.py [--prompts 1000000] [--json benchmarks/results/planning_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from motionfleet.dhvae.family import plan
from motionfleet.dhvae.runner import GenerateSettings, ModelSpec

JOB = ["--preset", "tiny", "--steps", "1", "--num-frames", "8", "--batch-size", "16", "--shard-size", "16", "--workers", "0"]


def write_prompts(folder: Path, count: int) -> list[Path]:
    ids = [f"prompt-{i:07d}" for i in range(count)]
    texts = [f"two people shake hands, take {i % 97} steps and wave" for i in range(count)]
    jsonl = folder / "prompts.jsonl"
    with open(jsonl, "w") as file:
        for i, t in zip(ids, texts):
            file.write(json.dumps({"id": i, "text": t}) + "\n")
    parquet = folder / "prompts.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), parquet, row_group_size=65_536)
    return [jsonl, parquet]


def time_plan(path: Path) -> dict:
    start = time.perf_counter()
    shards = plan(str(path), ModelSpec(preset="tiny"), GenerateSettings(), None, path.parent).shards
    return {"plan_s": time.perf_counter() - start, "shards": len(shards)}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def time_first_commit(path: Path | None, out: Path, limit_s: float = 300.0) -> dict:
    """``path`` None: the built-in 143 prompts, the baseline of torch, the model and the engine."""
    prompts = ["--prompts", str(path)] if path else []
    command = [sys.executable, "-m", "motionfleet", "generate", *prompts, "--out", str(out), *JOB]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list((out / "commits").glob("shard-*.json")) if (out / "commits").is_dir() else True:
            if child.poll() is not None or time.perf_counter() - start > limit_s:
                raise RuntimeError(f"no commit after {time.perf_counter() - start:.0f} s (exit {child.returncode})")
            time.sleep(0.05)
        first_commit_s = time.perf_counter() - start
        return {"first_commit_s": first_commit_s, "driver_peak_rss_mib": peak_rss_mib(child.pid)}
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"prompts": args.prompts, "job": JOB, "machine": os.uname().machine,
               "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        results["builtin"] = time_first_commit(None, Path(tmp) / "out-builtin")
        print("builtin", results["builtin"], flush=True)
        for path in write_prompts(Path(tmp), args.prompts):
            kind = path.suffix[1:]
            results[kind] = {"file_mib": path.stat().st_size / 2**20, **time_plan(path),
                             **time_first_commit(path, Path(tmp) / f"out-{kind}")}
            print(kind, results[kind], flush=True)
    results["load_average_1m_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
