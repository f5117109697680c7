"""Jobs: plan shards, skip committed ones, run the rest, commit, report.

``run_shards`` is the part every job shares; ``generate`` is the dhvae job built on it.
A worker is any object with ``run(items) -> (results table, rejected table, timings)``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from motionfleet.engine import executors
from motionfleet.engine.generate import DHVAEGenerator, GenerateSettings, ModelSpec
from motionfleet.engine.models.weights import weights_description
from motionfleet.engine.report import aits_report, write_report
from motionfleet.engine.shards import Shard, plan_shards
from motionfleet.engine.sink import Manifest
from motionfleet.engine.sources import load_prompts

DEFAULT_SHARD_SIZE = 256


def job_fingerprint(job: dict) -> str:
    """A digest of what decides the output bytes (not batch size, workers or scheduling)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def run_shards(out_dir: str | Path, job: dict, shards: list[Shard], make_worker: Callable,
               workers: int, address: Optional[str], device: str) -> tuple[list, float]:
    """Run the shards not yet committed in ``out_dir``; returns (finished shards, wall seconds).

    ``make_worker`` must be picklable (it is shipped to Ray actors, which build their own model).
    ``workers == 0`` runs in this process without Ray.
    """
    out_dir = str(out_dir)
    manifest = Manifest(out_dir, job_fingerprint(job), job)
    metadata = {"motionfleet.job": json.dumps(job, sort_keys=True)}
    start = time.perf_counter()
    if workers == 0:
        done = executors.run_in_process(make_worker, shards, manifest, out_dir, metadata)
    else:
        done = executors.run_on_ray(make_worker, shards, manifest, out_dir, metadata, workers, address, device)
    return done, time.perf_counter() - start


class _MakeGenerator:
    """Picklable factory: each worker builds its own model and warms it up."""

    def __init__(self, spec: ModelSpec, settings: GenerateSettings):
        self.spec, self.settings = spec, settings

    def __call__(self) -> DHVAEGenerator:
        generator = DHVAEGenerator(self.spec, self.settings)
        generator.warm_up()
        return generator


def generate(out_dir: str | Path, spec: ModelSpec, settings: GenerateSettings, prompts: Optional[str] = None,
             repeats: int = 1, shard_size: int = DEFAULT_SHARD_SIZE, workers: int = 1,
             address: Optional[str] = None) -> Optional[dict]:
    """Run (or resume) a generate job; returns the report, or None when nothing was left to do."""
    prompt_set = load_prompts(prompts)
    shards = plan_shards(prompt_set.records, repeats, shard_size)
    job = {
        "job": "generate", "family": spec.family, "model": asdict(spec),
        "weights": weights_description(spec.checkpoint, spec.dummy_seed),
        "settings": {k: v for k, v in asdict(settings).items() if k != "batch_size"},
        "prompts": {"source": prompt_set.name, "sha256": prompt_set.digest, "count": len(prompt_set.records)},
        "repeats": repeats, "shard_size": shard_size,
    }
    done, wall = run_shards(out_dir, job, shards, _MakeGenerator(spec, settings), workers, address, settings.device)
    if not done:
        return None
    return write_report(out_dir, {
        "job": "generate", "model": f"{spec.family}/{spec.preset}", "weights": job["weights"],
        "settings": asdict(settings), "prompts": job["prompts"], "repeats": repeats,
        "workers": workers, "shards_run": len(done), "shards_total": len(shards),
        "timing": aits_report(done, wall),
    })
