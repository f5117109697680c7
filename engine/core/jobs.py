"""The one job runner: check settings -> plan -> skip committed shards -> run -> commit -> report.

Every family's job goes through ``run``; the family supplies its options, plan, runner and
report through its ``registry.Family``. A worker is any object with
``run(items) -> (results table, rejected table, stopwatch.Timings)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from motionfleet.core import registry
from motionfleet.core.execution import FaultPolicy, RunContext, WarmWorker, executor_for, shard_done_from_summary, worker_layout
from motionfleet.core.execution.planning import planning
from motionfleet.core.execution.policy import output_errors
from motionfleet.core.execution.stages import Stage, committed_files, stage_location
from motionfleet.core.jobfolder.report import build_report, read_report, utc_now, write_report
from motionfleet.core.jobfolder.sink import JobFolder, whole_job_wall_s
from motionfleet.core.options import Option, UsageError, dummy_seed_option, existing_path, float_option, int_option, workers_option
from motionfleet.core.runtime.stopwatch import total
from motionfleet.core.shards import Shard

DEVICES = ("auto", "cpu", "cuda")


def engine_options(family: registry.Family) -> tuple[Option, ...]:
    """The settings every job command has (the family may change their defaults)."""
    from motionfleet.core.runtime.backends import BACKENDS, PRECISIONS

    options = (
        Option("checkpoint", None, "model folder (model.safetensors + config.json) or a released checkpoint; "
               "none: seeded dummy weights of --preset", checks=(existing_path,), metavar="PATH"),
        Option("preset", family.default_preset, "model size, for dummy weights", choices=family.presets),
        dummy_seed_option(),
        int_option("batch_size", 64, "work items per model call", low=1),
        Option("device", "auto", "where the models run; auto: cuda if torch sees a GPU, else cpu", choices=DEVICES),
        Option("backend", "torch", "what runs the models (docs/export.md says which)", choices=BACKENDS),
        Option("precision", "fp32", "fp16 / bf16 only where the device computes in them natively",
               choices=PRECISIONS),
    )
    return tuple(dataclasses.replace(o, default=family.defaults[o.name]) if o.name in family.defaults else o
                 for o in options)


RUN_OPTIONS = (
    workers_option("workers", "Ray actors, one model each; 0: run in this process without Ray; auto: one per GPU, "
                   "or one per node of a cluster given with --address, and in this process on a machine without "
                   "--address and with at most one GPU (the report says what it chose)"),
    int_option("shard_size", None, "work items per shard, the unit of commit and retry (default: the items / "
               "32 rounded up, at most the family's size; never depends on --workers)", low=1),
    Option("address", None, "join the Ray cluster at this address instead of starting one", metavar="HOST:PORT"),
    float_option("shard_timeout", None, "seconds a worker may spend on one shard before it is killed and the shard "
                 "retried (default: 5x the slowest shard so far, >= 60)", above=0.0),
    int_option("shard_attempts", 3, "tries of a failing shard before it is recorded in OUT/failed/ and the job "
               "goes on", low=1),
)
RUN_NAMES = tuple(o.name for o in RUN_OPTIONS)


def all_options(family: registry.Family) -> tuple[Option, ...]:
    return engine_options(family) + family.options


def settings_for(family: registry.Family, given: dict[str, Any]) -> dict[str, Any]:
    """Every setting of ``family``: the given ones parsed and checked, the rest their defaults."""
    options = {o.name: o for o in all_options(family)}
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r} for {family.command}; settings: {', '.join(options)}")
    return {name: option.value(given.get(name)) for name, option in options.items()}


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def job_fingerprint(job: dict) -> str:
    """A digest of what decides the output bytes (not batch size, workers or scheduling)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def run(command: str, inputs: Any = None, *, out: str | Path, demo: bool = False,
        command_line: Optional[list[str]] = None, process_started_at: Optional[float] = None, **settings) -> dict:
    """Run (or resume) the job of ``command`` (or family name) over ``inputs`` into ``out``; returns
    the report (``CommittedBefore``, the folder's report, when every shard was already committed).
    ``settings``: the family's, the engine's and the run's (``workers``, ``shard_size``,
    ``address``, ``shard_timeout``, ``shard_attempts``). Raises UsageError for a bad setting
    before any work. ``process_started_at``: epoch seconds the process that runs the job as its
    command started (the report's ``timeline`` then gives the seconds before the job)."""
    family = registry.get(command)
    run_values = {o.name: o.value(settings.pop(o.name, None)) for o in RUN_OPTIONS}
    values, spec, config = checked_build(family, settings, demo)
    inputs = checked_inputs(family, inputs, demo)
    check_out(out)
    return run_built(family, None if demo else inputs, spec, config, out=out, device=values["device"],
                     settings={**values, **run_values}, command_line=command_line,
                     process_started_at=process_started_at, **run_values)


def checked_build(family: registry.Family, given: dict[str, Any], demo: bool = False) -> tuple[dict, Any, Any]:
    """(every setting, spec, settings object) of ``family`` from the ``given`` settings, checked:
    UsageError for a bad value, before any work; ``device`` auto resolved."""
    values = settings_for(family, given)
    if demo and not family.demo:
        raise UsageError(f"{family.command} has no --demo")
    values["device"] = resolve_device(values["device"])
    from motionfleet.core.runtime.backends import check_backend

    check_backend(values["backend"], values["precision"], values["device"])
    spec, config = family.build({**values, "demo": demo})
    return values, spec, config


def checked_inputs(family: registry.Family, inputs: Any, demo: bool) -> Any:
    """The inputs the family's plan takes: a path checked (it must exist), anything else as given."""
    if inputs is None and not demo and family.demo:
        raise UsageError(f"{family.command} needs {family.inputs.flag} or --demo")
    return family.inputs.parse(str(inputs)) if isinstance(inputs, (str, Path)) else inputs


def run_built(family: registry.Family | str, inputs: Any, spec: Any, config: Any, *, out: str | Path,
              workers: int | str = "auto", shard_size: Optional[int] = None, address: Optional[str] = None,
              shard_timeout: Optional[float] = None, shard_attempts: int = 3, device: Optional[str] = None,
              settings: Optional[dict] = None, command_line: Optional[list[str]] = None,
              process_started_at: Optional[float] = None) -> dict:
    """The job of a family's already built ``spec`` and settings (``config``): what ``run`` does
    after checking; for code that holds those objects (e.g. an evaluation protocol). ``device``:
    where the workers run (default: ``config.device``)."""
    family = registry.get(family) if isinstance(family, str) else family
    started_at, clock = utc_now(), Timeline.start(process_started_at)
    requested, (workers, layout) = workers, worker_layout(workers, address, device or config.device)
    with planning(workers, address):  # planning work (probing videos) runs where the job will
        plan = family.plan(inputs, spec, config, shard_size, Path(out))
    clock.mark("plan")
    context = RunContext(str(out), {"job": family.command, "family": family.name, **plan.job}, workers=workers,
                         address=address, device=device or config.device, unit=family.unit,
                         batch_items=getattr(config, "batch_size", 1),
                         policy=FaultPolicy(attempts=shard_attempts, shard_timeout_s=shard_timeout))
    shards, stages = run_stages(plan.stages, plan.shards, context, spec, config)
    clock.mark("stages")
    ran, failed, done, wall = run_shards(context, shards, WarmWorker(family.runner, spec, config))
    ran_stages = any(s["shards"]["run"] or s["shards"]["failed"] for s in stages.values())
    stored = None if ran or failed or ran_stages else read_report(out)
    if stored is not None:
        return CommittedBefore(stored)
    settings = settings or {**dataclasses.asdict(config), "workers": workers, "shard_size": shard_size}
    report = build_report(family, plan, {**settings, "workers": requested}, ran, failed, done, wall, started_at,
                          {"requested": requested, "resolved": workers, "layout": layout}, command_line, out)
    report["timeline"] = clock.timeline(ran)
    report = write_report(out, {**report, "stages": stages} if stages else report)
    return report if ran or failed else CommittedBefore(report)


@dataclasses.dataclass
class Timeline:
    """Where one call of a job spent its time, in order: ``before_job_s`` (the process's start to
    the job's: interpreter, imports, the command line; None unless the process runs the job as its
    command), ``plan_s``, ``stages_s`` (stages' shards, e.g. reconstruct's tracks), ``workers_ready_s``
    (the executor's start to the first shard a worker took: Ray's start, model build, warm-up),
    ``shards_s`` (the first shard taken to the last written) and ``after_shards_s`` (commits,
    compaction, the report). Epoch seconds (``time.time``) throughout, not ``perf_counter``: a
    shard's start is its worker's epoch clock, the one clock the driver, Ray actors and other nodes
    share (a cluster's nodes' clocks may differ by their skew)."""

    before_job_s: Optional[float]
    marks: dict[str, float]

    @classmethod
    def start(cls, process_started_at: Optional[float]) -> "Timeline":
        now = time.time()
        return cls(None if process_started_at is None else now - process_started_at, {"job": now})

    def mark(self, name: str) -> None:
        self.marks[name] = time.time()

    def timeline(self, ran: list) -> dict:
        m, now = self.marks, time.time()
        first = min((d.started_at for d in ran), default=None)
        last = max((d.started_at + d.elapsed_s for d in ran), default=None)
        return {"before_job_s": self.before_job_s, "plan_s": m["plan"] - m["job"], "stages_s": m["stages"] - m["plan"],
                "workers_ready_s": None if first is None else first - m["stages"],
                "shards_s": None if first is None or last is None else last - first,
                "after_shards_s": None if last is None else now - last}


class CommittedBefore(dict):
    """The report of a job whose every shard was committed before this call (nothing ran): the
    folder's report.json, or, where that is missing, the report rebuilt from the commit records."""


def ran_nothing(report: dict) -> bool:
    """Whether ``report`` comes from a call that found its job already done."""
    return isinstance(report, CommittedBefore)


def check_out(out: str | Path) -> None:
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file; give a folder (it is created if missing)")


def run_stages(stages: tuple[Stage, ...], shards: list[Shard], context: RunContext, spec: Any,
               config: Any) -> tuple[list[Shard], dict]:
    """Run each stage's shards into its own job folder (``execution.stages``), before the job's;
    returns the job's shards with what they read from the stages, and each stage's report part."""
    reports = {}
    for stage in stages:
        job = {"job": f"{context.job['job']} {stage.name}", "stage": stage.name, **stage.job}
        stage_context = dataclasses.replace(context, out_dir=stage_location(context.out_dir, stage.name), job=job,
                                            unit=stage.unit)
        ran, failed, done, wall = run_shards(stage_context, stage.shards, WarmWorker(stage.runner, spec, config))
        shards = stage.attach(shards, committed_files(stage_context.out_dir))
        timing = total([d.timings for d in done])
        reports[stage.name] = {"shards": {"run": len(ran), "failed": len(failed), "committed": len(done),
                                          "total": len(stage.shards)},
                               "rows": {"results": sum(d.results for d in done), "rejected": sum(d.rejected for d in done)},
                               "wall_s": wall, "seconds": timing.seconds, "counts": timing.counts}
    return shards, reports


def run_shards(context: RunContext, shards: list[Shard], make_worker: Callable) -> tuple[list, list, list, float]:
    """Run the shards not yet committed in ``context.out_dir`` (a path or URI); returns (this run's
    finished shards, the shards that failed after their retries: recorded in ``out_dir/failed``,
    retried by a rerun, every committed shard of the job, the job's wall seconds over all its runs).

    ``make_worker`` must be picklable (it is shipped to Ray actors, which build their own model).
    ``context.workers == 0`` runs in this process without Ray.
    """
    with output_errors(context.out_dir):
        folder = JobFolder(context.out_dir).open(context.job, job_fingerprint(context.job))
    context = dataclasses.replace(context, out_dir=folder.location)  # absolute: workers may run in another folder
    with folder:
        outcome = executor_for(context.workers)(context).run(make_worker, shards, folder)
        folder.clean_up()
        folder.compact()
        summaries = folder.summaries()
    done = [shard_done_from_summary(s) for s in summaries]
    return outcome.done, outcome.failed, done, whole_job_wall_s(summaries)
