"""Issue 23, "odd videos and tracks": each video of a corpus gives rows (finite, each (video, person,
frame) once) or exactly one rejected row with a reason, whatever its timestamps, rate claims,
rotation, truncation or track file. All odd videos and track files share one job run (tiny
videos, the small preset, 32-pixel crops, 10 fps, one clip per shard so that a long video is
several shards)."""

import shutil
import tracemalloc
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import motionfleet
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.demo.videos import demo_boxes, demo_image, write_demo_tracks, write_demo_video, write_truncated_video
from motionfleet.socialmirror.settings import ReconstructSettings
from motionfleet.socialmirror.source import plan_shards
from motionfleet.socialmirror.video import TRACK_COLUMNS, list_videos

SETTINGS = dict(preset="small", crop_size=32, max_frame_size=160, steps=2, seed=5, batch_size=2, fps=10)
SIZE = (160, 120)
VECTORS = ("pose_axis_angle", "pose_6d", "betas", "translation", "joints_3d")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------- odd videos


def write_timed_video(path: Path, times_s, *, time_base=Fraction(1, 90000), rate=None, rotation=0) -> None:
    """The demo's figures, one frame at each of ``times_s`` seconds (libx264; the container follows
    the suffix). ``rate`` is what the stream states; ``rotation`` (degrees) a display matrix."""
    boxes = demo_boxes(len(times_s), SIZE)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate) if rate else container.add_stream("libx264")
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for seconds, frame_boxes in zip(times_s, boxes):
            frame = av.VideoFrame.from_ndarray(demo_image(frame_boxes, SIZE, seed=1), format="rgb24")
            frame.pts, frame.time_base = round(Fraction(seconds) / time_base), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_packets_at(path: Path, packet_pts: list[int], time_base: Fraction) -> None:
    """MPEG-4 frames muxed at the given pts (dts = pts, repeats allowed: Matroska takes them)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        packets = []
        for frame_boxes in demo_boxes(len(packet_pts), SIZE):
            packets += stream.encode(av.VideoFrame.from_ndarray(demo_image(frame_boxes, SIZE, seed=2), format="rgb24"))
        packets += stream.encode()
        for packet, pts in zip(packets, packet_pts):
            packet.pts = packet.dts = pts
            packet.time_base, packet.duration = time_base, 0
            container.mux(packet)


def write_one_frame_video(path: Path, value: int) -> None:
    """A single 32 x 32 frame of one grey ``value``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), value, np.uint8), format="rgb24")))
        container.mux(stream.encode())


def thirty_fps(frames: int) -> list[Fraction]:
    return [Fraction(i, 30) for i in range(frames)]


def write_odd_videos(folder: Path) -> dict[str, str | None]:
    """Each odd video -> the rejection code it must give, or None for rows."""
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 7, 40)  # 1/60 s .. 1/10 s between frames
    write_timed_video(folder / "variable_rate.mp4", [Fraction(0)] + [Fraction(int(s), 60) for s in np.cumsum(steps)])
    # Frames 1 ns apart: the stream's rate is 1e9 fps, 19.2 Gpixel/s at 160x120.
    write_timed_video(folder / "rate_1e9.mp4", [Fraction(i, 10**9) for i in range(20)], time_base=Fraction(1, 10**9),
                      rate=10**9)
    # 30 fps timestamps under a header that states 1e9 fps (Matroska DefaultDuration 1 ns).
    write_timed_video(folder / "header_1e9.mkv", thirty_fps(20), time_base=Fraction(1, 10**9), rate=10**9)
    write_packets_at(folder / "one_timestamp.mkv", [0, 1, 2, 3, 4] + [5] * 12 + [6, 7, 8], Fraction(1, 30))
    write_timed_video(folder / "gap_20s.mp4", thirty_fps(10) + [20 + t for t in thirty_fps(10)])
    write_timed_video(folder / "rate_0.2.mp4", [0, 5, 10], rate=Fraction(1, 5))
    write_timed_video(folder / "rotated_90.mp4", thirty_fps(20), rotation=90)
    # 200 frames (6.7 s: five clips at 10 fps), index in front, cut to 30 % of its bytes.
    write_truncated_video(folder / "truncated_30.mp4", 0.3, num_frames=200, size=SIZE)
    write_one_frame_video(folder / "one_frame.mp4", 0)
    return {"one_frame.mp4": None, "variable_rate.mp4": None, "rate_1e9.mp4": "too_large", "header_1e9.mkv": None,
            "one_timestamp.mkv": None, "gap_20s.mp4": "timestamp_gap", "rate_0.2.mp4": None,
            "rotated_90.mp4": None, "truncated_30.mp4": "truncated"}


# ----------------------------------------------------------------------------- odd track files


def track_rows(num_frames: int) -> list[list]:
    boxes = demo_boxes(num_frames, SIZE).astype(np.float64)
    return [[frame, person, *boxes[frame, person]] for frame in range(num_frames) for person in (0, 1)]


def write_track_csv(path: Path, rows: list[list]) -> None:
    lines = [",".join(TRACK_COLUMNS)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


TRACK_FRAMES = 24


def odd_track_rows() -> dict[str, list[list]]:
    """Track files that each break one rule, by name."""
    def edited(edit) -> list[list]:
        rows = track_rows(TRACK_FRAMES)
        edit(rows)
        return rows

    return {
        "boxes_1e30": edited(lambda rows: rows[6].__setitem__(slice(2, 6), [-1e30, -1e30, 1e30, 1e30])),
        "outside_frame": edited(lambda rows: rows.__setitem__(slice(None), [
            [f, p, x0 + 1000, y0 + 1000, x1 + 1000, y1 + 1000] for f, p, x0, y0, x1, y1 in rows])),
        "frame_1e23": edited(lambda rows: rows.append([10**23, 0, 10, 10, 40, 80])),
        "frame_1e23_float": edited(lambda rows: rows.append(["1e23", 0, 10, 10, 40, 80])),
        "nan_box": edited(lambda rows: rows[9].__setitem__(3, float("nan"))),
        "person_7": edited(lambda rows: rows.append([3, 7, 10, 10, 40, 80])),
        "duplicate_rows": edited(lambda rows: rows.append(list(rows[4]))),
    }


def write_odd_tracks(folder: Path) -> dict[str, str | None]:
    write_demo_video(folder / "tracked.mp4", TRACK_FRAMES, 30, SIZE, seed=3)
    write_demo_tracks(folder / "tracked.tracks.csv", TRACK_FRAMES, SIZE)
    expected = {"tracked.mp4": None}
    for name, rows in odd_track_rows().items():
        shutil.copyfile(folder / "tracked.mp4", folder / f"{name}.mp4")
        write_track_csv(folder / f"{name}.tracks.csv", rows)
        expected[f"{name}.mp4"] = "bad_tracks"
    return expected


# ----------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def odd_job(tmp_path_factory) -> tuple[Path, dict]:
    corpus = tmp_path_factory.mktemp("odd")
    expected = {**write_odd_videos(corpus), **write_odd_tracks(corpus)}
    out = tmp_path_factory.mktemp("odd-job")
    motionfleet.reconstruct(str(corpus), out=out, workers=0, shard_size=1, **SETTINGS)
    return out, expected


def outcomes(out: Path) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """(video id -> result rows, video id -> rejection reasons) of a job."""
    rows: dict[str, list[dict]] = {}
    for row in read_results(out).to_pylist():
        rows.setdefault(row["video_id"], []).append(row)
    rejected: dict[str, list[str]] = {}
    for row in read_results(out, "rejected").to_pylist():
        rejected.setdefault(row["video_id"], []).append(row["reason"])
    return rows, rejected


def assert_rows_or_one_rejection(rows: dict, rejected: dict, video: str) -> None:
    """The contract: rows (finite, each (person, frame) once) or one rejected row, never both."""
    assert (video in rows) != (video in rejected), (video, rejected.get(video), len(rows.get(video, ())))
    if video in rejected:
        assert len(rejected[video]) == 1 and ": " in rejected[video][0], rejected[video]
        return
    keys = Counter((r["person"], r["frame_index"]) for r in rows[video])
    assert max(keys.values()) == 1, f"{video}: a (person, frame) written twice"
    frames = sorted({frame for _, frame in keys})
    assert frames == list(range(len(frames))) and set(keys) == {(p, f) for f in frames for p in (0, 1)}
    assert all(np.isfinite(r[c]).all() for r in rows[video] for c in VECTORS), f"{video}: non-finite values"


@pytest.mark.parametrize("video", ["one_frame.mp4", "variable_rate.mp4", "rate_1e9.mp4", "header_1e9.mkv", "one_timestamp.mkv",
                                   "gap_20s.mp4", "rate_0.2.mp4", "rotated_90.mp4", "truncated_30.mp4"])
def test_odd_video_gives_rows_or_one_rejected_row(odd_job, video):
    out, expected = odd_job
    rows, rejected = outcomes(out)
    assert_rows_or_one_rejection(rows, rejected, video)
    code = expected[video]
    if code is None:
        assert video in rows, rejected.get(video)
    else:
        assert rejected.get(video, [""])[0].startswith(code + ":"), (video, rejected.get(video))


@pytest.mark.parametrize("video", ["tracked.mp4", *[f"{name}.mp4" for name in odd_track_rows()]])
def test_odd_track_file_gives_rows_or_one_rejected_row(odd_job, video):
    out, expected = odd_job
    rows, rejected = outcomes(out)
    assert_rows_or_one_rejection(rows, rejected, video)
    if expected[video] is None:
        assert {r["tracks_source"] for r in rows[video]} == {"file"}
    else:
        assert rejected.get(video, [""])[0].startswith(expected[video] + ":"), (video, rejected.get(video))


def test_every_odd_input_is_accounted_for(odd_job):
    out, expected = odd_job
    rows, rejected = outcomes(out)
    assert set(rows) | set(rejected) == set(expected)


def test_a_thousand_one_frame_videos_plan_one_shard_each_in_bounded_memory(tmp_path):
    """Planning probes every video in the driver: 1,000 one-frame videos are 1,000 one-clip shards,
    each video once, and the plan's Python allocations stay small (measured 2.3 MiB at its peak and
    3.6 s on a loaded 2-core machine; the whole job, one shard per video, is too slow for CI: the
    one-frame video's rows are checked in the odd corpus's job)."""
    corpus = tmp_path / "thousand"
    corpus.mkdir()
    for i in range(1000):
        write_one_frame_video(corpus / f"video-{i:04d}.mp4", i % 256)
    tracemalloc.start()
    try:
        shards = plan_shards(list_videos(corpus), {}, 16, ReconstructSettings())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [len(shard.items) for shard in shards] == [1] * 1000
    assert sorted(shard.items[0].span.video_id for shard in shards) == [f"video-{i:04d}.mp4" for i in range(1000)]
    assert peak < 64 * 2**20, f"planning 1,000 videos allocated {peak / 2**20:.0f} MiB"
