"""The end-of-job summary's wording: what ran where, and shares that stay shares."""

import pytest

from motionfleet.core.jobfolder.report import common_lines
from motionfleet.socialmirror.report import hidden_share


def report(requested: int, ran: int) -> dict:
    return {"rows": {"results": 3, "rejected": 0}, "workers": {"requested": requested, "ran": ran, "nodes": 0},
            "shards": {"run": 1, "total": 1}, "wall_s": 1.0, "timing": {"peak_rss_mb": 100.0},
            "settings": {"backend": "torch", "precision": "fp32", "device": "cpu"},
            "job": {"model_name": "dhvae/tiny", "weights": "dummy, seed 0"}, "family": "dhvae",
            "headline": {"name": "aits_s", "value": 0.5, "unit": "s", "meaning": "..."}}


def test_workers_zero_says_in_process_and_counts_no_worker():
    line = common_lines(report(requested=0, ran=1))[0]
    assert "workers: in process (--workers 0)" in line and "asked" not in line and "workers 1" not in line
    assert "workers 1 of 2" in common_lines(report(requested=2, ran=1))[0]


@pytest.mark.parametrize("wait,decode,share", [(0.0, 2.0, 1.0), (1.0, 2.0, 0.5), (2.02, 2.0, 0.0), (5.0, 0.0, None)])
def test_decode_hidden_is_a_share_never_negative(wait, decode, share):
    assert hidden_share(wait, decode) == share
