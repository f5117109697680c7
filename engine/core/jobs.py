"""Jobs: plan shards, skip committed ones, run the rest, commit, report.

``run_shards`` is the part every job shares; ``generate`` is the dhvae job built on it.
A worker is any object with ``run(items) -> (results table, rejected table, timings)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from motionfleet.common.weights import weights_description
from motionfleet.core import executors
from motionfleet.core.digests import weights_digest
from motionfleet.core.report import aits_report, write_report
from motionfleet.core.shards import Shard, plan_shards
from motionfleet.core.sink import JobFolder, whole_job_wall_s
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec
from motionfleet.dhvae.source import load_prompts

DEFAULT_SHARD_SIZE = 256


def job_fingerprint(job: dict) -> str:
    """A digest of what decides the output bytes (not batch size, workers or scheduling)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def run_shards(out_dir: str | Path, job: dict, shards: list[Shard], make_worker: Callable,
               workers: int, address: Optional[str], device: str, unit: str = "item",
               policy: Optional[executors.FaultPolicy] = None) -> tuple[list, list, list, float]:
    """Run the shards not yet committed in ``out_dir`` (a path or URI); returns (this run's finished
    shards, the shards that failed after their retries: recorded in ``out_dir/failed``, retried by a
    rerun, every committed shard of the job, the job's wall seconds over all its runs).

    ``make_worker`` must be picklable (it is shipped to Ray actors, which build their own model).
    ``workers == 0`` runs in this process without Ray. ``unit`` names a work item on the progress bar.
    """
    out_dir = str(out_dir)
    metadata = {"motionfleet.job": json.dumps(job, sort_keys=True)}
    progress = executors.Progress(job["job"], unit)
    policy = policy or executors.FaultPolicy()
    with executors.output_errors(out_dir):
        folder = JobFolder(out_dir).open(job, job_fingerprint(job))
    with folder:
        if workers == 0:
            outcome = executors.run_in_process(make_worker, shards, folder, out_dir, metadata, progress, policy)
        else:
            outcome = executors.run_on_ray(make_worker, shards, folder, out_dir, metadata, progress, workers, address,
                                           device, policy)
        folder.clean_up()
        summaries = folder.summaries()
    done = [executors.shard_done_from_summary(s) for s in summaries]
    return outcome.done, outcome.failed, done, whole_job_wall_s(summaries)


def run_summary(ran: list, failed: list, done: list, shards: list, workers: int) -> dict:
    """What every report says about the last run (``ran``, ``failed``) and the whole job (``done``)."""
    return {"workers": workers, "nodes": len({d.node for d in ran if d.node}), "shards_run": len(ran),
            "shards_failed": len(failed), "shards_committed": len(done), "shards_total": len(shards)}


def generate(out_dir: str | Path, spec: ModelSpec, settings: GenerateSettings, prompts: Optional[str] = None,
             repeats: int = 1, shard_size: int = DEFAULT_SHARD_SIZE, workers: int = 1,
             address: Optional[str] = None, policy: Optional[executors.FaultPolicy] = None) -> Optional[dict]:
    """Run (or resume) a generate job; returns the report, or None when nothing was left to do."""
    prompt_set = load_prompts(prompts)
    shards = plan_shards(prompt_set.records, repeats, shard_size)
    job = {
        "job": "generate", "family": spec.family, "model": asdict(spec),
        "weights": weights_description(spec.checkpoint, spec.dummy_seed),
        "text_encoder_weights_sha256": weights_digest(spec.text_encoder_weights),
        "settings": {k: v for k, v in asdict(settings).items() if k != "batch_size"},
        "prompts": {"source": prompt_set.name, "sha256": prompt_set.digest, "count": len(prompt_set.records)},
        "repeats": repeats, "shard_size": shard_size,
    }
    make_worker = executors.WarmWorker(DHVAEGenerator, spec, settings)
    ran, failed, done, wall = run_shards(out_dir, job, shards, make_worker, workers, address, settings.device,
                                    unit="sample", policy=policy)
    if not ran and not failed:
        return None
    return write_report(out_dir, {
        "job": "generate", "model": f"{spec.family}/{spec.preset}", "weights": job["weights"],
        "settings": asdict(settings), "prompts": job["prompts"], "repeats": repeats,
        **run_summary(ran, failed, done, shards, workers), "timing": aits_report(done, wall),
    })


def reconstruct(out_dir: str | Path, videos: Optional[str], spec, settings, workers: int = 1,
                address: Optional[str] = None, demo: bool = False,
                policy: Optional[executors.FaultPolicy] = None) -> Optional[dict]:
    """Run (or resume) a reconstruct job over a video corpus (``demo``: write and use
    ``out_dir/demo_videos``); returns the report, or None when nothing was left to do."""
    from motionfleet.core.report import stage_report
    from motionfleet.socialmirror import runner as rec

    corpus = rec.write_demo_corpus(Path(out_dir) / "demo_videos") if demo else videos
    shards, job = rec.plan_job(corpus, spec, settings)
    make_worker = executors.WarmWorker(rec.Reconstructor, spec, settings)
    ran, failed, done, wall = run_shards(out_dir, job, shards, make_worker, workers, address, settings.device,
                                    unit="clip", policy=policy)
    if not ran and not failed:
        return None
    return write_report(out_dir, {
        "job": "reconstruct", "model": rec.model_name(spec),
        "weights": job["weights"], "settings": asdict(settings), "corpus": job["corpus"],
        **run_summary(ran, failed, done, shards, workers), "timing": stage_report(done, wall),
    })


def refine(out_dir: str | Path, estimates: Optional[str], spec, settings, control: bool = False,
           shard_size: int = DEFAULT_SHARD_SIZE, workers: int = 1, address: Optional[str] = None,
           policy: Optional[executors.FaultPolicy] = None) -> Optional[dict]:
    """Run (or resume) a refine job over a Parquet of initial estimates (None: the built-in demo
    scenes); ``control`` also refines every row with guidance off. Returns the report, or None
    when nothing was left to do."""
    from motionfleet.core.report import fps_report
    from motionfleet.core.sink import read_results
    from motionfleet.scorehoi import runner as ref

    shards, job = ref.plan_job(estimates, spec, settings, control, shard_size)
    make_worker = executors.WarmWorker(ref.ScoreHOIRefiner, spec, settings)
    ran, failed, done, wall = run_shards(out_dir, job, shards, make_worker, workers, address, settings.device,
                                    unit="estimate", policy=policy)
    if not ran and not failed:
        return None
    return write_report(out_dir, {
        "job": "refine", "model": f"scorehoi/{spec.preset}", "weights": job["weights"],
        "body_model": job["body_model"], "settings": asdict(settings), "estimates": job["estimates"],
        "variants": job["variants"], **run_summary(ran, failed, done, shards, workers),
        "timing": fps_report(done, wall), "quality": ref.quality_summary(read_results(out_dir)),
    })
