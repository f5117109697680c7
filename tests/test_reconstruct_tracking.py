"""reconstruct from plain videos: detect (YOLOX) -> track (ByteTrack) -> pair -> CloseInt, the tracks
a stage of the job (``socialmirror.track_stage``). A tiny YOLOX in ByteTrack's released layout whose
objectness and person scores are biased high, so every frame gives confident boxes at the same
places and the tracker finds stable people to pair; videos of three moving figures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from killed_job import committed, kill_after_commits

import motionfleet
from motionfleet import cli
from motionfleet.common.yolox import PRESETS, build_yolox
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.demo.videos import write_demo_tracks, write_tracking_video
from motionfleet.socialmirror import hmr2

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SIZE = (128, 96)
SETTINGS = dict(preset="small", crop_size=32, max_frame_size=128, steps=2, seed=3, batch_size=2, detector_size=(96, 128))
ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1")


def write_detector(path, score_bias: float) -> str:
    """A seeded test-size YOLOX saved as ByteTrack's {'model': state_dict}, its objectness and class
    biases shifted by ``score_bias`` (high: confident boxes everywhere; very low: nobody found)."""
    model = build_yolox(PRESETS["test"], seed=4)
    with torch.no_grad():
        for layer in [*model.head.obj_preds, *model.head.cls_preds]:
            layer.bias.add_(score_bias)
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_tracking_video(folder / "scene.mp4", num_frames=40, size=SIZE)
    write_tracking_video(folder / "other.mp4", num_frames=24, size=SIZE, seed=1)
    return folder


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return write_detector(tmp_path_factory.mktemp("weights") / "bytetrack_test.pth.tar", score_bias=8.0)


def reconstruct(out, corpus, **changes):
    return motionfleet.reconstruct(str(corpus), out=str(out), **{"workers": 0, **SETTINGS, **changes})


def keyed_rows(out) -> dict:
    return {(r["video_id"], r["frame_index"], r["person"]): r for r in read_results(str(out)).to_pylist()}


def test_plain_videos_are_detected_tracked_paired_and_reconstructed(tmp_path, corpus, detector):
    report = reconstruct(tmp_path / "job", corpus, detector_weights=detector)
    rows = keyed_rows(tmp_path / "job")
    assert {r["tracks_source"] for r in rows.values()} == {"detector"}
    assert {k[0] for k in rows} == {"scene.mp4", "other.mp4"} and {k[2] for k in rows} == {0, 1}
    stage = tmp_path / "job" / "stages" / "tracks"
    assert len(list((stage / "commits").glob("video-*.json"))) == 2  # one tracks shard per video
    assert report["stages"]["tracks"]["counts"]["frames_detected"] == 40 + 24
    assert report["job"]["boxes"] == {"track_file": 0, "detector": 2, "full_frame": 0}


def test_the_same_bytes_whatever_the_shard_size_batch_size_and_thread_count(tmp_path, corpus, detector):
    reconstruct(tmp_path / "a", corpus, detector_weights=detector, shard_size=1, batch_size=1)
    torch.set_num_threads(2)
    try:
        reconstruct(tmp_path / "b", corpus, detector_weights=detector, shard_size=4, batch_size=3)
    finally:
        torch.set_num_threads(1)
    a, b = keyed_rows(tmp_path / "a"), keyed_rows(tmp_path / "b")
    assert a and a == b
    tracks = [read_results(str(tmp_path / n / "stages" / "tracks")).sort_by([("video_id", "ascending"),
                                                                             ("person", "ascending"), ("frame", "ascending")])
              for n in "ab"]
    assert tracks[0].equals(tracks[1])  # identities do not depend on the clip shards


def test_a_track_file_overrides_the_detector_and_rows_say_so(tmp_path, corpus, detector):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "scene.mp4").symlink_to(corpus / "scene.mp4")
    write_demo_tracks(folder / "scene.tracks.csv", 40, SIZE)
    (folder / "other.mp4").symlink_to(corpus / "other.mp4")
    report = reconstruct(tmp_path / "job", folder, detector_weights=detector)
    sources = {(r["video_id"], r["tracks_source"]) for r in keyed_rows(tmp_path / "job").values()}
    assert sources == {("scene.mp4", "file"), ("other.mp4", "detector")}
    assert report["stages"]["tracks"]["shards"]["total"] == 1


def test_a_video_where_nobody_is_found_is_rejected_with_the_reason(tmp_path, corpus):
    blind = write_detector(tmp_path / "blind.pth.tar", score_bias=-30.0)
    report = reconstruct(tmp_path / "job", corpus, detector_weights=blind)
    rejected = read_results(str(tmp_path / "job"), "rejected").to_pylist()
    assert rejected and all(r["reason"].startswith("no_pair:") for r in rejected)
    assert report["rows"]["results"] == 0 and report["stages"]["tracks"]["rows"]["rejected"] == 2


def test_without_a_detector_or_tracks_the_job_says_so_loudly(tmp_path, corpus, capsys):
    report = reconstruct(tmp_path / "job", corpus)
    assert capsys.readouterr().err.count("no --detector-weights was given") == 1
    assert report["job"]["boxes"]["full_frame"] == 2
    from motionfleet.socialmirror.report import report_lines
    assert report_lines(report)[0].startswith("WARNING: 2 videos have no track file")


def test_a_detector_file_in_another_layout_is_one_line(tmp_path, corpus):
    wrong = tmp_path / "wrong.pth.tar"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, wrong)
    result = subprocess.run([sys.executable, "-m", "motionfleet", "reconstruct", "--videos", str(corpus), "--out",
                             str(tmp_path / "o"), "--detector-weights", str(wrong), "--workers", "0"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "YOLOX" in result.stderr


def test_a_job_killed_in_its_tracks_stage_resumes(tmp_path, corpus, detector):
    """Through the command: detector -> tracks -> pair -> HMR 2.0 -> CloseInt, killed between the two
    videos' tracks, then rerun: the committed stage shard is kept, every row once, as a fresh job."""
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "motionfleet.cli", "reconstruct", "--videos", str(corpus), "--out", str(out),
           "--preset", "small", "--crop-size", "32", "--max-frame-size", "128", "--steps", "2", "--workers", "0",
           "--detector-weights", detector, "--detector-size", "96x128", "--seed", "3",
           "--estimator-weights", write_hmr2(tmp_path / "epoch=35-step=1000000.ckpt", seed=1)]
    stage = out / "stages" / "tracks"
    before = kill_after_commits(cmd, stage, ENV, commits=1)
    assert len(before) == 1, "the kill should land between the two videos' tracks"
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert committed(stage) == before | {k: v for k, v in committed(stage).items() if k not in before}
    assert set(committed(stage)) == {"video-000000", "video-000001"}
    expected = reconstruct(tmp_path / "fresh", corpus, detector_weights=detector, estimator_weights=cmd[-1])
    assert keyed_rows(out) == keyed_rows(tmp_path / "fresh") and expected["rows"]["results"] > 0
    assert json.loads((stage / "job.json").read_text())["job"]["stage"] == "tracks"
    assert np.isfinite([r["translation"] for r in keyed_rows(out).values()]).all()
    assert {r["estimates"] for r in keyed_rows(out).values()} == {"hmr2"}


def write_hmr2(path, seed: int) -> str:
    """A tiny HMR 2.0 (the features the small denoiser takes) saved in 4D-Humans' Lightning layout."""
    state = hmr2.build_model(hmr2.PRESETS["tiny"], seed=seed).state_dict()
    torch.save({"epoch": 35, "global_step": 1000000, "state_dict": {**state, "smpl.body_pose": torch.zeros(1, 69)}}, path)
    return str(path)


def test_detector_tracks_feed_hmr2_and_its_estimates_feed_closeint(tmp_path, corpus, detector):
    estimator = write_hmr2(tmp_path / "epoch=35-step=1000000.ckpt", seed=1)
    reconstruct(tmp_path / "a", corpus, detector_weights=detector, estimator_weights=estimator)
    rows = keyed_rows(tmp_path / "a")
    assert rows and {r["estimates"] for r in rows.values()} == {"hmr2"}
    assert {r["tracks_source"] for r in rows.values()} == {"detector"}
    assert np.isfinite([r["joints_3d"] for r in rows.values()]).all()
    other = write_hmr2(tmp_path / "other.ckpt", seed=2)
    reconstruct(tmp_path / "b", corpus, detector_weights=detector, estimator_weights=other)
    changed = keyed_rows(tmp_path / "b")
    assert set(changed) == set(rows) and any(changed[k]["pose_6d"] != rows[k]["pose_6d"] for k in rows)
    resnet = reconstruct(tmp_path / "c", corpus, detector_weights=detector)
    assert resnet["rows"]["results"] == len(rows)
    assert {r["estimates"] for r in keyed_rows(tmp_path / "c").values()} == {"resnet50"}


def test_hmr2_runs_on_the_jobs_backend_through_the_command(tmp_path, corpus, monkeypatch):
    """``--backend onnxruntime``: HMR 2.0 runs its exported graph, as the denoiser does, and the rows
    match the torch job's within the denoiser's tolerance on that backend (tests/test_reconstruct_job.py).
    A track file keeps the detector out, so the boxes are the same in both jobs."""
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOTIONFLEET_PROGRESS", "0")
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "scene.mp4").symlink_to(corpus / "scene.mp4")
    write_demo_tracks(folder / "scene.tracks.csv", 40, SIZE)
    estimator = write_hmr2(tmp_path / "epoch=35-step=1000000.ckpt", seed=1)
    reconstruct(tmp_path / "torch", folder, estimator_weights=estimator)
    argv = ["reconstruct", "--videos", str(folder), "--out", str(tmp_path / "ort"), "--preset", "small", "--crop-size", "32",
            "--max-frame-size", "128", "--steps", "2", "--seed", "3", "--batch-size", "2", "--workers", "0",
            "--backend", "onnxruntime", "--estimator-weights", estimator]
    assert cli.main(argv) == 0
    assert list((tmp_path / "cache" / "onnx").rglob("hmr2-estimator-fp32.onnx"))  # HMR 2.0's graph ran
    rows = {name: keyed_rows(tmp_path / name) for name in ("torch", "ort")}
    assert rows["torch"] and set(rows["torch"]) == set(rows["ort"])
    assert {(r["estimates"], r["backend"]) for r in rows["ort"].values()} == {("hmr2", "onnxruntime")}
    for column in ("pose_6d", "translation", "joints_3d"):
        ref = np.array([rows["torch"][k][column] for k in sorted(rows["torch"])])
        got = np.array([rows["ort"][k][column] for k in sorted(rows["torch"])])
        assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max(), column


def test_the_same_tracks_and_rows_on_two_ray_workers_as_in_process(tmp_path, corpus, detector):
    """Ray actors run with their own torch threads: the detector's bits (and so the pair picked among
    near-tied boxes) must not depend on them (before: another pair on Ray)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "other.mp4").symlink_to(corpus / "other.mp4")
    reconstruct(tmp_path / "ray", folder, detector_weights=detector, workers=2)
    reconstruct(tmp_path / "local", folder, detector_weights=detector)
    assert keyed_rows(tmp_path / "ray") == keyed_rows(tmp_path / "local")
    by = [("person", "ascending"), ("frame", "ascending")]
    assert read_results(str(tmp_path / "ray" / "stages" / "tracks")).sort_by(by).equals(
        read_results(str(tmp_path / "local" / "stages" / "tracks")).sort_by(by))


@pytest.mark.parametrize("flags, code, words", [
    (["--estimator-weights", "DETECTOR"], 1, "not a usable estimator checkpoint"),  # a YOLOX file as the estimator
    (["--detector-weights", "HMR2"], 1, "YOLOX"),
    (["--estimator-weights", "HMR2", "--preset", "released"], 1, "not a usable estimator"),  # tiny HMR 2.0, released denoiser
    (["--detector-size", "800"], 2, "is not HEIGHTxWIDTH"),
    (["--detector-size", "800x1000"], 2, "multiples of 32"),
])
def test_a_wrong_front_end_file_or_size_is_one_line_before_any_work(tmp_path, corpus, detector, capsys, flags, code, words):
    files = {"DETECTOR": detector, "HMR2": write_hmr2(tmp_path / "hmr2.ckpt", seed=0)}
    out = tmp_path / "out"
    argv = ["reconstruct", "--videos", str(corpus), "--out", str(out), "--preset", "small", "--workers", "0"]
    assert cli.main(argv + [files.get(f, f) for f in flags]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]
    assert not out.exists()  # refused before the job folder is written


def video_tracker(detector: str, **changes):
    from motionfleet.core import jobs, registry
    from motionfleet.socialmirror.track_stage import VideoTracker

    _, spec, settings = jobs.checked_build(registry.get("reconstruct"), {**SETTINGS, "detector_weights": detector, **changes})
    return VideoTracker(spec, settings)


def test_chunks_to_detect_hold_every_kth_frame_and_the_last_and_every_frame_seen(corpus):
    from motionfleet.socialmirror.track_stage import chunks_to_detect
    from motionfleet.socialmirror.video import iter_frames

    every_frame = [f.source_index for f in iter_frames(corpus / "scene.mp4", 30.0, max_size=128)]
    chunks = list(chunks_to_detect(str(corpus / "scene.mp4"), 30.0, 128, every=7, at_once=2))
    assert [i for c in chunks for i in c.seen] == every_frame
    detected = [f.index for c in chunks for f in c.to_detect]
    assert detected == [*range(0, len(every_frame), 7), len(every_frame) - 1]
    assert [len(c.to_detect) for c in chunks[:-1]] == [2] * (len(chunks) - 1) and len(chunks[-1].to_detect) <= 2


def test_the_tracks_stage_decodes_ahead_while_the_detector_runs(corpus, detector, monkeypatch):
    """The detector's first call waits until frames past its own chunk are decoded: decoding behind
    the detector in one thread never gets there (the wait is bounded, so that fails in 20 s)."""
    import threading

    from motionfleet.core.runtime.stopwatch import Timings
    from motionfleet.socialmirror import track_stage

    tracker = video_tracker(detector)
    at_once = tracker.detector.settings.batch_size * tracker.batches_at_once
    decoded_ahead, real_iter_frames = threading.Event(), track_stage.iter_frames

    def counted(*args, **kwargs):
        for frame in real_iter_frames(*args, **kwargs):
            if frame.index >= at_once:
                decoded_ahead.set()
            yield frame

    class WaitingDetector:
        settings = tracker.detector.settings
        waited = None

        def __call__(self, frames):
            if self.waited is None:
                self.waited = decoded_ahead.wait(timeout=20)
            return [np.zeros((0, 5), np.float32) for _ in frames]

    monkeypatch.setattr(track_stage, "iter_frames", counted)
    tracker.detector = WaitingDetector()
    timings = Timings({"decode": 0.0, "detect": 0.0, "decode_wait": 0.0}, {"frames": 0, "frames_detected": 0})
    chunks: list[dict] = []
    seen = tracker.detect(track_stage.VideoToTrack("scene.mp4", str(corpus / "scene.mp4")), timings, chunks.append)
    assert tracker.detector.waited is True
    assert len(seen) == 40 and [frame for chunk in chunks for frame in chunk] == [*range(0, 40)]
    assert timings.seconds["decode"] > 0 and timings.counts["frames"] == 40


def test_the_tracks_stage_tracks_a_chunk_while_the_detector_runs_the_next(corpus, detector, monkeypatch):
    """The detector's second call waits until the tracker has taken the first chunk's boxes:
    tracking after the whole video's detection never lets it (bounded: fails in 20 s)."""
    import threading

    from motionfleet.core.runtime.stopwatch import Timings
    from motionfleet.socialmirror import track_stage

    tracker = video_tracker(detector)
    tracking_started, real_detector = threading.Event(), tracker.detector

    class SignallingTracking(track_stage.PairTracking):
        def add(self, detections):
            tracking_started.set()
            super().add(detections)

    class WaitingDetector:
        settings = real_detector.settings
        calls, waited = 0, None

        def __call__(self, frames):
            self.calls += 1
            if self.calls == 2:
                self.waited = tracking_started.wait(timeout=20)
            return real_detector(frames)

    monkeypatch.setattr(track_stage, "PairTracking", SignallingTracking)
    tracker.detector = WaitingDetector()
    timings = Timings({"decode": 0.0, "detect": 0.0, "track": 0.0, "decode_wait": 0.0}, {"frames": 0, "frames_detected": 0})
    rows = tracker.track(track_stage.VideoToTrack("scene.mp4", str(corpus / "scene.mp4")), timings)
    assert tracker.detector.waited is True and tracker.detector.calls == 5
    monkeypatch.undo()
    alone = video_tracker(detector).track(track_stage.VideoToTrack("scene.mp4", str(corpus / "scene.mp4")), timings)
    assert rows.equals(alone)  # the same rows as tracked without the waits
