"""SocialMirror's geometric guidance on the 24 SMPL joints of the two people.

The Geometry Optimizer (supp. Sec. 1.1, 2.1) represents each person by 24 SMPL joints (D' = 24 x 3)
and guides the motion with them. Its exact losses are not published; ours, per frame, on the
camera-frame joints a_i (person 0) and b_j (person 1) of the predicted clean estimate x0_hat:

    L_pen = sum_{i,j} relu(2 r - ||a_i - b_j||)^2           joints as spheres of radius r may not overlap
    L_aux = 1/2 sum_{p,i} m_p ||J_p,i - A_p,i||^2            pull towards an auxiliary 3D joint estimate A
    L     = w_pen L_pen + w_aux L_aux                       (m_p = 1 where A is given, else 0)

Gradients on the joints are analytic (d_ij = ||a_i - b_j||, u_ij = (a_i - b_j) / d_ij):
    dL_pen/da_i = -2 sum_j relu(2r - d_ij) u_ij,   dL_pen/db_j = 2 sum_i relu(2r - d_ij) u_ij
    dL_aux/dJ   = m (J - A)
and are chained into x0_hat (pose 6D, betas, crop camera) by one autograd pass through the body
model's kinematic chain and the crop-to-full camera. The denoiser is never differentiated; the
sampler turns dL/dx0_hat into a noise correction (``sampling.initial_ddim``), as ScoreHOI's score
guidance does. ``PairJointGuidance`` has ScoreHOI's guidance interface: x0 -> (L, dL/dx0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from motionfleet.common.bodies import BodyModel
from motionfleet.common.body_points import BodyPoints
from motionfleet.common.rotations import rotation_6d_to_matrix
from motionfleet.socialmirror.initial_estimate import cam_crop_to_full, split_estimate
from motionfleet.socialmirror.settings import ReconstructSettings

NUM_JOINTS = 24


class SMPLJoints:
    """(rotations (N, 24, 3, 3), betas (N, 10)) -> posed joints (N, 24, 3), zero translation.

    The kinematic chain of ``BodyPoints`` without any vertex: equals ``BodyModel.forward(...).joints``.
    """

    def __init__(self, body: BodyModel):
        if body.kind != "smpl":
            raise ValueError(f"socialmirror guides the 24 SMPL joints; got a {body.kind} body model")
        self.points = BodyPoints(body, torch.zeros(0, dtype=torch.long))

    def __call__(self, rotations: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        return self.points.world_transforms(rotations, self.points.joints(betas))[1]


@dataclass(frozen=True)
class CropGeometry:
    """Where each (clip, person, frame) was cropped: squares (..., 4) pixels in a W x H image, or
    with ``sizes`` one (W, H) per clip (the leading dimension) when a batch holds clips of videos
    of other sizes."""

    squares: torch.Tensor
    width: int
    height: int
    sizes: Optional[tuple[tuple[int, int], ...]] = None

    def translation(self, camera: torch.Tensor) -> torch.Tensor:
        """(..., 3) crop camera -> camera-frame translation. Per clip with ``sizes``: the formula is
        elementwise, so a clip gets the same bits in any batch."""
        if self.sizes is None:
            return cam_crop_to_full(camera, self.squares, self.width, self.height)
        return torch.stack([cam_crop_to_full(camera[b], self.squares[b], w, h) for b, (w, h) in enumerate(self.sizes)])


def estimate_joints(x: torch.Tensor, crops: CropGeometry, joints: SMPLJoints) -> torch.Tensor:
    """(..., 157) estimates -> (..., 24, 3) camera-frame joints."""
    pose, betas, camera = split_estimate(x)
    lead = x.shape[:-1]
    rest = joints(rotation_6d_to_matrix(pose).reshape(-1, NUM_JOINTS, 3, 3), betas.reshape(-1, betas.shape[-1]))
    translation = crops.translation(camera)
    return rest.reshape(*lead, NUM_JOINTS, 3) + translation[..., None, :]


AUX_WITHOUT_MASK = "auxiliary joints need aux_mask, the frames where they are given"


def pair_loss_and_grad(pair: torch.Tensor, radius: float, w_penetration: float = 1.0,
                       w_aux: float = 0.0, aux: Optional[torch.Tensor] = None,
                       aux_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L (N,) and dL/dpair (N, 2, 24, 3) for N frames of joint pairs (N, 2, 24, 3).

    ``aux`` (N, 2, 24, 3) is the auxiliary joint estimate and ``aux_mask`` (N, 2) where it is given.
    """
    a, b = pair[:, 0], pair[:, 1]
    offsets = a[:, :, None] - b[:, None]  # (N, 24, 24, 3)
    distance = offsets.norm(dim=-1)
    hinge = torch.relu(2 * radius - distance)
    unit = offsets / distance.clamp_min(1e-9)[..., None]
    push = 2 * hinge[..., None] * unit
    grad = torch.stack([-push.sum(2), push.sum(1)], dim=1) * w_penetration
    loss = w_penetration * (hinge**2).sum((1, 2))
    if aux is not None and w_aux:
        if aux_mask is None:
            raise ValueError(AUX_WITHOUT_MASK)
        mask = aux_mask[..., None, None].to(pair.dtype)
        residual = mask * (pair - aux)
        loss = loss + w_aux * 0.5 * (residual**2).sum((1, 2, 3))
        grad = grad + w_aux * residual
    return loss, grad


@dataclass(frozen=True)
class GuidanceWeights:
    """rho of the noise correction, w_pen, w_aux and the joint sphere radius r (metres); by default
    reconstruct's."""

    scale: float = ReconstructSettings.guidance_scale
    penetration: float = ReconstructSettings.guidance_penetration
    aux: float = ReconstructSettings.guidance_aux
    joint_radius: float = ReconstructSettings.joint_radius

    @classmethod
    def of(cls, settings: ReconstructSettings) -> GuidanceWeights:
        return cls(settings.guidance_scale, settings.guidance_penetration, settings.guidance_aux, settings.joint_radius)


class PairJointGuidance:
    """x0_hat (B, 2, L, 157) -> (L (B,), dL/dx0_hat (B, 2, L, 157)), summed over the clip's frames."""

    def __init__(self, joints: SMPLJoints, crops: CropGeometry, weights: GuidanceWeights,
                 aux: Optional[torch.Tensor] = None, aux_mask: Optional[torch.Tensor] = None):
        """``aux`` (B, 2, L, 24, 3) auxiliary joints, ``aux_mask`` (B, 2, L) where they are given."""
        if aux is not None and aux_mask is None:
            raise ValueError(AUX_WITHOUT_MASK)
        self.joints, self.crops, self.weights = joints, crops, weights
        self.aux, self.aux_mask = aux, aux_mask

    def __call__(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, people, frames = x0.shape[:3]
        with torch.enable_grad():
            x = x0.detach().requires_grad_(True)
            pair = estimate_joints(x, self.crops, self.joints).transpose(1, 2)  # (B, L, 2, 24, 3)
            loss, grad_pair = pair_loss_and_grad(
                pair.detach().reshape(batch * frames, people, NUM_JOINTS, 3), self.weights.joint_radius,
                self.weights.penetration, self.weights.aux, *self._aux_frames(batch * frames))
            (grad,) = torch.autograd.grad(pair, x, grad_pair.reshape(pair.shape))
        return loss.reshape(batch, frames).sum(1), grad

    def _aux_frames(self, rows: int) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        if self.aux is None or self.aux_mask is None:  # __init__ refuses aux joints without their mask
            return None, None
        return (self.aux.transpose(1, 2).reshape(rows, 2, NUM_JOINTS, 3),
                self.aux_mask.transpose(1, 2).reshape(rows, 2))
