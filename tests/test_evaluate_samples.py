"""Per-sample records of a dhvae evaluation (samples.parquet, ``evaluate --inspect``) and the cached
evaluator embeddings of the real test set, on a tiny synthetic InterHuman set."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_interclip import lightning_file

from motionfleet.cli import main
from motionfleet.core.jobfolder.sink import JobMismatch
from motionfleet.dhvae import interclip
from motionfleet.dhvae.evaluate import EvaluatorSpec, InterHumanEmbedder
from motionfleet.dhvae.interhuman import write_synthetic
from motionfleet.evaluation import embedding_cache, protocols
from motionfleet.evaluation.api import evaluate
from motionfleet.evaluation.results import SAMPLES_PARQUET

TINY = dict(preset="tiny", steps=2, evaluator_preset="tiny", replications=2, match_batch=4, diversity_pairs=4,
            mm_texts=2, mm_repeats=3, mm_pairs=2)
SPLIT = protocols.load("dhvae", "interhuman").split


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return str(write_synthetic(tmp_path_factory.mktemp("interhuman"), count=10, frames=(15, 18)))


def count_real_embeddings(monkeypatch) -> list[int]:
    """A list that grows by one each time the evaluator embeds the real test set."""
    calls = []
    compute = InterHumanEmbedder._compute_real_embeddings

    def counted(self):
        calls.append(1)
        return compute(self)

    monkeypatch.setattr(InterHumanEmbedder, "_compute_real_embeddings", counted)
    return calls


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, dataset):
    """Two evaluations of the same model into two folders, sharing one fresh engine cache; the
    real-set embeddings computed in each."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTIONFLEET_CACHE", str(tmp_path_factory.mktemp("cache")))
        calls = count_real_embeddings(patch)
        root = tmp_path_factory.mktemp("eval")
        first = evaluate("dhvae", root / "a", dataset, workers=0, batch_size=16, **TINY)
        computed_first = len(calls)
        second = evaluate("dhvae", root / "b", dataset, workers=0, batch_size=16, **TINY)
        return root, first, second, (computed_first, len(calls) - computed_first)


def test_per_sample_ranks_give_the_aggregate_r_precision_exactly(evaluated):
    root, body, _, _ = evaluated
    samples = pq.read_table(root / "a" / SAMPLES_PARQUET).to_pylist()
    assert len(samples) == 2 * 8  # 2 replications x 2 matching batches of 4 (10 motions: 2 left out)
    assert len({s["sample_id"] for s in samples}) == len(samples)
    generated = body["metrics"]["generated"]
    for r in range(2):
        ranks = [s["rank"] for s in samples if s["replication"] == r]
        for k in (1, 2, 3):
            assert sum(rank < k for rank in ranks) / len(ranks) == generated[f"r_precision_top{k}"]["values"][r]
        distances = [s["distance"] for s in samples if s["replication"] == r]
        assert sum(distances) / len(distances) == pytest.approx(generated["mm_dist"]["values"][r], rel=1e-12)
    assert any(s["rank"] > 0 for s in samples)  # dummy evaluator: not every own motion is the nearest


def test_each_record_names_its_generated_row(evaluated):
    root, _, _, _ = evaluated
    prompts = {json.loads(line)["id"]: json.loads(line) for line in (root / "a" / "prompts.jsonl").read_text().splitlines()}
    for sample in pq.read_table(root / "a" / SAMPLES_PARQUET).to_pylist():
        row = pq.read_table(root / "a" / sample["results_file"]).slice(sample["results_row"], 1).to_pylist()[0]
        assert (row["sample_id"], row["repeat"], row["seed"]) == (sample["sample_id"], sample["repeat"], sample["seed"])
        assert sample["text"] == prompts[sample["sample_id"]]["text"] == row["prompt"]
        assert sample["sample_id"] == f"{sample['text_id']}/r{sample['replication']}"


def test_inspect_prints_one_record_and_an_unknown_id_is_one_line(evaluated, capsys):
    root, _, _, _ = evaluated
    sample = pq.read_table(root / "a" / SAMPLES_PARQUET).to_pylist()[5]
    capsys.readouterr()
    assert main(["evaluate", "--family", "dhvae", "--out", str(root / "a"), "--inspect", sample["sample_id"]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{name}: {value}" for name, value in sample.items()]
    assert f"rank: {sample['rank']}" in lines

    assert main(["evaluate", "--family", "dhvae", "--out", str(root / "a"), "--inspect", "nope/r0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--inspect nope/r0: no such sample" in err[0]

    assert main(["evaluate", "--family", "dhvae", "--out", str(root / "a" / "embed"), "--inspect", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samples.parquet does not exist" in err[0]


def test_inspect_of_a_damaged_samples_file_is_one_line_exit_1(tmp_path, capsys):
    (tmp_path / SAMPLES_PARQUET).write_bytes(b"PAR1 not parquet")
    capsys.readouterr()
    assert main(["evaluate", "--family", "dhvae", "--out", str(tmp_path), "--inspect", "x/r0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samples.parquet: not a readable Parquet file" in err[0]


def test_the_second_evaluation_reuses_the_cached_real_embeddings(evaluated):
    root, first, second, (computed_first, computed_second) = evaluated
    assert (computed_first, computed_second) == (1, 0)
    assert second["metrics"] == first["metrics"]  # the cached embeddings are the computed ones, to the bit
    same = [c for c in pq.read_schema(root / "a" / SAMPLES_PARQUET).names if c != "results_file"]  # a file name holds its attempt's token
    assert pq.read_table(root / "b" / SAMPLES_PARQUET, columns=same) == pq.read_table(root / "a" / SAMPLES_PARQUET, columns=same)


def embedder(dataset, checkpoint=None) -> InterHumanEmbedder:
    return InterHumanEmbedder(EvaluatorSpec(checkpoint=checkpoint, preset="tiny"), dataset, SPLIT, {}, 16, "cpu")


def test_a_changed_evaluator_file_computes_the_real_embeddings_again(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    calls = count_real_embeddings(monkeypatch)
    checkpoint = lightning_file(tmp_path / "interclip.ckpt", interclip.build_dummy(interclip.PRESETS["tiny"], seed=1))
    first = embedder(dataset, checkpoint).real_embeddings()
    again = embedder(dataset, checkpoint).real_embeddings()
    assert len(calls) == 1
    assert all(np.array_equal(first[name], again[name]) for name in first)

    lightning_file(tmp_path / "interclip.ckpt", interclip.build_dummy(interclip.PRESETS["tiny"], seed=2))
    changed = embedder(dataset, checkpoint).real_embeddings()
    assert len(calls) == 2
    assert not all(np.array_equal(first[name], changed[name]) for name in first)


@pytest.mark.parametrize("damage", ["truncated", "other_key", "nan"])
def test_a_damaged_cache_file_is_computed_again(tmp_path, dataset, monkeypatch, capsys, damage):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    calls = count_real_embeddings(monkeypatch)
    fresh = embedder(dataset)
    expected = fresh.real_embeddings()
    path = embedding_cache.cache_path(fresh.cache_key)
    names = list(expected)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    else:
        rows = np.stack(list(expected.values()))
        if damage == "nan":
            rows[3, 1] = np.nan
        embedding_cache.write_cache(path, {**fresh.cache_key, "dataset": "another"} if damage == "other_key"
                                    else fresh.cache_key, names, rows)
    capsys.readouterr()
    again = embedder(dataset).real_embeddings()
    assert len(calls) == 2
    assert all(np.array_equal(expected[name], again[name]) for name in names)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a usable embedding cache" in err[0] and "computing it again" in err[0]
    embedder(dataset).real_embeddings()  # the rewritten file is whole again
    assert len(calls) == 2


def test_a_changed_evaluator_file_does_not_pass_off_the_old_metrics(tmp_path, dataset, monkeypatch):
    """The embed job is the evaluator's weights' job, not its path's: rerun into the same folder
    after the file changed, it is refused (one line through the CLI) instead of returning the
    metrics the old weights gave."""
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    checkpoint = lightning_file(tmp_path / "interclip.ckpt", interclip.build_dummy(interclip.PRESETS["tiny"], seed=1))
    settings = {**TINY, "evaluator_checkpoint": checkpoint, "mm_texts": 0}
    evaluate("dhvae", tmp_path / "out", dataset, workers=0, batch_size=16, **settings)
    lightning_file(tmp_path / "interclip.ckpt", interclip.build_dummy(interclip.PRESETS["tiny"], seed=2))
    with pytest.raises(JobMismatch, match="embed holds results of another job"):
        evaluate("dhvae", tmp_path / "out", dataset, workers=0, batch_size=16, **settings)
