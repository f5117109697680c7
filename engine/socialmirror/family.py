"""socialmirror's registration: video corpus -> two-person SMPL motion (``motionfleet reconstruct``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from motionfleet.common import yolox
from motionfleet.core.errors import checkpoint_errors
from motionfleet.core.io.cache import cache_dir
from motionfleet.core.jobfolder.storage import is_uri
from motionfleet.core.options import Option, UsageError, build_from, existing_path, int_option, options_of
from motionfleet.core.registry import Evaluation, Family, Plan
from motionfleet.demo.videos import write_demo_corpus
from motionfleet.socialmirror import bench, evaluate, graphs, hmr2, render, report
from motionfleet.socialmirror.initial_estimate import build_initial_estimator
from motionfleet.socialmirror.model import PRESETS, load_model, probe_model
from motionfleet.socialmirror.runner import Reconstructor
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
from motionfleet.socialmirror.source import plan_job

# The order --help lists reconstruct's settings in (the rest follow in field order).
HELP_ORDER = ("steps", "eta", "sigma", "guidance_scale", "guidance_penetration", "guidance_aux", "joint_radius", "fps", "stride",
              "crop_size", "max_frame_size", "prefetch_clips", "seed", "backbone_weights", "estimator_weights",
              "detector_weights", "detector_size", "detector_confidence", "detect_every", "max_gap")
OPTIONS = options_of(ReconstructSettings, ReconstructSpec, order=HELP_ORDER)


def demo_folder(out_dir) -> Path:
    """Where ``--demo`` writes its videos: inside a local job folder; videos are read from local
    files only, so for an object-store ``--out`` in the cache."""
    return cache_dir("demo_videos") if is_uri(str(out_dir)) else Path(out_dir) / "demo_videos"


def probe_front_end(spec: ReconstructSpec) -> None:
    """One line for a detector or HMR 2.0 file that cannot be used, before any work (the tensors
    memory-mapped, not loaded)."""
    if spec.detector_weights is not None:
        with checkpoint_errors(spec.detector_weights, yolox.LAYOUT, yolox.EXPECTED_FILE):
            yolox.released_state_dict(spec.detector_weights)
    if spec.estimator_weights is None:
        return
    feature_dim = (PRESETS["released"] if spec.checkpoint is not None else PRESETS[spec.preset]).image_feature_dim
    fix = f"give 4D-Humans' released {hmr2.RELEASED_FILE} (HMR 2.0) or a projection + regression head file"
    with checkpoint_errors(spec.estimator_weights, "estimator", fix):
        if hmr2.is_released_file(spec.estimator_weights):
            hmr2.released_state_dict(spec.estimator_weights, hmr2.PRESETS[hmr2.preset_feeding(feature_dim)], mmap=True)
        else:
            build_initial_estimator(feature_dim, spec.estimator_weights)


def plan(videos, spec: ReconstructSpec, settings: ReconstructSettings, shard_size,
         out_dir: Path) -> Plan:
    """Shards of at most ``shard_size`` clips of one video (default ``clips_per_shard``, whatever the workers: shard
    ids never depend on them). Not ``shard_size_for`` the corpus: a video that fails to decode
    part-way is rejected by each of its shards, so small default shards would reject it many times."""
    with checkpoint_errors(spec.checkpoint, "socialmirror"):
        probe_model(spec.checkpoint)
    probe_front_end(spec)
    corpus = write_demo_corpus(demo_folder(out_dir)) if videos is None else videos
    settings = replace(settings, clips_per_shard=shard_size or ReconstructSettings.clips_per_shard)
    if settings.detect_every > settings.max_gap + 1:
        raise UsageError(f"--detect-every {settings.detect_every} leaves gaps longer than --max-gap {settings.max_gap}: "
                         f"detect at least every {settings.max_gap + 1} frames or raise --max-gap")
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
    report_lines=report.report_lines, load_model=load_model, graphs=graphs.family_graphs, demo=True, evaluation=EVALUATION,
    bench=bench.BENCH, render=render.RENDER,
    defaults={"batch_size": ReconstructSettings.batch_size},
)
