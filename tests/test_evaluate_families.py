"""socialmirror and scorehoi protocols: per-frame / per-sample scores folded in a fixed order."""

import math

import pytest

from motionfleet.evaluation.api import evaluate
from motionfleet.scorehoi.evaluate import defined_mean, metric_means
from motionfleet.socialmirror import evaluate as sm


def person(video, frame, p, dx=0.0, knee=0.0):
    pose = [0.0] * 72
    pose[3 * 4] = knee  # left knee, about x
    return {"video_id": video, "frame_index": frame, "person": p, "pose_axis_angle": pose, "betas": [0.0] * 10,
            "translation": [-1.0 + 2 * p + dx, 0.0, 4.0]}


@pytest.fixture(scope="module")
def bodies():
    return sm.PairBodies(None)  # the cached synthetic SMPL


def test_reconstruction_scores_against_ground_truth(bodies):
    truth = sm.pairs_by_frame([person("a.mp4", f, p) for f in range(3) for p in (0, 1)])
    exact = [person("a.mp4", f, p) for f in range(3) for p in (0, 1)]
    scores, frames = sm.replication_metrics(exact, truth, bodies)
    assert frames == 3 and all(v == pytest.approx(0.0, abs=1e-3) for v in scores.values())

    # person 1 placed 10 cm too far right: each person's pelvis-aligned pose is still exact, the
    # pair's cross distances are not
    moved = [person("a.mp4", f, p, dx=0.1 * p) for f in range(3) for p in (0, 1)]
    scores, _ = sm.replication_metrics(moved, truth, bodies)
    assert scores["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3) and scores["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert 10.0 < scores["interaction_mm"] < 100.0

    # a bent knee in frame 0 only: MPJPE is the frame mean of that frame's error over three frames
    bent = [person("a.mp4", f, p, knee=0.8 if f == 0 else 0.0) for f in range(3) for p in (0, 1)]
    one, _ = sm.replication_metrics([r for r in bent if r["frame_index"] == 0], truth, bodies)
    scores, _ = sm.replication_metrics(bent, truth, bodies)
    assert one["mpjpe_mm"] > 1.0
    assert scores["mpjpe_mm"] == pytest.approx(one["mpjpe_mm"] / 3, rel=1e-9)
    assert scores["pa_mpjpe_mm"] > 0.0


def test_frames_without_both_people_in_both_are_an_error(bodies):
    # (penetration itself, whole SMPL bodies overlapping included: tests/test_reconstruct_metrics.py)
    truth = sm.pairs_by_frame([person("a.mp4", 0, p) for p in (0, 1)])
    with pytest.raises(ValueError, match="no frame has both people"):
        sm.replication_metrics([person("b.mp4", 0, p) for p in (0, 1)], truth, bodies)
    with pytest.raises(ValueError, match="no frame has both people"):
        sm.replication_metrics([person("a.mp4", 0, 0)], truth, bodies)


def test_hoi_means_skip_undefined_samples_in_id_order():
    assert defined_mean([1.0, None, 3.0]) == 2.0 and math.isnan(defined_mean([None]))
    rows = [{"sample_id": s, **{f"{m}_after": v for m in ("chamfer_human_cm", "chamfer_object_cm", "contact_precision",
                                                           "contact_recall", "contact_fscore", "penetration_depth_m")}}
            for s, v in (("b", None), ("a", 2.0), ("c", 4.0))]
    assert metric_means(rows, "after")["contact_precision"] == 3.0


def test_scorehoi_protocol_on_the_demo_scenes(tmp_path):
    body = evaluate("scorehoi", tmp_path / "hoi", workers=0, preset="small", sampler_preset="fast", rounds=1,
                    ddim_stride=25)
    refined, initial = body["metrics"]["generated"], body["metrics"]["initial"]
    assert set(refined) == {"chamfer_human_cm", "chamfer_object_cm", "contact_precision", "contact_recall",
                            "contact_fscore", "penetration_depth_m"}
    assert all(len(m["values"]) == 1 and math.isfinite(m["mean"]) for m in refined.values())
    assert initial["penetration_depth_m"]["mean"] > 0.0  # half the demo scenes start pushed into the body
    assert body["dataset"]["motions"] == 8
    with pytest.raises(ValueError, match="one replication"):
        evaluate("scorehoi", tmp_path / "hoi2", workers=0, preset="small", replications=2)
