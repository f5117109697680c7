"""Rotation conversions: round trips, orthonormality, the edge angles 0 and pi, finite gradients."""

import math

import pytest
import torch

from motionfleet.common.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)


def random_axis_angles(n: int, max_angle: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    return axis * torch.rand(n, 1, generator=g, dtype=torch.float64) * max_angle


def edge_axis_angles() -> torch.Tensor:
    """Zero, tiny, just under pi and exactly pi, about several axes."""
    axes = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, -3], [-0.3, 0.1, 0.9]], dtype=torch.float64), dim=-1)
    angles = torch.tensor([0.0, 1e-9, 1e-4, math.pi - 1e-6, math.pi], dtype=torch.float64)
    return (axes[:, None, :] * angles[None, :, None]).reshape(-1, 3)


def test_6d_gram_schmidt_gives_orthonormal_right_handed_matrices():
    d6 = torch.randn(4, 7, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = rotation_6d_to_matrix(d6)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(4, 7, dtype=torch.float64))


def test_6d_is_first_two_rows_and_round_trips():
    r = axis_angle_to_matrix(random_axis_angles(64, math.pi))
    d6 = matrix_to_rotation_6d(r)
    torch.testing.assert_close(d6, torch.cat([r[:, 0], r[:, 1]], dim=-1))
    torch.testing.assert_close(rotation_6d_to_matrix(d6), r)


def test_axis_angle_to_matrix_matches_matrix_exponential():
    aa = random_axis_angles(64, 3.0)
    expected = torch.linalg.matrix_exp(torch.linalg.cross(
        aa[:, None, :].expand(-1, 3, -1), torch.eye(3, dtype=torch.float64).expand(64, -1, -1), dim=-1
    ).transpose(-1, -2))
    torch.testing.assert_close(axis_angle_to_matrix(aa), expected)


def test_axis_angle_round_trip_below_pi():
    aa = torch.cat([random_axis_angles(256, math.pi - 1e-3), edge_axis_angles()[:-1]])
    aa = aa[aa.norm(dim=-1) < math.pi]
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa, atol=1e-7, rtol=1e-7)


def test_matrix_round_trip_at_edge_angles():
    r = axis_angle_to_matrix(edge_axis_angles())
    aa = matrix_to_axis_angle(r)
    assert torch.all(aa.norm(dim=-1) <= math.pi + 1e-9)
    torch.testing.assert_close(axis_angle_to_matrix(aa), r, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_at_edge_angles(dtype):
    aa = edge_axis_angles().to(dtype).requires_grad_(True)
    r = axis_angle_to_matrix(aa)
    d6 = matrix_to_rotation_6d(r)
    back = matrix_to_axis_angle(rotation_6d_to_matrix(d6))
    (back.sum() + r.sum()).backward()
    assert torch.isfinite(aa.grad).all()

    identity = torch.eye(3, dtype=dtype).repeat(2, 1, 1).requires_grad_(True)
    matrix_to_axis_angle(identity).sum().backward()
    assert torch.isfinite(identity.grad).all()


def test_gradient_of_rodrigues_matches_finite_differences():
    aa = torch.cat([random_axis_angles(4, 3.0), torch.full((1, 3), 1e-5, dtype=torch.float64)])
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa.requires_grad_(True),))
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (axis_angle_to_matrix(aa).detach().requires_grad_(True),))
