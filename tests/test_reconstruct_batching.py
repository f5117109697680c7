"""reconstruct's model batches across shards (``execution.batcher``): a batch takes the clips of
several shards, each shard still gets its own rows, the same bytes, committed once. Tiny videos,
the small preset and 32-pixel crops keep it fast."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from killed_job import committed, result_mtimes

import motionfleet
from motionfleet.core.io import prefetch
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.demo.videos import write_corrupt_file, write_damaged_video, write_demo_tracks, write_demo_video

SETTINGS = dict(preset="small", crop_size=32, max_frame_size=160, steps=2, seed=5, batch_size=4)
ENV_KEYS = dict(MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def reconstruct(out, corpus, **changes):
    return motionfleet.reconstruct(str(corpus), out=out, workers=0, **{**SETTINGS, **changes})


def batch_sizes(out: Path) -> dict:
    """shard id -> sizes of the model batches its commit record holds (a batch is recorded once,
    with the shard whose clips start it)."""
    return {shard: [b["size"] for b in record["summary"]["timings"]["batches"]] for shard, record in committed(out).items()}


def result_files(out: Path) -> dict:
    """shard id -> the bytes of its results file (named ``<shard id>.<attempt>.parquet``)."""
    return {path.name.split(".")[0]: path.read_bytes() for path in sorted((out / "results").glob("*.parquet"))}


def rows_of(out: Path, video: str):
    table = read_results(out)
    return table.filter(pc.equal(table["video_id"], video))


def test_one_clip_shards_share_batches_and_write_the_bytes_each_clip_gets_alone(tmp_path):
    """Videos of two frame sizes, with guidance: one clip per shard in batches of 4 writes the
    files of one clip per batch, and the rows of the default shards."""
    corpus = tmp_path / "videos"
    corpus.mkdir()
    write_demo_video(corpus / "walk.mp4", 40, 30, (160, 120), seed=1)  # 3 clips
    write_demo_tracks(corpus / "walk.tracks.csv", 40, (160, 120))
    write_demo_video(corpus / "still.mkv", 24, 30, (128, 96), seed=2)  # 2 clips
    shared = reconstruct(tmp_path / "shared", corpus, shard_size=1, guidance_scale=1.0)
    reconstruct(tmp_path / "alone", corpus, shard_size=1, guidance_scale=1.0, batch_size=1)
    default = reconstruct(tmp_path / "default", corpus, guidance_scale=1.0)
    assert shared["shards"]["total"] == 5 and default["shards"]["total"] == 2
    assert sorted(b for sizes in batch_sizes(tmp_path / "shared").values() for b in sizes) == [1, 4]
    assert result_files(tmp_path / "shared") == result_files(tmp_path / "alone")
    assert read_results(tmp_path / "shared").equals(read_results(tmp_path / "default"))
    assert read_results(tmp_path / "shared").num_rows == 2 * (40 + 24)


def test_the_demo_like_job_runs_full_batches_and_counts_each_batch_once(tmp_path):
    """3 videos of 3 clips, one shard each, batches of 4: 4, 4, 1 (one shard alone: 3, 3, 3)."""
    corpus = tmp_path / "videos"
    corpus.mkdir()
    for i in range(3):
        write_demo_video(corpus / f"video{i}.mp4", 48, 30, (160, 120), seed=i)
    report = reconstruct(tmp_path / "job", corpus)
    sizes = batch_sizes(tmp_path / "job")
    assert sizes == {"video-000000-clips-000000": [4], "video-000001-clips-000000": [4], "video-000002-clips-000000": [1]}
    records = [record["summary"]["timings"] for record in committed(tmp_path / "job").values()]
    assert sum(t["counts"]["clips"] for t in records) == 9
    assert [t["counts"]["frames"] for t in records] == [48, 48, 48]  # each shard's own rows / 2
    assert report["timing"]["frames"] == 3 * 48
    assert all(report["timing"]["stages"][stage]["seconds"] > 0 for stage in ("decode", "backbone", "diffusion", "body"))


def test_a_video_failing_after_its_first_batch_is_rejected_whole_and_leaves_its_batch_mates_alone(tmp_path):
    """good.mp4's 3 clips and damaged.mp4's first clip fill batch 1; damaged.mp4's decoding fails
    in batch 2 (its clip 0 gave rows in batch 1) and corrupt.mp4 shares batch 2: both are one
    rejected row with the reason, and good.mp4's rows are those it gets alone."""
    corpus = tmp_path / "videos"
    corpus.mkdir()
    write_demo_video(corpus / "a_good.mp4", 48, 30, (160, 120), seed=1)
    write_damaged_video(corpus / "b_damaged.mp4", 0.5, num_frames=64, size=(160, 120))
    write_corrupt_file(corpus / "c_corrupt.mp4")
    reconstruct(tmp_path / "job", corpus)
    assert batch_sizes(tmp_path / "job")["video-000000-clips-000000"] == [4]  # good.mp4 shared its batch
    rejected = {r["video_id"]: r for r in read_results(tmp_path / "job", "rejected").to_pylist()}
    assert sorted(rejected) == ["b_damaged.mp4", "c_corrupt.mp4"]
    assert rejected["b_damaged.mp4"]["reason"].startswith("decode_error")
    assert rejected["c_corrupt.mp4"]["reason"].startswith("not_a_video")
    assert '"first_clip": 0' in rejected["b_damaged.mp4"]["input"]
    assert set(read_results(tmp_path / "job").column("video_id").to_pylist()) == {"a_good.mp4"}

    good = tmp_path / "good"
    good.mkdir()
    (good / "a_good.mp4").write_bytes((corpus / "a_good.mp4").read_bytes())
    reconstruct(tmp_path / "alone", good)
    assert rows_of(tmp_path / "job", "a_good.mp4").equals(read_results(tmp_path / "alone"))


DIE_AT_SECOND_CALL = """
import os, sys
from pathlib import Path
from motionfleet.cli import main
from motionfleet.socialmirror import runner

marker, calls, run = Path(sys.argv[1]), [], runner.Reconstructor.run

def run_or_die(self, items):
    calls.append(len(items))
    if len(calls) == 2 and not marker.exists():
        marker.touch()
        os._exit(9)  # as a killed worker: no cleanup, no exception
    return run(self, items)

runner.Reconstructor.run = run_or_die
sys.exit(main(sys.argv[2:]))
"""


def test_a_worker_dying_between_the_two_batches_of_a_shard_redoes_it_and_commits_it_once(tmp_path):
    """Two videos of 3 clips, batches of 4: video 1's clip 0 is in batch 1 with video 0, its clips
    1 and 2 in batch 2. The process dies as batch 2 starts: video 0 is committed, video 1 is not;
    the rerun redoes video 1 alone and leaves video 0 as it was."""
    corpus = tmp_path / "videos"
    corpus.mkdir()
    for i in range(2):
        write_demo_video(corpus / f"video{i}.mp4", 48, 30, (160, 120), seed=i)
    out = tmp_path / "job"
    cmd = [sys.executable, "-c", DIE_AT_SECOND_CALL, str(tmp_path / "died"), "reconstruct", "--videos", str(corpus),
           "--out", str(out), "--preset", "small", "--crop-size", "32", "--max-frame-size", "160", "--steps", "2",
           "--seed", "5", "--batch-size", "4", "--workers", "0"]
    env = {**__import__("os").environ, **ENV_KEYS}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 9, first.stderr
    assert batch_sizes(out) == {"video-000000-clips-000000": [4]}  # video 1's first clip was in that batch
    before = result_mtimes(out, committed(out))
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(committed(out)) == ["video-000000-clips-000000", "video-000001-clips-000000"]
    assert result_mtimes(out, {"video-000000-clips-000000": committed(out)["video-000000-clips-000000"]}) == before
    assert len(list((out / "commits").glob("*.json"))) == 2 and not list(out.rglob(".*.tmp-*"))
    rows = read_results(out).select(["video_id", "frame_index", "person"]).to_pylist()
    assert len(rows) == len({tuple(r.values()) for r in rows}) == 2 * 2 * 48
    reconstruct(tmp_path / "clean", corpus)
    assert read_results(out).equals(read_results(tmp_path / "clean"))
    assert np.isfinite(np.asarray(read_results(out)["joints_3d"].to_pylist())).all()


class CountedStages:
    """``prefetch.stream``'s thread stage, counting the stages open at once."""

    open_now = most = 0

    def __init__(self, produce, depth):
        self.stage, self.remote, self.closed = prefetch.Prefetch(prefetch.one_torch_thread(produce), depth), False, False
        CountedStages.open_now += 1
        CountedStages.most = max(CountedStages.most, CountedStages.open_now)

    @property
    def wait_s(self):
        return self.stage.wait_s

    def __iter__(self):
        return iter(self.stage)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.closed:
            self.closed = True
            CountedStages.open_now -= 1
            self.stage.close()


def test_a_call_holds_open_no_more_cpu_stages_than_the_executor_allows(tmp_path):
    """One call of 3 shards' slots: its 3 stages all start at once in threads, one at a time where
    the executor allows one (Ray stages on a spare CPU each: ``placement.stage_streams``); same rows."""
    from motionfleet.socialmirror.runner import Reconstructor
    from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
    from motionfleet.socialmirror.source import plan_shards
    from motionfleet.socialmirror.video import list_videos

    corpus = tmp_path / "videos"
    corpus.mkdir()
    for i in range(3):
        write_demo_video(corpus / f"video{i}.mp4", 16, 30, (160, 120), seed=i)  # one clip each
    settings = ReconstructSettings(crop_size=32, max_frame_size=160, steps=2, seed=5, batch_size=4)
    worker = Reconstructor(ReconstructSpec(preset="small"), settings)
    slots = tuple(slot for shard in plan_shards(list_videos(corpus), {}, worker.clip_len, settings) for slot in shard.items)
    tables = {}
    for bound in (None, 1):
        CountedStages.most = 0
        with prefetch.placed(CountedStages, bound):
            tables[bound], _, timings = worker.run(slots)
        assert CountedStages.most == (bound or 3) and CountedStages.open_now == 0
        assert [b["size"] for b in timings.batches] == [3]
    assert tables[None].num_rows == 2 * 3 * 16 and tables[None].equals(tables[1])
