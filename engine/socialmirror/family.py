"""socialmirror's registration: video corpus -> two-person SMPL motion (``motionfleet reconstruct``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from motionfleet.common import yolox
from motionfleet.core.errors import checkpoint_errors
from motionfleet.core.io.cache import cache_dir
from motionfleet.core.jobfolder.storage import is_uri
from motionfleet.core.options import (
    Option,
    UsageError,
    existing_file,
    existing_path,
    file_option,
    finite,
    float_option,
    int_option,
    positive,
)
from motionfleet.core.registry import Evaluation, Family, Plan
from motionfleet.demo.videos import write_demo_corpus
from motionfleet.socialmirror import bench, evaluate, graphs, hmr2, render, report
from motionfleet.socialmirror.initial_estimate import build_initial_estimator
from motionfleet.socialmirror.model import PRESETS, load_model, probe_model
from motionfleet.socialmirror.runner import Reconstructor
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
from motionfleet.socialmirror.source import plan_job

DEFAULT_CLIPS_PER_SHARD = 64

def height_by_width(text: str) -> tuple[int, int]:
    """``"800x1440"`` -> (800, 1440)."""
    height, width = text.lower().split("x")
    return int(height), int(width)


height_by_width.kind = "HEIGHTxWIDTH (e.g. 800x1440)"  # type: ignore[attr-defined]  # what --detector-size takes


def multiples_of_32(size) -> str | None:
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(n, int) and n > 0 and n % 32 == 0 for n in size):
        return f"{size} must be two positive multiples of 32 (height x width, e.g. 800x1440)"
    return None


OPTIONS = (
    int_option("steps", 5, "DDIM steps over CloseInt's 100 train steps", low=1, high=100),
    float_option("eta", 0.0, "DDIM eta", low=0.0, high=1.0),
    float_option("sigma", 1.0, "noise scale of the start x_T ~ N(x_init, sigma^2)", low=0.0),
    float_option("guidance_scale", 0.0, "geometric guidance rho (0: off; try 0.05)", low=0.0),
    float_option("guidance_penetration", 1.0, "weight of the joint penetration term", low=0.0),
    float_option("guidance_aux", 1.0, "weight of the auxiliary 3D joint term", low=0.0),
    float_option("joint_radius", 0.08, "joint sphere radius (m) of the penetration term", above=0.0),
    Option("fps", 30.0, "frames per second the videos are resampled to", float, checks=(finite, positive),
           metavar="X"),
    int_option("stride", 16, "frames between clip starts (16: no overlap)", low=1),
    int_option("crop_size", 224, "person crop side for ResNet-50", low=32),
    int_option("max_frame_size", 640, "cap on the longer frame side before cropping", low=32),
    int_option("prefetch_clips", 4, "decoded clips queued ahead of the models", low=1),
    int_option("seed", 0, "job seed; each clip's noise comes from (seed, video id, clip index)", low=0),
    file_option("backbone_weights", "torchvision-format ResNet-50 weights file", existing_file),
    file_option("estimator_weights", "4D-Humans' HMR 2.0 checkpoint (epoch=35-step=1000000.ckpt): its features and "
                "initial pose start the diffusion; or our feature projection + regression head weights file", existing_file),
    file_option("detector_weights", "YOLOX / ByteTrack person detector ({'model': state_dict}, e.g. ByteTrack's "
                "bytetrack_x_mot17.pth.tar): videos without a track file are detected, tracked and paired", existing_file),
    Option("detector_size", (800, 1440), "detector input HEIGHTxWIDTH, multiples of 32 (CloseInt's demo: 800x1440)",
           height_by_width, checks=(multiples_of_32,), metavar="HxW"),
    float_option("detector_confidence", 0.23, "objectness x class score a detection needs (CloseInt's demo: 0.23)",
                 low=0.0, high=1.0),
    int_option("detect_every", 1, "detect every k-th frame; the tracker bridges the frames between", low=1),
    int_option("max_gap", 15, "frames one of the pair may be missing and still be interpolated; a clip holding a "
               "longer gap is rejected (pair_lost)", low=0),
    file_option("body_models", "folder with smpl/SMPL_NEUTRAL.pkl (default: a cached synthetic SMPL)"),
    file_option("estimates", "upstream Parquet of per-frame image features / initial estimates / aux joints",
                existing_file),
    Option("text_encoder", "minilm", "encoder of captions", choices=("minilm", "clip")),
    file_option("text_encoder_weights", "OpenAI's CLIP weights as a state dict (clip) or a saved MiniLM projection",
                existing_file),
)


def build(v: dict) -> tuple[ReconstructSpec, ReconstructSettings]:
    spec = ReconstructSpec(preset=v["preset"], checkpoint=v["checkpoint"], dummy_seed=v["dummy_seed"],
                           backbone_weights=v["backbone_weights"], estimator_weights=v["estimator_weights"],
                           detector_weights=v["detector_weights"], body_models=v["body_models"], estimates=v["estimates"],
                           text_encoder=v["text_encoder"],
                           text_encoder_weights=v["text_encoder_weights"])
    settings = ReconstructSettings(
        target_fps=v["fps"], stride=v["stride"], crop_size=v["crop_size"], max_frame_size=v["max_frame_size"],
        clips_per_shard=DEFAULT_CLIPS_PER_SHARD, steps=v["steps"], eta=v["eta"], sigma=v["sigma"],
        guidance_scale=v["guidance_scale"], guidance_penetration=v["guidance_penetration"],
        guidance_aux=v["guidance_aux"], joint_radius=v["joint_radius"], seed=v["seed"], batch_size=v["batch_size"],
        prefetch_clips=v["prefetch_clips"], device=v["device"], backend=v["backend"], precision=v["precision"],
        detector_size=tuple(v["detector_size"]), detector_confidence=v["detector_confidence"], detect_every=v["detect_every"], max_gap=v["max_gap"])
    return spec, settings


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
    """Shards of at most ``shard_size`` clips of one video (default 64, whatever the workers: shard
    ids never depend on them). Not ``shard_size_for`` the corpus: a video that fails to decode
    part-way is rejected by each of its shards, so small default shards would reject it many times."""
    with checkpoint_errors(spec.checkpoint, "socialmirror"):
        probe_model(spec.checkpoint)
    probe_front_end(spec)
    corpus = write_demo_corpus(demo_folder(out_dir)) if videos is None else videos
    settings = replace(settings, clips_per_shard=shard_size or DEFAULT_CLIPS_PER_SHARD)
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
    unit="clip", id_column="video_id", presets=tuple(PRESETS), default_preset="released",
    inputs=Option("videos", None, "folder of videos, .txt or .parquet manifest (path, track_path, caption), "
                  "or one video file", checks=(existing_path,), metavar="PATH"),
    options=OPTIONS, build=build, plan=plan, runner=Reconstructor, summarise=report.summarise,
    report_lines=report.report_lines, load_model=load_model, graphs=graphs.family_graphs, demo=True, evaluation=EVALUATION,
    bench=bench.BENCH, render=render.RENDER,
    defaults={"batch_size": 4},
)
