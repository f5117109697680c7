"""Metrics: Procrustes, Chamfer distance, contact precision / recall / F-score, plausibility."""

import math

import pytest
import torch

from motionfleet.common.rotations import axis_angle_to_matrix
from motionfleet.scorehoi import metrics


def cloud(n, seed):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def similarity(points, seed, scale=1.7):
    g = torch.Generator().manual_seed(seed)
    rotation = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64))
    return scale * points @ rotation.T + torch.randn(3, generator=g, dtype=torch.float64)


def test_procrustes_undoes_a_similarity_transform():
    target = cloud(50, 0)
    torch.testing.assert_close(metrics.procrustes_align(similarity(target, 1), target), target)


def test_procrustes_never_reflects():
    target = cloud(50, 2)
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    aligned = metrics.procrustes_align(mirrored, target)
    assert (aligned - target).norm(dim=1).mean() > 0.1


def test_chamfer_distance_sums_the_two_mean_nearest_distances():
    x = torch.tensor([[0.0, 0, 0]])
    y = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    assert metrics.chamfer_distance(x, y) == pytest.approx(0.5)
    assert metrics.chamfer_distance(x, x + torch.tensor([0.0, 0.2, 0])) == pytest.approx(0.4)


def test_hoi_chamfer_is_zero_up_to_a_similarity_and_sees_a_misplaced_object():
    human, obj = cloud(80, 3), cloud(30, 4) + 3
    moved = similarity(torch.cat([human, obj]), 5, scale=0.5)
    cd_human, cd_object = metrics.hoi_chamfer_distances(moved[:80], moved[80:], human, obj)
    assert cd_human == pytest.approx(0, abs=1e-6) and cd_object == pytest.approx(0, abs=1e-6)
    cd_human, cd_object = metrics.hoi_chamfer_distances(human, obj + torch.tensor([0.0, 0.1, 0]), human, obj)
    assert cd_object > 5 and cd_object > cd_human  # centimetres


def test_contact_precision_recall_fscore():
    predicted = torch.tensor([True, True, False, False])
    target = torch.tensor([True, False, True, False])
    assert metrics.precision_recall_fscore(predicted, target) == pytest.approx((0.5, 0.5, 0.5))
    precision, recall, fscore = metrics.precision_recall_fscore(torch.zeros(4, dtype=torch.bool), target)
    assert math.isnan(precision) and recall == 0 and math.isnan(fscore)
    precision, recall, fscore = metrics.precision_recall_fscore(predicted, torch.zeros(4, dtype=torch.bool))
    assert precision == 0 and math.isnan(recall) and math.isnan(fscore)
    assert metrics.fscore(0.0, 0.0) == 0.0


def test_contact_mask_counts_points_inside_and_within_5_cm():
    surface = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    points = torch.tensor([[0.0, 0.04, 0], [0.0, 0.06, 0], [0.5, 0, 0]])
    gap = metrics.surface_gap(points, surface, inside=torch.tensor([False, False, True]))
    torch.testing.assert_close(gap, torch.tensor([0.04, 0.06, 0.0], dtype=torch.float64))
    assert metrics.contact_mask(gap).tolist() == [True, False, True]


def test_penetration_depth_and_contact_distance():
    assert metrics.penetration_depth(torch.tensor([0.3, -0.02, -0.05, float("inf")])) == pytest.approx(0.05)
    assert metrics.penetration_depth(torch.tensor([0.3, 0.01])) == 0.0
    assert metrics.contact_distance(torch.tensor([0.0, 0.1])) == pytest.approx(0.05)
    assert math.isnan(metrics.contact_distance(torch.zeros(0)))
