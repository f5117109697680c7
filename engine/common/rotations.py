"""Rotation conversions: the engine's one place for them. Batched over any leading dims, differentiable.

Conventions (same as pytorch3d):

* Matrices act on column vectors, ``x' = R @ x``.
* The 6D representation (Zhou et al., "On the Continuity of Rotation Representations in
  Neural Networks", CVPR 2019) is the first two *rows* of ``R`` flattened: ``(R[0], R[1])``.
* Axis-angle is ``theta * axis`` with ``theta = |aa|`` in radians.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this squared angle the closed forms are replaced by their Taylor series (the
# dropped terms are O(theta^4) ~ 1e-12, under float64 round-off relative to 1).
_SMALL_ANGLE_SQ = 1e-6


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two 3-vectors ``a1, a2``.

    ``b1 = a1/|a1|``, ``b2 = normalize(a2 - (b1.a2) b1)``, ``b3 = b1 x b2``; rows of R are b1, b2, b3.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows, flattened."""
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix ``[v]_x`` with ``[v]_x w = v x w``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (zero, -z, y, z, zero, -x, -y, x, zero)
    return torch.stack(rows, dim=-1).reshape(*v.shape[:-1], 3, 3)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(max(x, 0)) whose gradient is 0 (not inf/NaN) where x <= 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3), Rodrigues with the unnormalised skew matrix ``K = [aa]_x``:

    ``R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2``, ``t = |aa|``; near t = 0 the two
    coefficients are their series ``1 - t^2/6`` and ``1/2 - t^2/24`` (finite gradients at 0).
    """
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    sin_over_theta = torch.where(small, 1 - theta_sq / 6, torch.sin(theta) / theta)
    one_minus_cos_over_theta_sq = torch.where(  # 1 - cos t = 2 sin^2(t/2), no cancellation
        small, 0.5 - theta_sq / 24, 2 * torch.sin(theta / 2) ** 2 / (theta * theta)
    )
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_over_theta[..., None, None] * k + one_minus_cos_over_theta_sq[..., None, None] * (k @ k)


def _matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0.

    Four algebraically equal candidates are formed, each dividing by one of
    ``4|w|, 4|x|, 4|y|, 4|z|`` (``|q_i| = sqrt(1 +- m00 +- m11 +- m22) / 2``); the one with the
    largest divisor is taken, so the result stays well conditioned at every angle including pi.
    """
    m = matrix.reshape(*matrix.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    q_abs = _safe_sqrt(torch.stack([
        1 + m00 + m11 + m22,
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
    ], dim=-1))
    candidates = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    candidates = candidates / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = F.one_hot(q_abs.argmax(dim=-1), num_classes=4).to(matrix.dtype)
    quaternion = (candidates * best[..., :, None]).sum(-2)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def _quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) with w >= 0 -> (..., 3): ``aa = v * t / sin(t/2)``, ``t = 2 atan2(|v|, w)``.

    Near t = 0, ``t / sin(t/2) = 2 + |v|^2/3 + O(|v|^4)`` (using ``sin(t/2) = |v|``).
    """
    w, v = quaternion[..., :1], quaternion[..., 1:]
    sin_half_sq = (v * v).sum(-1, keepdim=True)
    small = sin_half_sq < _SMALL_ANGLE_SQ
    sin_half = torch.sqrt(torch.where(small, torch.ones_like(sin_half_sq), sin_half_sq))
    angle = 2 * torch.atan2(sin_half, w)
    scale = torch.where(small, 2 + sin_half_sq / 3, angle / sin_half)
    return v * scale


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) with angle in [0, pi]; at exactly pi either sign of the axis is valid."""
    return _quaternion_to_axis_angle(_matrix_to_quaternion(matrix))
