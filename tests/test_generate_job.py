"""The generate job end to end: determinism, rejection, exactly-once after a kill, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from killed_job import committed, kill_after_commits, result_mtimes

import motionfleet
from motionfleet.core.jobfolder.sink import JobMismatch, read_results
from motionfleet.dhvae.runner import motion_array
from motionfleet.dhvae.source import load_prompts

PROMPTS = [
    {"id": "hug", "text": "two people hug each other warmly", "num_frames": 12},
    {"id": "shake", "text": "they greet each other by shaking hands", "num_frames": 20},
    {"id": "push", "text": "one person pushes the other who stumbles backwards"},
    {"id": "dance", "text": "a couple dances a slow waltz", "num_frames": 12},
    {"id": "box", "text": "two boxers trade punches in a ring", "num_frames": 9},
    {"id": "five", "text": "two friends give each other a high five", "num_frames": 20},
    {"id": "help", "text": "one person helps the other stand up from the floor", "num_frames": 5},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    return str(write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", PROMPTS))


def motions_by_key(out_dir) -> dict:
    rows = read_results(out_dir).to_pylist()
    return {(r["sample_id"], r["repeat"]): motion_array(r).tobytes() for r in rows}


def run(out_dir, prompts, batch_size, workers=0, shard_size=256, eta=0.0, seed=7):
    return motionfleet.generate(prompts, out=out_dir, preset="tiny", steps=4, guidance_scale=3.5, eta=eta, seed=seed,
                                batch_size=batch_size, num_frames=15, repeats=2, shard_size=shard_size,
                                workers=workers)


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_same_bytes_whatever_the_batch_size_and_shard_count(tmp_path, prompts, eta):
    reference = None
    for i, (batch, shard_size) in enumerate([(1, 256), (3, 5), (16, 4)]):
        run(tmp_path / str(i), prompts, batch, shard_size=shard_size, eta=eta)
        motions = motions_by_key(tmp_path / str(i))
        assert len(motions) == len(PROMPTS) * 2
        reference = reference or motions
        assert motions == reference


def test_model_batches_are_full_whatever_the_shard_size(tmp_path, prompts):
    """Shards of one item, batches of 8: the 14 samples run as 8 + 6 (issue 19: a batch never
    spanned shards, so this job ran 14 batches of 1), with the bytes of one shard per batch."""
    run(tmp_path / "small", prompts, batch_size=8, shard_size=1)
    sizes = sorted(b["size"] for r in committed(tmp_path / "small").values() for b in r["summary"]["timings"]["batches"])
    assert sizes == [6, 8]
    run(tmp_path / "whole", prompts, batch_size=1, shard_size=256)
    assert motions_by_key(tmp_path / "small") == motions_by_key(tmp_path / "whole")


def test_workers_auto_is_the_default_and_the_report_says_what_it_chose(tmp_path, prompts, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    report = motionfleet.generate(prompts, out=tmp_path / "auto", preset="tiny", steps=2, num_frames=15)
    assert report["workers"]["requested"] == "auto" and report["settings"]["workers"] == "auto"
    assert report["workers"]["resolved"] == 0 and report["workers"]["layout"] == "a CPU machine: one worker holding every core"
    assert report["workers"]["ran"] == 1 and report["workers"]["nodes"] == 0  # this process, no Ray node


def test_same_bytes_with_two_ray_workers(tmp_path, prompts):
    run(tmp_path / "local", prompts, batch_size=4, workers=0)
    report = run(tmp_path / "ray", prompts, batch_size=2, workers=2, shard_size=3)
    assert report["workers"]["requested"] == 2 and report["shards"]["total"] == 5
    assert motions_by_key(tmp_path / "ray") == motions_by_key(tmp_path / "local")


def test_different_seeds_and_repeats_differ(tmp_path, prompts):
    run(tmp_path / "a", prompts, 8, seed=1)
    run(tmp_path / "b", prompts, 8, seed=2)
    a, b = motions_by_key(tmp_path / "a"), motions_by_key(tmp_path / "b")
    assert a[("hug", 0)] != b[("hug", 0)]
    assert a[("hug", 0)] != a[("hug", 1)]


def test_bad_prompts_are_rejected_with_reasons_and_the_rest_completes(tmp_path):
    rows = [
        {"id": "ok1", "text": "two people hug"},
        {"id": "empty", "text": ""},
        {"id": "blank", "text": "   "},
        {"id": "number", "text": 123},
        {"id": "long", "text": "hug " * 400},
        "{not json",
        {"id": "frames0", "text": "two people wave", "num_frames": 0},
        {"id": "frames301", "text": "two people wave", "num_frames": 301},
        {"id": "ok1", "text": "a duplicate id"},
        {"id": "ok2", "text": "they sit down together", "num_frames": 8},
    ]
    prompts = write_jsonl(tmp_path / "bad.jsonl", rows)
    report = run(tmp_path / "out", str(prompts), batch_size=4)
    results = read_results(tmp_path / "out").to_pylist()
    rejected = read_results(tmp_path / "out", "rejected").to_pylist()
    assert {r["sample_id"] for r in results} == {"ok1", "ok2"}
    reasons = {r["sample_id"]: r["reason"] for r in rejected if r["repeat"] == 0}
    assert "empty" in reasons["empty"] and "empty" in reasons["blank"]
    assert "not a string" in reasons["number"] or "str" in reasons["number"]
    assert "token" in reasons["long"]
    assert "not valid JSON" in reasons["5"]
    assert "num_frames" in reasons["frames0"] and "num_frames" in reasons["frames301"]
    assert any("duplicate id" in r for r in reasons.values())
    assert len(results) + len(rejected) == len(rows) * 2  # every (sample, repeat) exactly once
    assert report["rows"]["rejected"] == len(rejected)


def test_text_prompts_split_on_newlines_only_and_binary_is_refused(tmp_path):
    """Issue 10, case 10: form feeds, \\x1c, \\x85 and U+2028 do not start prompts (ids stay put), a
    line that is not UTF-8 is rejected in its place, a binary file is refused whole."""
    text = "two people hug\na\x0cb\nc\x1cd\x85e\u2028f\n\xff\xfe not utf-8\nthey wave\r\n"
    path = tmp_path / "prompts.txt"
    path.write_bytes(text.encode("utf-8").replace("\xff\xfe".encode(), b"\xff\xfe"))
    records = load_prompts(path).records
    assert [r.sample_id for r in records] == ["0", "1", "2", "3", "4"]
    assert records[4].text == "they wave" and records[1].text == "a\x0cb"
    assert "not UTF-8" in records[3].error
    binary = tmp_path / "weights.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="binary"):
        load_prompts(binary)


def test_poisoned_prompts_are_rejected_and_the_job_completes(tmp_path):
    """Issue 10, cases 8 and 10: lone surrogates in text or id, control characters, a float id."""
    lines = [
        json.dumps({"id": "ok", "text": "two people hug"}),
        '{"id": "surrogate_text", "text": "two people \\ud800 hug"}',
        '{"id": "\\udc80", "text": "two people hug"}',
        json.dumps({"id": "form_feed", "text": "two people\x0c hug"}),
        json.dumps({"id": 1.5, "text": "two people hug"}),
    ]
    report = run(tmp_path / "out", str(write_jsonl(tmp_path / "p.jsonl", lines)), batch_size=4)
    assert [r["sample_id"] for r in read_results(tmp_path / "out").to_pylist()] == ["ok", "ok"]
    reasons = {r["sample_id"]: r["reason"] for r in read_results(tmp_path / "out", "rejected").to_pylist()}
    assert "lone surrogate" in reasons["surrogate_text"] and "lone surrogate" in reasons["\\udc80"]
    assert "control character" in reasons["form_feed"]
    assert "id must be a string or an integer, got float" in reasons["1.5"]
    assert report["rows"]["rejected"] == 8


def test_features_that_give_nan_motions_are_rejected(tmp_path):
    """Issue 10, case 9: features of 3e38 are finite, the motion they give is not."""
    rows = [{"id": "ok", "text": "a", "text_features": [0.1] * 768},
            {"id": "huge", "text": "b", "text_features": [3e38, -3e38] * 384}]
    motionfleet.generate(str(write_jsonl(tmp_path / "f.jsonl", rows)), out=tmp_path / "out", preset="tiny",
                         text_encoder="precomputed", steps=2, batch_size=4, num_frames=8, workers=0)
    results = read_results(tmp_path / "out").to_pylist()
    assert [r["sample_id"] for r in results] == ["ok"] and np.isfinite(motion_array(results[0])).all()
    reasons = {r["sample_id"]: r["reason"] for r in read_results(tmp_path / "out", "rejected").to_pylist()}
    assert "not finite" in reasons["huge"]


def test_swapped_text_encoder_weights_are_another_job(tmp_path):
    """Issue 10, case 5: weights were fingerprinted by path, so a swap between a kill and the
    rerun mixed rows of two encoders; their content is in the fingerprint now."""
    from safetensors.torch import save_file

    projection = tmp_path / "projection.safetensors"
    save_file({"weight": torch.full((768, 384), 0.01), "bias": torch.zeros(768)}, projection)
    settings = dict(preset="tiny", text_encoder_weights=str(projection), steps=2, num_frames=8, workers=0)
    prompts = str(write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2]))
    motionfleet.generate(prompts, out=tmp_path / "out", **settings)
    save_file({"weight": torch.full((768, 384), 0.02), "bias": torch.zeros(768)}, projection)
    with pytest.raises(JobMismatch):
        motionfleet.generate(prompts, out=tmp_path / "out", **settings)


def test_rerun_writes_nothing_and_other_jobs_are_refused(tmp_path, prompts):
    out = tmp_path / "out"
    first = run(out, prompts, 8)
    assert first is not None
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert run(out, prompts, 3) == first  # batch size does not change the bytes: same job, its report
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(JobMismatch):
        run(out, prompts, 8, seed=99)



@pytest.mark.slow
def test_killed_driver_then_rerun_gives_every_sample_exactly_once(tmp_path):
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "motionfleet.cli", "generate", "--out", str(out), "--preset", "tiny",
           "--steps", "30", "--shard-size", "8", "--batch-size", "4", "--num-frames", "10"]
    env = dict(os.environ, MOTIONFLEET_PROGRESS="0")
    before_kill = kill_after_commits(cmd + ["--workers", "2"], out, env)
    assert 2 <= len(before_kill) < 18, "the kill should land mid-job (143 prompts, 18 shards)"
    mtimes = result_mtimes(out, before_kill)

    rerun = subprocess.run(cmd + ["--workers", "0"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_results(out).to_pylist()
    keys = [(r["sample_id"], r["repeat"]) for r in rows]
    assert len(keys) == len(set(keys)) == 143
    assert len(list((out / "results").glob("*.parquet"))) == 18  # uncommitted attempts were cleaned up
    assert not list(out.rglob(".*.tmp-*")) and not list((out / "_lock").iterdir())
    assert result_mtimes(out, before_kill) == mtimes
    for path in (out / "results").glob("*.parquet"):
        assert json.loads(pq.read_schema(path).metadata[b"motionfleet.job"])["job"] == "generate"
