"""Image features and the initial estimate that SocialMirror's diffusion starts from.

Per person and frame, from the person crop's ResNet-50 feature f (2048, ``resnet.py``):

    F_img  = W_p f + b_p                               (2048 -> image_feature_dim, 1024 released)
    x_init = mean + MLP([F_img | bbox_info])           (157 = 144 pose 6D, 10 betas, 3 crop camera)

F_img is the denoiser's image condition; x_init is the centre x of the diffusion (supp. eqs. 2-3).
CloseInt reads 1024-dim features from its own pre-extracted files and takes x_init's pose from an
upstream single-frame regressor, neither of them public, so this projection and this regression
head (HMR-style: a residual on a mean estimate) are ours. ``mean`` is CloseInt's diffusion mean
with the identity body pose: root rotated by pi about x (the SMPL body, y up, stands upright in the
camera frame, y down), the other 23 joints identity, zero betas, crop camera (s, tx, ty) =
(0.9, 0, 0). Dummy weights keep the residual small, so a dummy x_init stays near that mean.

Crop geometry follows CLIFF (Li et al. 2022) with CloseInt's normalisation constants, for a crop
square of side b centred at (cx, cy) in a W x H image and focal length f = sqrt(W^2 + H^2):

    bbox_info = [(cx - W/2) / f * 2.8, (cy - H/2) / f * 2.8, (b - 0.24 f) / (0.06 f)]   (CLIFF eq. 5)
    t_full    = [tx + 2 (cx - W/2) / (b s), ty + 2 (cy - H/2) / (b s), 2 f / (b s)]   (cam_crop2full)

``t_full`` is the SMPL translation in the camera frame (metres, x right, y down, z forward).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from motionfleet.common.resnet import FEATURE_DIM
from motionfleet.common.weights import read_state_dict, seeded
from motionfleet.socialmirror.model import CAMERA_DIM, MOTION_DIM, POSE_DIM, SHAPE_DIM

BBOX_INFO_DIM = 3
MEAN_CAMERA = (0.9, 0.0, 0.0)
ROOT_6D = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # first two rows of diag(1, -1, -1): pi about x
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
DUMMY_RESIDUAL_SCALE = 0.05


def mean_estimate() -> torch.Tensor:
    """(157,) the estimate the head's residual is added to."""
    pose = torch.tensor(ROOT_6D + IDENTITY_6D * 23)
    return torch.cat([pose, torch.zeros(SHAPE_DIM), torch.tensor(MEAN_CAMERA)])


class InitialEstimator(nn.Module):
    """Feature projection (W_p, b_p) and the regression head, one row per (person, frame)."""

    def __init__(self, image_feature_dim: int = 1024, hidden_dim: int = 1024):
        super().__init__()
        self.project = nn.Linear(FEATURE_DIM, image_feature_dim)
        self.head = nn.Sequential(
            nn.LayerNorm(image_feature_dim + BBOX_INFO_DIM),
            nn.Linear(image_feature_dim + BBOX_INFO_DIM, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, MOTION_DIM),
        )
        self.register_buffer("mean", mean_estimate())

    def image_features(self, backbone_features: torch.Tensor) -> torch.Tensor:
        """(N, 2048) ResNet-50 features -> (N, image_feature_dim) F_img."""
        return self.project(backbone_features)

    def regress(self, image_features: torch.Tensor, bbox_info: torch.Tensor) -> torch.Tensor:
        """(N, image_feature_dim) F_img and (N, 3) bbox_info -> (N, 157) x_init."""
        return self.mean + self.head(torch.cat([image_features, bbox_info], dim=-1))


def build_initial_estimator(image_feature_dim: int, weights_path: Optional[str] = None,
                            seed: int = 0) -> InitialEstimator:
    """Eval-mode estimator: a state dict from disk (keys ``project.*``, ``head.*``; safetensors
    or a torch file), or seeded dummy weights with the last layer scaled by
    ``DUMMY_RESIDUAL_SCALE``."""
    with seeded(seed):
        model = InitialEstimator(image_feature_dim)
        last = model.head[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(DUMMY_RESIDUAL_SCALE)
            last.bias.mul_(DUMMY_RESIDUAL_SCALE)
    if weights_path is not None:
        state = {key: value for key, value in read_state_dict(weights_path).items() if key != "mean"}
        model.load_state_dict({**state, "mean": model.mean}, strict=True)
    return model.eval()


def focal_length(width: int, height: int) -> float:
    """CLIFF's focal length estimate for an uncalibrated W x H image: its diagonal in pixels."""
    return math.hypot(width, height)


def bbox_info(squares: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(..., 4) crop squares x0, y0, x1, y1 (pixels) -> (..., 3) CLIFF bbox_info (see module doc)."""
    f = focal_length(width, height)
    cx = (squares[..., 0] + squares[..., 2]) / 2
    cy = (squares[..., 1] + squares[..., 3]) / 2
    side = squares[..., 2] - squares[..., 0]
    return torch.stack([(cx - width / 2) / f * 2.8, (cy - height / 2) / f * 2.8,
                        (side - 0.24 * f) / (0.06 * f)], dim=-1)


def cam_crop_to_full(camera: torch.Tensor, squares: torch.Tensor, width: int, height: int,
                     focal: Optional[float] = None) -> torch.Tensor:
    """(..., 3) crop camera (s, tx, ty) and (..., 4) crop squares -> (..., 3) camera-frame translation
    (``focal``: the focal length in pixels, CLIFF's by default)."""
    f = focal_length(width, height) if focal is None else focal
    cx = (squares[..., 0] + squares[..., 2]) / 2
    cy = (squares[..., 1] + squares[..., 3]) / 2
    scaled_side = (squares[..., 2] - squares[..., 0]) * camera[..., 0] + 1e-9  # b s, as CLIFF
    return torch.stack([camera[..., 1] + 2 * (cx - width / 2) / scaled_side,
                        camera[..., 2] + 2 * (cy - height / 2) / scaled_side,
                        2 * f / scaled_side], dim=-1)


def cam_full_to_crop(translation: torch.Tensor, squares: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The inverse of :func:`cam_crop_to_full` with CLIFF's focal length: (..., 3) translation -> crop camera."""
    f = focal_length(width, height)
    cx = (squares[..., 0] + squares[..., 2]) / 2
    cy = (squares[..., 1] + squares[..., 3]) / 2
    scaled_side = 2 * f / translation[..., 2]  # b s
    return torch.stack([scaled_side / (squares[..., 2] - squares[..., 0]),
                        translation[..., 0] - 2 * (cx - width / 2) / scaled_side,
                        translation[..., 1] - 2 * (cy - height / 2) / scaled_side], dim=-1)


def diffusion_centre(x_init: torch.Tensor) -> torch.Tensor:
    """(..., 157) CloseInt's centre of the diffusion: the initial estimate's pose, zero betas and
    the mean crop camera (0.9, 0, 0). The network predicts the offset from this centre, so the
    estimate's own betas and camera do not enter it (centring on the whole estimate adds them twice)."""
    centre = x_init.clone()
    centre[..., POSE_DIM:POSE_DIM + SHAPE_DIM] = 0
    centre[..., POSE_DIM + SHAPE_DIM:] = torch.tensor(MEAN_CAMERA, dtype=x_init.dtype, device=x_init.device)
    return centre


def split_estimate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 157) -> pose 6D (..., 24, 6), betas (..., 10), crop camera (..., 3)."""
    pose = x[..., :POSE_DIM].reshape(*x.shape[:-1], POSE_DIM // 6, 6)
    return pose, x[..., POSE_DIM:POSE_DIM + SHAPE_DIM], x[..., POSE_DIM + SHAPE_DIM:POSE_DIM + SHAPE_DIM + CAMERA_DIM]
