"""The reconstruct job end to end: bad videos, exactly once after a kill, determinism, upstream
estimates, captions, the demo through the console command. Tiny videos, the small preset and
32-pixel crops keep it fast."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from killed_job import committed, kill_after_commits, result_mtimes

import motionfleet
from motionfleet.core import jobs, registry
from motionfleet.core.jobfolder.sink import JobMismatch, read_results
from motionfleet.demo.videos import (
    DEMO_VIDEOS,
    write_audio_only,
    write_corrupt_file,
    write_damaged_video,
    write_demo_corpus,
    write_demo_tracks,
    write_demo_video,
    write_empty_file,
    write_tracking_video,
    write_truncated_video,
)
from motionfleet.socialmirror.initial_estimate import mean_estimate

SETTINGS = dict(preset="small", crop_size=32, max_frame_size=160, steps=2, seed=5, batch_size=2)
SIZE = (160, 120)
GOOD = {"walk.mp4": 40, "still.mkv": 24}  # output frames at 30 fps
VECTORS = ("pose_axis_angle", "pose_6d", "betas", "translation", "joints_3d")
ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def reconstruct(out, corpus, **changes):
    return motionfleet.reconstruct(str(corpus), out=out, workers=0, **{**SETTINGS, **changes})


def write_good_videos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_demo_video(folder / "walk.mp4", GOOD["walk.mp4"], 30, SIZE, seed=1)
    write_demo_tracks(folder / "walk.tracks.csv", GOOD["walk.mp4"], SIZE)
    write_demo_video(folder / "still.mkv", GOOD["still.mkv"], 30, SIZE, seed=2)
    return folder


def write_huge_video(path: Path) -> None:
    """One 2048 x 2048 frame at 1000 fps: over the 8K-at-120-fps pixel rate."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width = stream.height = 2048
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((2048, 2048, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


BAD = {"empty.mp4": "empty_file", "corrupt.mp4": "not_a_video", "truncated.mp4": "truncated",
       "damaged.mp4": "decode_error", "audio_only.mp4": "no_video_stream", "huge.mp4": "too_large"}


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory) -> Path:
    folder = write_good_videos(tmp_path_factory.mktemp("mixed"))
    write_empty_file(folder / "empty.mp4")
    write_corrupt_file(folder / "corrupt.mp4")
    write_truncated_video(folder / "truncated.mp4", 0.5, num_frames=40, size=SIZE)
    write_damaged_video(folder / "damaged.mp4", 0.5, num_frames=40, size=SIZE)
    write_audio_only(folder / "audio_only.mp4")
    write_huge_video(folder / "huge.mp4")
    return folder


@pytest.fixture(scope="module")
def mixed_job(mixed_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed-job")
    reconstruct(out, mixed_corpus)
    return out


def keyed_rows(out: Path) -> dict:
    rows = read_results(out).to_pylist()
    keys = [(r["video_id"], r["frame_index"], r["person"]) for r in rows]
    assert len(keys) == len(set(keys)), "a (video, frame, person) written twice"
    return {key: tuple(np.asarray(r[c], np.float32).tobytes() for c in VECTORS) for key, r in zip(keys, rows)}


def expected_keys(frames: dict) -> set:
    return {(video, f, p) for video, n in frames.items() for f in range(n) for p in (0, 1)}


def test_bad_videos_are_rejected_with_their_reason_and_good_ones_complete(mixed_job):
    assert set(keyed_rows(mixed_job)) == expected_keys(GOOD)
    rejected = {r["video_id"]: r["reason"] for r in read_results(mixed_job, "rejected").to_pylist()}
    assert set(rejected) == set(BAD)
    for video, code in BAD.items():
        assert rejected[video].startswith(code), (video, rejected[video])
    report = json.loads((mixed_job / "report.json").read_text())
    timing = report["timing"]
    assert timing["frames"] == sum(GOOD.values()) and report["rows"]["rejected"] == len(BAD)
    assert set(timing["stages"]) == {"decode", "backbone", "diffusion", "body", "rows", "write"}
    assert all(s["seconds"] > 0 for s in timing["stages"].values())


def test_rows_have_the_documented_columns(mixed_job):
    table = read_results(mixed_job)
    row = table.slice(0, 1).to_pylist()[0]
    assert {len(row[c]) for c in VECTORS} == {72, 144, 10, 3}
    assert row["model"] == "socialmirror/small" and row["weights"] == "dummy, seed 0"
    assert row["body_model"] == "synthetic smpl, seed 0" and row["backend"] == "torch"
    assert row["sampler"] == "ddim-around-initial-estimate" and row["steps"] == 2
    sources = {(r["video_id"], r["tracks_source"]) for r in table.select(["video_id", "tracks_source"]).to_pylist()}
    assert sources == {("walk.mp4", "file"), ("still.mkv", "full_frame")}
    walk = table.filter(pa.compute.equal(table["video_id"], "walk.mp4"))
    assert np.allclose(walk["timestamp_s"].to_numpy(), walk["frame_index"].to_numpy() / 30.0)
    assert np.isfinite(np.asarray(walk["joints_3d"].to_pylist())).all()


def test_rerun_writes_nothing_and_another_job_is_refused(mixed_corpus, mixed_job):
    before = {p: p.stat().st_mtime_ns for p in mixed_job.rglob("*") if p.is_file()}
    assert reconstruct(mixed_job, mixed_corpus, batch_size=1) == json.loads((mixed_job / "report.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in mixed_job.rglob("*") if p.is_file()} == before
    with pytest.raises(JobMismatch):
        reconstruct(mixed_job, mixed_corpus, seed=6)


def test_same_bytes_whatever_the_batch_size_shard_size_and_thread_count(tmp_path):
    corpus = write_good_videos(tmp_path / "videos")
    reconstruct(tmp_path / "a", corpus, batch_size=1, shard_size=1)
    torch.set_num_threads(2)
    try:
        reconstruct(tmp_path / "b", corpus, batch_size=3, prefetch_clips=1)
    finally:
        torch.set_num_threads(1)
    a, b = keyed_rows(tmp_path / "a"), keyed_rows(tmp_path / "b")
    assert set(a) == expected_keys(GOOD) and a == b
    assert len(list((tmp_path / "a" / "results").glob("*.parquet"))) == 3 + 2  # one shard per clip
    other_seed = tmp_path / "c"
    reconstruct(other_seed, corpus, seed=6)
    assert keyed_rows(other_seed)[("walk.mp4", 0, 0)] != a[("walk.mp4", 0, 0)]


def file_bytes(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_the_demo_corpus_is_the_same_bytes_each_time_it_is_written(tmp_path):
    """Every ``reconstruct --demo`` writes its videos anew: libx264's threads and the Matroska muxer's
    random segment id gave other bytes, and other pixels, in each run."""
    written = [file_bytes(write_demo_corpus(tmp_path / f"demo-{i}")) for i in range(4)]
    assert set(written[0]) == {name for name, *_ in DEMO_VIDEOS} | {"two_people_a.tracks.csv", "two_people_b.tracks.csv"}
    for other in written[1:]:
        assert [name for name in written[0] if other[name] != written[0][name]] == []
    tracking = [tmp_path / f"tracking-{i}.mp4" for i in range(4)]
    for path in tracking:
        write_tracking_video(path)
    assert len({path.read_bytes() for path in tracking}) == 1


def test_the_demo_twice_in_one_process_gives_the_same_rows(tmp_path):
    """Two demo jobs, the second after the first's allocations: the same rows, bit for bit."""
    rows = []
    for run in ("a", "b"):
        motionfleet.reconstruct(None, out=tmp_path / run, workers=0, demo=True, **SETTINGS)
        rows.append(keyed_rows(tmp_path / run))
    assert set(rows[0]) == expected_keys({name: n for name, n, *_ in DEMO_VIDEOS})
    assert [key for key in rows[0] if rows[1][key] != rows[0][key]] == []



def test_onnxruntime_backend_matches_torch(tmp_path, monkeypatch):
    """The denoiser through its exported graph in ONNX Runtime (CPU) gives the torch job's motion."""
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    corpus = write_good_videos(tmp_path / "videos")
    reconstruct(tmp_path / "torch", corpus)
    reconstruct(tmp_path / "ort", corpus, backend="onnxruntime")
    rows = {name: {(r["video_id"], r["frame_index"], r["person"]): r for r in read_results(tmp_path / name).to_pylist()}
            for name in ("torch", "ort")}
    assert set(rows["torch"]) == set(rows["ort"]) == expected_keys(GOOD)
    for column in ("pose_6d", "translation", "joints_3d"):
        ref = np.array([rows["torch"][k][column] for k in sorted(rows["torch"])])
        got = np.array([rows["ort"][k][column] for k in sorted(rows["torch"])])
        assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max(), column
    assert {r["backend"] for r in rows["ort"].values()} == {"onnxruntime"}
    assert list((tmp_path / "cache" / "onnx").rglob("socialmirror-denoiser-fp32.onnx"))  # the graph ran


def test_killed_job_then_rerun_gives_every_person_and_frame_exactly_once(tmp_path):
    corpus = tmp_path / "videos"
    corpus.mkdir()
    frames = {f"clip{i}.mp4": 32 + 8 * i for i in range(3)}
    for i, (name, count) in enumerate(frames.items()):
        write_demo_video(corpus / name, count, 30, SIZE, seed=i)
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "motionfleet.cli", "reconstruct", "--videos", str(corpus), "--out", str(out),
           "--preset", "small", "--crop-size", "32", "--max-frame-size", "160", "--steps", "2", "--shard-size", "1",
           "--workers", "0"]
    before_kill = kill_after_commits(cmd, out, ENV)
    total_shards = sum(1 + -(-(n - 16) // 16) for n in frames.values())
    assert 2 <= len(before_kill) < total_shards, "the kill should land mid-job"
    mtimes = result_mtimes(out, before_kill)

    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert set(keyed_rows(out)) == expected_keys(frames)
    assert len(committed(out)) == total_shards and not list(out.rglob(".*.tmp-*"))
    assert result_mtimes(out, before_kill) == mtimes


def upstream_table(video: str, frames: int, image_dim: int, pose_shift: float, skip_frame=None) -> pa.Table:
    """Upstream rows with the mean estimate, its pose shifted (the pose is the diffusion's centre;
    the estimate's betas and camera are not: CloseInt centres on zero betas and camera (0.9, 0, 0))."""
    rows = [(f, p) for f in range(frames) for p in (0, 1) if f != skip_frame]
    estimate = mean_estimate().numpy().copy()
    estimate[:144] += pose_shift
    aux = np.zeros((24, 3), np.float32)
    aux[:, 2] = 4.0
    return pa.table({
        "video_id": [video] * len(rows), "frame_index": [f for f, _ in rows], "person": [p for _, p in rows],
        "image_features": [np.full(image_dim, 0.1 * p, np.float32) for _, p in rows],
        "initial_estimate": [estimate] * len(rows), "aux_joints": [aux.reshape(-1)] * len(rows),
    })


def test_upstream_features_and_estimates_replace_the_backbone(tmp_path):
    corpus = write_good_videos(tmp_path / "videos")
    outputs = {}
    for shift in (0.0, 0.5):
        path = tmp_path / f"upstream-{shift}.parquet"
        pq.write_table(upstream_table("still.mkv", GOOD["still.mkv"], 48, shift), path)
        out = tmp_path / f"out-{shift}"
        reconstruct(out, corpus, estimates=str(path), guidance_scale=0.01)
        outputs[shift] = keyed_rows(out)
        rows = read_results(out).select(["video_id", "estimates"]).to_pylist()
        sources = {(r["video_id"], r["estimates"]) for r in rows}
        assert sources == {("walk.mp4", "resnet50"), ("still.mkv", "upstream")}
    assert outputs[0.0][("walk.mp4", 3, 1)] == outputs[0.5][("walk.mp4", 3, 1)]
    assert outputs[0.0][("still.mkv", 3, 1)] != outputs[0.5][("still.mkv", 3, 1)]

    gappy = tmp_path / "gappy.parquet"
    pq.write_table(upstream_table("still.mkv", GOOD["still.mkv"], 48, 0.0, skip_frame=5), gappy)
    out = tmp_path / "out-gappy"
    reconstruct(out, corpus, estimates=str(gappy), guidance_scale=0.01)
    rejected = read_results(out, "rejected").to_pylist()
    assert [(r["video_id"], r["reason"].split(":")[0]) for r in rejected] == [("still.mkv", "missing_estimates")]
    assert {k[0] for k in keyed_rows(out)} == {"walk.mp4"}


def test_captions_from_the_manifest_condition_the_released_model(tmp_path):
    write_good_videos(tmp_path / "videos")
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"path": ["videos/still.mkv"], "caption": ["two people hug"]}), manifest)
    out = tmp_path / "out"
    reconstruct(out, manifest, preset="released")
    rows = read_results(out).select(["video_id", "caption", "model"]).to_pylist()
    assert len(rows) == 2 * GOOD["still.mkv"]
    assert {(r["video_id"], r["caption"], r["model"]) for r in rows} == {
        ("videos/still.mkv", "two people hug", "socialmirror/released")}
    with pytest.raises(ValueError, match="text features"):
        reconstruct(tmp_path / "small", manifest)


def write_gap_video(path: Path) -> None:
    """Two 16 x 16 frames, the second 23 h after the first: a few KB that claim 23 hours."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for pts in (0, 23 * 3600 * 1000):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_hostile_videos_and_estimates_are_rejected_within_bounds(tmp_path):
    """Issue 10, cases 7, 8, 9 and 11: a FIFO, a name that is not UTF-8, NaN upstream estimates,
    image features that overflow the output and a small file claiming 23 h each reject their
    video; the 23 h file is planned as what its bytes can hold."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_demo_video(corpus / "still.mkv", GOOD["still.mkv"], 30, SIZE, seed=2)
    for name in ("nan.mkv", "huge.mkv", os.fsdecode(b"\xff.mkv")):
        (corpus / name).write_bytes((corpus / "still.mkv").read_bytes())
    write_gap_video(corpus / "gap.mkv")
    os.mkfifo(corpus / "pipe.mkv")
    manifest = corpus / "list.txt"
    manifest.write_bytes(b"\n".join([b"still.mkv", b"nan.mkv", b"huge.mkv", b"\xff.mkv", b"gap.mkv", b"pipe.mkv"]))
    nan, huge = upstream_table("nan.mkv", GOOD["still.mkv"], 48, 0.0), upstream_table("huge.mkv", GOOD["still.mkv"], 48, 0.0)
    estimates = np.stack(nan.column("initial_estimate").to_numpy(zero_copy_only=False))
    estimates[7, 3] = np.nan
    nan = nan.set_column(4, "initial_estimate", pa.array(list(estimates)))
    features = np.tile(np.array([3e38, -3e38], np.float32), (len(estimates), 24))
    huge = huge.set_column(3, "image_features", pa.array(list(features)))
    pq.write_table(pa.concat_tables([nan, huge]), tmp_path / "upstream.parquet")
    report = reconstruct(tmp_path / "out", manifest, estimates=str(tmp_path / "upstream.parquet"))
    assert report["shards"]["total"] <= 7  # six videos; the 23 h one was 2,426 shards
    reasons = {r["video_id"]: r["reason"] for r in read_results(tmp_path / "out", "rejected").to_pylist()}
    assert reasons["pipe.mkv"].startswith("not_a_file")
    assert reasons["\\udcff.mkv"].startswith("bad_name")  # the byte 0xff, as Python escapes it
    assert reasons["nan.mkv"].startswith("bad_estimates")
    assert reasons["huge.mkv"].startswith("non_finite")
    assert reasons["gap.mkv"].startswith("timestamp_gap")
    rows = read_results(tmp_path / "out").to_pylist()
    assert {r["video_id"] for r in rows} == {"still.mkv"} and len(rows) == 2 * GOOD["still.mkv"]
    assert all(np.isfinite(r[c]).all() for r in rows for c in VECTORS)


def test_edited_track_files_and_swapped_weights_are_another_job(tmp_path):
    """Issue 10, case 5: track files were fingerprinted by path and weights by path, so edits
    between a kill and the rerun mixed rows; their content is in the fingerprint now."""
    from safetensors.torch import save_file

    corpus = write_good_videos(tmp_path / "videos")
    projection = tmp_path / "projection.safetensors"
    save_file({"weight": torch.zeros(768, 384), "bias": torch.zeros(768)}, projection)
    family = registry.get("reconstruct")
    values = {**jobs.settings_for(family, {**SETTINGS, "text_encoder_weights": str(projection)}), "demo": False}

    def fingerprint() -> str:
        spec, settings = family.build(values)
        return jobs.job_fingerprint(family.plan(str(corpus), spec, settings, None, tmp_path).job)

    first = fingerprint()
    assert fingerprint() == first
    tracks = corpus / "walk.tracks.csv"
    text = tracks.read_text()
    tracks.write_text(text.replace(",1,", ",0,", 1).replace(",0,", ",1,", 1))  # same size, persons swapped
    assert tracks.read_text() != text and fingerprint() != first
    tracks.write_text(text)
    restored = fingerprint()
    save_file({"weight": torch.ones(768, 384), "bias": torch.zeros(768)}, projection)
    assert fingerprint() != restored


@pytest.mark.slow
def test_demo_through_the_console_command_with_a_ray_worker(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(["motionfleet", "reconstruct", "--demo", "--out", str(out), "--preset", "small",
                             "--crop-size", "32", "--steps", "2"], capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "end-to-end" in result.stdout and "backbone" in result.stdout
    frames = {name: n for name, n, *_ in DEMO_VIDEOS}
    assert set(keyed_rows(out)) == expected_keys(frames)
    report = json.loads((out / "report.json").read_text())
    assert report["workers"]["ran"] == 1 and report["timing"]["frames"] == sum(frames.values())


def test_a_shard_split_after_running_out_of_memory_writes_each_frame_once(tmp_path):
    """``run_split_on_oom`` halves a shard's clips down to single clips: the pieces write exactly the
    rows of the whole shard (each piece decodes only its own clips; the last keeps the shard's end)."""
    from motionfleet.core.execution.worker import run_split_on_oom
    from motionfleet.socialmirror.runner import Reconstructor
    from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
    from motionfleet.socialmirror.source import plan_shards
    from motionfleet.socialmirror.video import list_videos

    corpus = write_good_videos(tmp_path / "videos")
    settings = ReconstructSettings(crop_size=32, max_frame_size=160, steps=2, seed=5, batch_size=2)
    worker = Reconstructor(ReconstructSpec(preset="small"), settings)
    shard = next(s for s in plan_shards(list_videos(corpus), {}, worker.clip_len, settings) if len(s.items) == 3)

    class OutOfMemoryAboveOneClip:
        def run(self, items):
            if len(items) > 1:
                raise torch.OutOfMemoryError("test: a batch of more than one clip")
            return worker.run(items)

    whole = worker.run(shard.items)[0]
    split = run_split_on_oom(OutOfMemoryAboveOneClip(), shard.items)[0]
    assert whole.num_rows == 2 * GOOD["walk.mp4"] and split.equals(whole)
