"""``evaluate`` and ``leaderboard`` end to end on a tiny synthetic InterHuman set: metric values
that do not move with workers, batch size or shard size; a killed leaderboard that resumes."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from killed_job import committed, kill_after_commits, result_mtimes

from motionfleet.cli import main
from motionfleet.dhvae.interhuman import write_synthetic
from motionfleet.evaluation.api import evaluate

TINY = dict(preset="tiny", steps=2, evaluator_preset="tiny", replications=2, match_batch=4, diversity_pairs=4,
            mm_texts=2, mm_repeats=3, mm_pairs=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return str(write_synthetic(tmp_path_factory.mktemp("interhuman"), count=10, frames=(15, 18)))


def test_a_protocol_the_dataset_cannot_fill_is_a_one_line_error(tmp_path, dataset, capsys):
    # (first in this file: Ray workers of a later test print to this process's stderr)
    capsys.readouterr()
    assert main(["evaluate", "--family", "dhvae", "--dataset", dataset, "--out", str(tmp_path / "x"),
                 "--match-batch", "96"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("motionfleet: error: the split has 10 motions, fewer than one matching batch")


def test_metric_values_do_not_move_with_workers_batch_or_shard_size(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache-a"))
    a = evaluate("dhvae", tmp_path / "a", dataset, workers=0, batch_size=16, **TINY)
    # two Ray workers, batches of 3, generate shards of 5 samples, embed shards of 2 batches, and an
    # engine cache of its own: the real set's embeddings are computed again, not read from a's
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache-b"))
    b = evaluate("dhvae", tmp_path / "b", dataset, workers=2, batch_size=3, shard_size=5, embed_batches_per_shard=2,
                 **TINY)
    assert list((tmp_path / "cache-b").rglob("*.parquet"))
    assert b["metrics"] == a["metrics"]

    generated = a["metrics"]["generated"]
    assert set(generated) == {"fid", "r_precision_top1", "r_precision_top2", "r_precision_top3", "mm_dist", "diversity",
                              "multimodality"}
    assert all(len(m["values"]) == 2 for m in generated.values())
    assert a["metrics"]["real"]["fid"]["mean"] < generated["fid"]["mean"]  # the dataset is closer to itself
    rows = pq.read_table(tmp_path / "a" / "metrics.parquet").to_pylist()
    assert len(rows) == 2 * (7 + 6)
    assert {(r["metric"], r["replication"]): r["value"] for r in rows if r["source"] == "generated"} == \
        {(m, i): v for m, s in generated.items() for i, v in enumerate(s["values"])}
    # a rerun finds every job committed and gives the same file
    before = committed(tmp_path / "a" / "embed")
    assert evaluate("dhvae", tmp_path / "a", dataset, workers=0, batch_size=16, **TINY)["metrics"] == a["metrics"]
    assert committed(tmp_path / "a" / "embed") == before


LEADERBOARD = """
protocol = "interhuman"
dataset = "{dataset}"
workers = 0
[protocol_settings]
replications = 2
match_batch = 4
diversity_pairs = 4
mm_texts = 2
mm_repeats = 3
mm_pairs = 2
evaluator_preset = "tiny"
[[entry]]
name = "tiny-w3.5"
family = "dhvae"
seeds = [0]
[entry.settings]
preset = "tiny"
steps = 2
shard_size = 4
[[entry]]
name = "tiny-w1"
seeds = [0]
[entry.settings]
preset = "tiny"
steps = 2
guidance_scale = 1.0
shard_size = 4
"""


def test_killed_leaderboard_resumes_where_it_stopped(tmp_path, dataset):
    config = tmp_path / "board.toml"
    config.write_text(LEADERBOARD.format(dataset=dataset))
    out = tmp_path / "board"
    second = out / "entries" / "tiny-w1" / "seed-0" / "generate"
    env = {**os.environ, "MOTIONFLEET_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "motionfleet.cli", "leaderboard", str(config), "--out", str(out)]
    records = kill_after_commits(cmd, second, env, commits=2)
    assert len(records) >= 2 and not (out / "leaderboard.md").exists()
    first_metrics = out / "entries" / "tiny-w3.5" / "seed-0" / "metrics.json"
    first_mtime = first_metrics.stat().st_mtime_ns
    kept = result_mtimes(second, records)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert first_metrics.stat().st_mtime_ns == first_mtime  # the finished entry was not redone
    assert result_mtimes(second, records) == kept  # nor the second entry's committed shards
    rows = pq.read_table(out / "leaderboard.parquet").to_pylist()
    assert {(r["entry"], r["source"]) for r in rows} == {(e, s) for e in ("tiny-w3.5", "tiny-w1") for s in ("generated", "real")}
    assert len(rows) == 2 * 2 * (7 + 6)
    markdown = (out / "leaderboard.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ") and line[2].isdigit()]
    fids = [json.loads((out / "entries" / name / "seed-0" / "metrics.json").read_text())["metrics"]["generated"]["fid"]["mean"]
            for name in ("tiny-w3.5", "tiny-w1")]
    best = ("tiny-w3.5", "tiny-w1")[fids.index(min(fids))]
    assert table[0].startswith(f"| 1 | {best} |") and len(table) == 2
    assert "dummy, seed 0" in markdown and "Versions: motionfleet" in markdown
