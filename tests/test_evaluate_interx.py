"""``evaluate --family dhvae --protocol interx`` end to end on a synthetic Inter-X-layout set,
through the command line and the Python API: the same metrics as InterHuman's protocol, the
Inter-X preset recorded in metrics.json."""

import json
import re

import pytest

from motionfleet.cli import main
from motionfleet.dhvae.interx import write_synthetic
from motionfleet.evaluation import protocols
from motionfleet.evaluation.api import evaluate

TINY = dict(protocol="interx", preset="tiny-interx", steps=2, evaluator_preset="tiny", replications=2, match_batch=4,
            diversity_pairs=4, mm_texts=2, mm_repeats=3, mm_pairs=2)
METRICS = {"fid", "r_precision_top1", "r_precision_top2", "r_precision_top3", "mm_dist", "diversity", "multimodality"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return str(write_synthetic(tmp_path_factory.mktemp("interx"), count=9, frames=(24, 36)))


def test_the_interx_preset_is_shipped_with_the_published_sizes_and_their_sources():
    preset = protocols.load("dhvae", "interx")
    assert preset.settings == {"replications": 20, "match_batch": 32, "diversity_pairs": 300, "mm_texts": 100,
                               "mm_repeats": 30, "mm_pairs": 10}
    assert preset.evaluator == {"layout": "interx_t2m", "preset": "official"}
    assert preset.split == {"test": "splits/test.txt", "motions": "motions/test.h5", "texts": "texts_processed",
                            "glove": "glove"}
    assert all(re.match(r"(Inter-X|dhvae-official) \S+\.(py|yaml):\d+", source) for source in preset.sources.values())
    assert preset.upstream["liangxuy/Inter-X"].startswith("7902f35")


def test_python_api_completes_with_the_protocols_metrics(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    body = evaluate("dhvae", tmp_path / "api", dataset, workers=0, batch_size=8, **TINY)
    assert body["protocol"] == "interx" and body["protocol_preset"]["name"] == "interx"
    assert body["protocol_upstream"]["liangxuy/Inter-X"].startswith("7902f35")
    assert body["dataset"]["motions"] == 9 and body["protocol_scaled"] is None
    generated, real = body["metrics"]["generated"], body["metrics"]["real"]
    assert set(generated) == METRICS and set(real) == METRICS - {"multimodality"}
    assert all(len(m["values"]) == 2 for m in generated.values())
    assert all(0 <= generated[f"r_precision_top{k}"]["mean"] <= 1 for k in (1, 2, 3))
    assert generated["r_precision_top1"]["mean"] <= generated["r_precision_top3"]["mean"]
    assert real["fid"]["mean"] < generated["fid"]["mean"]  # the dataset is closer to itself than dummy weights' motions
    assert body["evaluator"]["weights"] == "dummy, seed 0, preset tiny"


def test_command_line_completes_and_matches_the_api(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "cli"
    assert main(["evaluate", "--family", "dhvae", "--dataset", dataset, "--out", str(out), "--workers", "0",
                 "--batch-size", "8", *flags]) == 0, capsys.readouterr().err
    body = json.loads((out / "metrics.json").read_text())
    api = evaluate("dhvae", tmp_path / "api", dataset, workers=0, batch_size=8, **TINY)
    assert body["metrics"] == api["metrics"]
    assert body["protocol_preset"]["sources"]["settings.match_batch"].startswith("Inter-X")
