"""Video decoding per shard: a shard in the middle of a long video decodes from the keyframe
before its first frame, so a video costs about one decode whatever the shard size.

A 2-minute 640 x 360, 30 fps video (x264 defaults: a keyframe every <= 250 frames, B-frames),
resampled to 30 fps, cut into 16-frame clips. ``by_shards`` decodes every shard's frames the way
the reconstruct job does (``decoded_clips`` minus crops); ``from_zero`` decodes one shard that
starts at 1 minute the old way (decoding from frame 0 and dropping what precedes it).
Results: ``benchmarks/results/decode_cpu.json``.
"""

import json
import os
import time
from pathlib import Path

import pytest

from motionfleet.demo.videos import write_demo_video
from motionfleet.socialmirror.video import iter_frames

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "decode_cpu.json"
FRAMES, CLIP = 3600, 16


@pytest.fixture(scope="module")
def two_minutes(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("decode") / "two_minutes.mp4"
    write_demo_video(path, FRAMES, 30, (640, 360))
    return path


def decode(path: Path, start: int, count: int) -> int:
    frames = iter_frames(path, 30.0, max_size=640, start_frame=start)
    n = 0
    for n, _ in enumerate(frames, 1):
        if n == count:
            break
    frames.close()
    return n


def decode_from_zero(path: Path, start: int, count: int) -> int:
    frames = iter_frames(path, 30.0, max_size=640)
    n = 0
    for frame in frames:
        n += frame.index >= start
        if n == count:
            break
    frames.close()
    return n


def save(name: str, entry: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = {**entry, "load_avg_1m": os.getloadavg()[0], "machine": "2-core AMD EPYC (AVX2), shared"}
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))


@pytest.mark.parametrize("clips_per_shard", [4, 64])
def test_whole_video_by_shards(benchmark, two_minutes, clips_per_shard):
    per_shard = clips_per_shard * CLIP

    def all_shards():
        start = time.perf_counter()
        frames = sum(decode(two_minutes, first, per_shard) for first in range(0, FRAMES, per_shard))
        assert frames == FRAMES
        return time.perf_counter() - start

    seconds = benchmark.pedantic(all_shards, rounds=1)
    save(f"by_shards_{clips_per_shard}", {"clips_per_shard": clips_per_shard, "seconds": seconds,
                                          "frames_per_s": FRAMES / seconds})


@pytest.mark.parametrize("way", ["keyframe", "from_zero"])
def test_one_shard_at_one_minute(benchmark, two_minutes, way):
    run = decode if way == "keyframe" else decode_from_zero
    assert benchmark.pedantic(run, args=(two_minutes, 1800, 64), rounds=3) == 64
    save(f"one_shard_at_1min_{way}", {"median_s": benchmark.stats.stats.median})
