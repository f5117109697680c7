"""socialmirror's registration: video corpus -> two-person SMPL motion (``motionfleet reconstruct``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from motionfleet.core.errors import checkpoint_errors
from motionfleet.core.io.cache import cache_dir
from motionfleet.core.jobfolder.storage import is_uri
from motionfleet.core.options import Option, UsageError, build_from, existing_path, int_option, options_of
from motionfleet.core.registry import Evaluation, Family, Plan
from motionfleet.core.runtime import backends
from motionfleet.demo.videos import write_demo_corpus
from motionfleet.socialmirror import bench, evaluate, graphs, render, report
from motionfleet.socialmirror.front_end import probe_detector, probe_estimator
from motionfleet.socialmirror.model import PRESETS, load_model, probe_model
from motionfleet.socialmirror.runner import Reconstructor
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
from motionfleet.socialmirror.source import model_config, plan_job

# The order --help lists reconstruct's settings in (the rest follow in field order).
HELP_ORDER = ("steps", "eta", "sigma", "guidance_scale", "guidance_penetration", "guidance_aux", "joint_radius", "fps", "stride",
              "crop_size", "max_frame_size", "prefetch_clips", "seed", "backbone_weights", "estimator_weights",
              "detector_weights", "detector_size", "detector_confidence", "detect_every", "max_gap", "onnx_dir")
OPTIONS = options_of(ReconstructSettings, ReconstructSpec, order=HELP_ORDER)
# reconstruct's flags that ``export`` takes too: the front end's graphs, as the job loads and runs them
EXPORT_OPTIONS = tuple(o for o in OPTIONS if o.name in ("detector_weights", "detector_size", "estimator_weights"))


def demo_folder(out_dir) -> Path:
    """Where ``--demo`` writes its videos: inside a local job folder; videos are read from local
    files only, so for an object-store ``--out`` in the cache."""
    return cache_dir("demo_videos") if is_uri(str(out_dir)) else Path(out_dir) / "demo_videos"


def probe_front_end(spec: ReconstructSpec) -> None:
    """One line for a detector or HMR 2.0 file that cannot be used, before any work."""
    if spec.detector_weights is not None:
        probe_detector(spec.detector_weights)
    if spec.estimator_weights is not None:
        config = PRESETS["released"] if spec.checkpoint is not None else PRESETS[spec.preset]
        probe_estimator(spec.estimator_weights, config.image_feature_dim)


def check_settings(spec: ReconstructSpec, settings: ReconstructSettings) -> None:
    """The checks that read two settings or the model's sizes, before any work (the demo corpus included)."""
    if settings.onnx_dir is not None and settings.backend not in backends.GRAPH_BACKENDS:
        raise UsageError(f"--onnx-dir: --backend {settings.backend} runs no graph; give --backend "
                         f"{' or '.join(backends.GRAPH_BACKENDS)}, or leave --onnx-dir out")
    if settings.detect_every > settings.max_gap + 1:
        raise UsageError(f"--detect-every {settings.detect_every} leaves gaps longer than --max-gap {settings.max_gap}: "
                         f"detect at least every {settings.max_gap + 1} frames or raise --max-gap")
    clip_len = model_config(spec).frames
    if not 1 <= settings.stride <= clip_len:
        raise UsageError(f"--stride {settings.stride}: the model's clips are {clip_len} frames; give 1 to {clip_len} "
                         f"({clip_len}: clips side by side, less: overlapping)")


def plan(videos, spec: ReconstructSpec, settings: ReconstructSettings, shard_size,
         out_dir: Path) -> Plan:
    """Shards of at most ``shard_size`` clips of one video (default ``clips_per_shard``, whatever the workers: shard
    ids never depend on them). Not ``shard_size_for`` the corpus: a video that fails to decode
    part-way is rejected by each of its shards, so small default shards would reject it many times."""
    with checkpoint_errors(spec.checkpoint, "socialmirror"):
        probe_model(spec.checkpoint)
    probe_front_end(spec)
    check_settings(spec, settings)
    corpus = write_demo_corpus(demo_folder(out_dir)) if videos is None else videos
    settings = replace(settings, clips_per_shard=shard_size or ReconstructSettings.clips_per_shard)
    shards, job, stages = plan_job(corpus, spec, settings)
    if job["boxes"]["full_frame"]:
        print(f"motionfleet: warning: {report.full_frame_warning(job['boxes']['full_frame'])}", file=sys.stderr)
    return Plan(shards, job, stages)


# --- its evaluation (``motionfleet evaluate --family socialmirror``) -----------------------------


def evaluation_options() -> tuple[Option, ...]:
    """reconstruct's settings, and the replications."""
    from motionfleet.core import jobs

    return jobs.engine_options(FAMILY) + FAMILY.options + (int_option("replications", 2, "seeded reconstructions of the whole set", low=1),)


def run_evaluation(out, dataset, workers, address, options: dict) -> dict:
    settings = {k: v for k, v in options.items() if k != "replications"}
    return evaluate.evaluate(out, settings, dataset, options.get("replications") or 2, workers, address)


EVALUATION = Evaluation(
    protocol=evaluate.PROTOCOL, options=evaluation_options, run=run_evaluation,
    lower_is_better=evaluate.LOWER_IS_BETTER, dataset="a folder with videos/ and ground_truth.parquet", dataset_is_folder=True,
)


FAMILY = Family(
    name="socialmirror", command="reconstruct", summary="video corpus -> two-person SMPL motion (socialmirror)",
    example="motionfleet reconstruct --videos clips/ --out runs/rec --workers 2",
    unit="clip", id_column="video_id", presets=tuple(PRESETS), default_preset=ReconstructSpec.preset,
    inputs=Option("videos", None, "folder of videos, .txt or .parquet manifest (path, track_path, caption), "
                  "or one video file", checks=(existing_path,), metavar="PATH"),
    options=OPTIONS, build=build_from(ReconstructSpec, ReconstructSettings), plan=plan, runner=Reconstructor, summarise=report.summarise,
    report_lines=report.report_lines, load_model=load_model, graphs=graphs.family_graphs, export_options=EXPORT_OPTIONS,
    demo=True, evaluation=EVALUATION,
    bench=bench.BENCH, render=render.RENDER,
    defaults={"batch_size": ReconstructSettings.batch_size},
)
