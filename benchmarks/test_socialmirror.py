"""socialmirror (reconstruct) speed and memory: decode, crop, backbone, one denoiser step, one clip,
the whole pipeline's stage table, and peak RSS at two corpus sizes.

Released sizes throughout: 640 x 360 videos at 30 fps, 224-pixel person crops, ResNet-50, the
released denoiser, 5 DDIM steps, the synthetic SMPL. Frames per second count video frames (each
frame is two people).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.conftest import record
from motionfleet.bench import count_flops
from motionfleet.core.execution import WarmWorker
from motionfleet.demo.videos import write_demo_tracks, write_demo_video
from motionfleet.socialmirror import model as socialmirror
from motionfleet.socialmirror.runner import BACKBONE_CHUNK, Reconstructor, prepare_clip
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
from motionfleet.socialmirror.video import DecodeStats, iter_clips, iter_frames, read_tracks

SIZE = (640, 360)
CLIP_LEN = 16
SPEC = ReconstructSpec()
SETTINGS = ReconstructSettings()


def write_corpus(folder: Path, videos: int, frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        write_demo_video(folder / f"v{i:03d}.mp4", frames, 30, SIZE, seed=i)
        write_demo_tracks(folder / f"v{i:03d}.tracks.csv", frames, SIZE)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), 1, 4 * CLIP_LEN)


@pytest.fixture(scope="module")
def worker():
    return WarmWorker(Reconstructor, SPEC, SETTINGS)()


def first_clip(video: Path):
    frames = iter_frames(video, 30, max_size=SETTINGS.max_frame_size, stats=DecodeStats())
    clip = next(iter_clips(frames, CLIP_LEN, CLIP_LEN, read_tracks(video.with_suffix(".tracks.csv"))))
    frames.close()
    return clip


def test_decode_clip(benchmark, corpus):
    """Open, decode and resample the first 16 frames of a 640 x 360 video and cut the clip."""
    benchmark.pedantic(first_clip, (corpus / "v000.mp4",), rounds=10, warmup_rounds=1)
    record(benchmark, 0, CLIP_LEN)


def test_crop_clip(benchmark, corpus):
    """Both people's 224-pixel crops of one clip (the decode thread's other job)."""
    clip = first_clip(corpus / "v000.mp4")
    benchmark.pedantic(prepare_clip, (0, clip, SETTINGS.crop_size, True), rounds=10, warmup_rounds=1)
    record(benchmark, 0, CLIP_LEN)


@pytest.mark.parametrize("crops", [BACKBONE_CHUNK, 2 * CLIP_LEN])
def test_backbone_batch(benchmark, worker, crops):
    """ResNet-50 + projection on ``crops`` person crops (a clip is 32), in chunks of 8."""
    images = torch.randn(2, crops // 2, 3, SETTINGS.crop_size, SETTINGS.crop_size)
    step = lambda: worker.image_features(images)
    flat = images.reshape(-1, *images.shape[2:])
    with torch.no_grad():
        # counted in this thread: the job's backbone chunks run in a thread pool, which FLOP counting does not see
        flops = count_flops(lambda: worker.estimator.image_features(worker.backbone.features(flat)))
        benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    record(benchmark, flops, crops, note="items: crops")


@pytest.mark.parametrize("clips", [1, 4])
def test_denoiser_step(benchmark, worker, clips):
    """One call of the released denoiser on ``clips`` clips (2 people x 16 frames each)."""
    x, t, image, bbox, text = socialmirror.example_inputs(worker.config, clips)
    step = lambda: worker.model(x, t, image, bbox, text)
    with torch.no_grad():
        flops = count_flops(step)
        benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    record(benchmark, flops, clips, note="items: clips")


def test_one_clip(benchmark, worker, corpus):
    """One decoded clip through backbone, 5 DDIM steps and the body model (decode excluded)."""
    decoded = prepare_clip(0, first_clip(corpus / "v000.mp4"), SETTINGS.crop_size, "resnet50")

    def clip():
        encoded = worker.encode(decoded, None, None)
        return worker.bodies(worker.diffuse([encoded], [0]), [encoded])

    with torch.no_grad():
        benchmark.pedantic(clip, rounds=3, warmup_rounds=1)
    record(benchmark, 0, CLIP_LEN, note="items: frames")


def run_job(corpus: Path, out: Path, *extra: str) -> dict:
    """The job in its own process (peak RSS is the process's)."""
    cmd = [sys.executable, "-m", "motionfleet.cli", "reconstruct", "--videos", str(corpus), "--out", str(out),
           "--workers", "0", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, MOTIONFLEET_PROGRESS="0"))
    assert result.returncode == 0, result.stderr
    return json.loads((out / "report.json").read_text())


def test_pipeline_stage_table(benchmark, tmp_path):
    """The job in this process (4 videos of 96 frames, ``jobs.reconstruct`` as the CLI calls it,
    model loading included, Python start-up not): FPS end to end and per stage."""
    from motionfleet.core import jobs

    corpus = write_corpus(tmp_path / "videos", 4, 96)
    outs = iter(tmp_path / f"out-{i}" for i in range(10))
    report = benchmark.pedantic(lambda: jobs.reconstruct(str(next(outs)), str(corpus), SPEC, SETTINGS, workers=0),
                                rounds=1, iterations=1)
    timing = report["timing"]
    benchmark.extra_info.update({k: timing[k] for k in (
        "frames", "fps_end_to_end", "fps_wall", "stages", "slowest_stage", "end_to_end_vs_slowest", "decode_hidden")})
    assert timing["frames"] == 4 * 96


def test_peak_rss_1x_and_10x_corpus(benchmark, tmp_path):
    """Peak resident memory of the whole job at 2 and 20 videos: bounded by the clips in flight."""
    small = write_corpus(tmp_path / "1x", 2, 32)
    large = write_corpus(tmp_path / "10x", 20, 32)

    def both():
        return {name: run_job(corpus, tmp_path / f"out-{name}")["timing"]
                for name, corpus in (("1x", small), ("10x", large))}

    timings = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update({f"peak_rss_mb_{name}": t["peak_rss_mb"] for name, t in timings.items()})
    benchmark.extra_info.update({f"frames_{name}": t["frames"] for name, t in timings.items()})
