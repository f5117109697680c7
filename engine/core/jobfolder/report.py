"""The run report (``report.json``): one shape for every family.

Top-level keys (``schema_version`` 1):

    schema_version, command, family       what ran
    command_line                          the argv of the CLI run (None from the Python API)
    started_at, finished_at               ISO 8601 UTC; wall_s their difference as perf_counter saw it
    host                                  hostname, platform, cpu_model, cpus, gpu (None without CUDA)
    versions                              motionfleet, motionfleet_revision, python, torch, numpy, pyarrow, ray, ...
    accelerator                           gpu, cuda, cudnn, driver (each None without CUDA)
    numerics                              deterministic_algorithms, cuda_matmul_allow_tf32, cudnn_allow_tf32, ...
    job                                   what decides the output bytes (model, weights, settings, inputs)
    settings                              every setting of the run, batch size and device included
    workers                               requested (a number or auto), resolved, layout (why), ran (distinct
                                          processes that ran shards), nodes
    shards                                run and failed (this run; failed ones are in failed/),
                                          committed (all runs), total
    rows                                  results, rejected (every committed shard)
    headline                              the family's figure: name, value, unit, meaning
                                          (dhvae: aits_s; socialmirror: fps_end_to_end; scorehoi: fps)
    timing                                the family's own breakdown
    ...                                   family extras (scorehoi: quality)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from motionfleet.core.io import provenance
from motionfleet.core.jobfolder.storage import Storage

REPORT = "report.json"
SCHEMA_VERSION = 1


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_report(family, plan, settings: dict, ran: list, failed: list, done: list, wall_s: float,
                 started_at: str, workers: dict, command_line, out_dir: str | Path) -> dict:
    """``ran``/``failed``: this run's shards; ``done``: every committed shard of the job, whose
    timings (over ``wall_s``, the job's seconds over all its runs) the family summarises; ``workers``:
    requested (a number or "auto"), resolved and the layout's reason."""
    summary = family.summarise(done, wall_s, out_dir)
    return {
        "schema_version": SCHEMA_VERSION, "command": family.command, "family": family.name,
        "command_line": command_line, "started_at": started_at, "finished_at": utc_now(), "wall_s": wall_s,
        **provenance.record(),
        "job": plan.job, "settings": settings,
        "workers": {**workers, "ran": len({d.worker for d in ran}),
                    "nodes": len({d.node for d in ran if d.node})},
        "shards": {"run": len(ran), "failed": len(failed), "committed": len(done), "total": len(plan.shards)},
        "rows": {"results": sum(d.results for d in done), "rejected": sum(d.rejected for d in done)},
        "headline": summary.headline, "timing": summary.timing, **summary.extra,
    }


def write_report(out_dir: str | Path, report: dict) -> dict:
    """Write ``report.json`` whole (a crash leaves the old report or the new one, never a part)."""
    Storage(str(out_dir)).write(REPORT, json.dumps(report, indent=2, default=str).encode())
    return report


def read_report(out_dir: str | Path) -> dict | None:
    """The folder's ``report.json``, or None where it has none; ``DamagedFile`` if it is not JSON."""
    storage = Storage(str(out_dir))
    if storage.size(REPORT) is None:
        return None
    report = storage.read_json(REPORT, f"delete {REPORT} and rerun the job to rebuild it")
    if not isinstance(report, dict):
        raise storage.damaged(REPORT, "not a report (a JSON object)", f"delete {REPORT} and rerun the job to rebuild it")
    return report


def headline_line(report: dict) -> str:
    h = report["headline"]
    value = "n/a" if h["value"] is None else f"{h['value']:.4g} {h['unit']}"
    return f"{h['name']} = {value}  ({h['meaning']})"


def common_lines(report: dict) -> list[str]:
    """The lines every family prints under its own: rows, workers, peak memory, what ran."""
    rows, workers, s = report["rows"], report["workers"], report["settings"]
    memory = report["timing"].get("peak_rss_mb", 0.0)
    return [
        f"rows {rows['results']}  rejected {rows['rejected']}  shards {report['shards']['run']}/"
        f"{report['shards']['total']}  {workers_text(workers)}  wall {report['wall_s']:.1f} s  peak RSS {memory:.0f} MiB",
        f"model {report['job'].get('model_name', report['family'])}  weights {report['job']['weights']}  "
        f"backend {s.get('backend')} {s.get('precision')} on {s.get('device')}",
        headline_line(report),
    ] + timeline_lines(report)


def timeline_lines(report: dict) -> list[str]:
    """Where this call's time went (``jobs.Timeline``); none for a report written before it."""
    t = report.get("timeline")
    if not t:
        return []
    parts = [("before the job", "before_job_s"), ("plan", "plan_s"), ("stages", "stages_s"),
             ("workers ready", "workers_ready_s"), ("shards", "shards_s"), ("after", "after_shards_s")]
    return ["time: " + ", ".join(f"{name} {t[key]:.2f} s" for name, key in parts
                                 if t.get(key) is not None and (key != "stages_s" or t[key] >= 0.005))]


def workers_text(workers: dict) -> str:
    """``--workers 0`` runs the shards in this process, without Ray: no worker to count."""
    resolved = workers.get("resolved", workers["requested"])  # reports before --workers auto lack it
    if resolved == 0:
        chosen = "" if workers.get("layout", "as asked") == "as asked" else f": {workers['layout']}"
        return f"workers: in process (--workers {workers['requested']}{chosen})"
    return f"workers {workers['ran']} of {resolved}"


def peak_memory(done: list) -> dict:
    """Peak resident set and device memory over the shards (MiB)."""
    return {"peak_rss_mb": max((d.peak_rss_mb for d in done), default=0.0),
            "peak_device_mb": max((d.peak_device_mb for d in done), default=0.0)}
