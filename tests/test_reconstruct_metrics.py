"""Two-person reconstruction metrics: MPJPE, PA-MPJPE, G/R-MPJPE, Int, Pen (engine.metrics)."""

import math

import pytest
import torch
import trimesh

from motionfleet.common.rotations import axis_angle_to_matrix
from motionfleet.socialmirror.metrics import (
    face_tree,
    global_mpjpe,
    interaction_error,
    mpjpe,
    pa_mpjpe,
    pair_penetration,
    relative_mpjpe,
    winding_numbers,
)
from motionfleet.socialmirror.runner import load_smpl


def random_pair(frames=3, joints=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pair = torch.randn(frames, 2, joints, 3, generator=generator, dtype=torch.float64) * 0.3
    pair[:, 1] += torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    return pair


def rotation_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_mpjpe_aligns_the_pelvis_and_counts_the_rest():
    target = random_pair()[:, 0]
    assert mpjpe(target + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), target) == pytest.approx(0, abs=1e-9)
    moved = target.clone()
    moved[:, 5, 1] += 0.024
    assert mpjpe(moved, target) == pytest.approx(1.0)  # 24 mm on 1 of 24 joints, in mm


def test_pa_mpjpe_ignores_a_similarity_transform_and_mpjpe_does_not():
    target = random_pair()[:, 0]
    pred = 1.3 * target @ rotation_z(0.7).T + torch.tensor([0.5, 0.2, -0.1], dtype=torch.float64)
    assert pa_mpjpe(pred, target) == pytest.approx(0, abs=1e-6)
    assert mpjpe(pred, target) > 10
    noisy = target + 0.01 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert 0 < pa_mpjpe(noisy, target) <= mpjpe(noisy, target)


def test_global_and_relative_errors_see_where_the_people_stand():
    target = random_pair()
    shifted = target + torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)  # the whole pair moves
    assert global_mpjpe(shifted, target) == pytest.approx(0, abs=1e-9)
    assert relative_mpjpe(shifted, target) == pytest.approx(0, abs=1e-9)
    apart = target.clone()
    apart[:, 1, :, 0] += 0.1  # person 1 steps 10 cm away
    assert global_mpjpe(apart, target) == pytest.approx(50.0)  # each person 5 cm off the pair's centre
    assert relative_mpjpe(apart, target) == pytest.approx(100.0)  # each 10 cm off in the other's frame
    assert mpjpe(apart[:, 1], target[:, 1]) == pytest.approx(0, abs=1e-9)


def test_interaction_error_is_the_change_of_cross_distances():
    target = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    target[0, 1, 0, 0] = 1.0
    pred = target.clone()
    pred[0, 1, 0, 0] = 1.2
    assert interaction_error(pred, target) == pytest.approx(200.0)
    pair = random_pair()
    rigid = pair @ rotation_z(1.1).T + 3.0
    assert interaction_error(rigid, pair) == pytest.approx(0, abs=1e-6)


def sphere(centre, radius=0.1, flip=False):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    return torch.as_tensor(mesh.vertices) + torch.tensor(centre), faces.flip(1) if flip else faces


def test_winding_number_is_one_inside_and_zero_outside_either_orientation():
    vertices, faces = sphere((0.0, 0.0, 0.0))
    points = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.02, 0.0], [0.3, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(winding_numbers(points, vertices, face_tree(faces, vertices)),
                          torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(winding_numbers(points, vertices, face_tree(faces.flip(1), vertices)).abs(),
                          torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6)


def test_penetration_is_zero_apart_and_grows_with_the_overlap():
    a, faces = sphere((0.0, 0.0, 0.0))
    surface = face_tree(faces, a)
    pen = []
    for gap in (0.25, 0.17, 0.12):
        b, _ = sphere((gap, 0.0, 0.0))
        pen.append(pair_penetration(a[None], b[None], surface))
    assert pen[0] == 0 and 0 < pen[1] < pen[2]
    b, _ = sphere((0.12, 0.0, 0.0))
    assert pair_penetration(b[None], a[None], surface) == pytest.approx(pen[2])


def test_tree_winding_numbers_equal_the_sum_over_every_triangle_on_overlapping_smpl_bodies():
    # the tree is built on the rest pose and used on another one (a bent arm, a person stepped in):
    # any pose is exact; a one-leaf tree sums every triangle for every point, as the metric did before it
    body = load_smpl(None)[0].double()
    pose = torch.zeros(2, 24, 3, dtype=torch.float64)
    pose[0, 16, 2], pose[0, 18, 1] = -1.0, 1.2  # person 0's left shoulder down, elbow bent
    translation = torch.tensor([[0.0, 0.0, 0.0], [0.15, 0.02, 0.05]], dtype=torch.float64)
    with torch.no_grad():
        a, b = body.forward_rotmats(axis_angle_to_matrix(pose), torch.zeros(2, 10, dtype=torch.float64), translation).vertices
    points = b[((b >= a.min(0).values) & (b <= a.max(0).values)).all(1)][::4]
    every_triangle = winding_numbers(points, a, face_tree(body.faces, a, leaf_size=len(body.faces)))
    tree = winding_numbers(points, a, face_tree(body.faces, body.template_vertices))
    assert (every_triangle.abs() > 0.5).sum() > 50 and (every_triangle.abs() < 0.5).sum() > 50
    assert torch.allclose(tree, every_triangle, rtol=0, atol=1e-9)
