"""ScoreHOI's human-object state and the physical guidance evaluated on it.

State x (331 numbers, the layout of ``models.scorehoi``): 52 x 6 SMPL-H pose (6D, root first),
6 object rotation (6D), 3 object translation, 10 betas divided by ``BETAS_SCALE``.

Frame: the body model's own frame with zero body translation, metres, y up; the floor is the
plane y = 0 (where the synthetic SMPL-H stands). The object's points are o = R p + t for its
template points p. The human is represented by 431 vertices spread over the body
(``bodies.sample_vertex_ids``, as ScoreHOI downsamples SMPL-H).

Guidance (ScoreHOI Sec. 3.3): L_P = l_ho L_ho + l_of L_of + l_pt L_pt on the human and object
points of x0_hat, from the fused kernel (``kernels.guidance``), which returns dL/d(human points),
dL/d(object points) and the SDF term's dL/dR, dL/dt. Object points are chained into the object
pose here (o = R p + t: dL/dR = sum_j g_j p_j^T, dL/dt = sum_j g_j), and everything into x0_hat
through the body model and the 6D -> matrix maps by one autograd pass. The denoiser is not
involved: the sampler divides by sqrt(abar_t) to get dL/dx_t (``sampling.score_guidance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from motionfleet.common.body_points import BodyPoints
from motionfleet.common.rotations import rotation_6d_to_matrix
from motionfleet.core.runtime.stopwatch import StageClock
from motionfleet.kernels.guidance import guidance_loss_and_grad
from motionfleet.scorehoi.model import STATE_DIM
from motionfleet.scorehoi.objects import ObjectTemplate

NUM_JOINTS = 52
NUM_HUMAN_POINTS = 431  # ScoreHOI's downsampled SMPL-H
POSE = slice(0, NUM_JOINTS * 6)
OBJECT_ROTATION = slice(POSE.stop, POSE.stop + 6)
OBJECT_TRANSLATION = slice(OBJECT_ROTATION.stop, OBJECT_ROTATION.stop + 3)
BETAS = slice(OBJECT_TRANSLATION.stop, STATE_DIM)
# ScoreHMR-style models scale betas to [-1, 1] with the training set's min / max, which is not
# published; |betas| <= 3 (three standard deviations of the shape PCA) maps to [-1, 1] here.
BETAS_SCALE = 3.0
SURFACE_SAMPLES = 2048  # dense object surface sample for distances (contact masks, metrics)


@dataclass
class HOIState:
    pose_6d: torch.Tensor  # (B, 52, 6)
    object_rotation_6d: torch.Tensor  # (B, 6)
    object_translation: torch.Tensor  # (B, 3)
    betas: torch.Tensor  # (B, 10), unscaled


def pack_state(state: HOIState) -> torch.Tensor:
    return torch.cat([state.pose_6d.flatten(1), state.object_rotation_6d, state.object_translation,
                      state.betas / BETAS_SCALE], dim=1)


def unpack_state(x: torch.Tensor) -> HOIState:
    return HOIState(x[:, POSE].reshape(-1, NUM_JOINTS, 6), x[:, OBJECT_ROTATION], x[:, OBJECT_TRANSLATION],
                    x[:, BETAS] * BETAS_SCALE)


# --------------------------------------------------------------------------------------------
# Objects of a batch
# --------------------------------------------------------------------------------------------

@dataclass
class ObjectBatch:
    """Per row: template points (B, No, 3) and an index into the distinct objects' SDF grids."""

    points: torch.Tensor
    index: torch.Tensor  # (B,) long
    sdf: torch.Tensor  # (K, R, R, R), sdf[k, ix, iy, iz], negative inside
    grid_min: torch.Tensor  # (K, 3)
    grid_max: torch.Tensor  # (K, 3)
    surface: torch.Tensor  # (B, SURFACE_SAMPLES, 3) dense surface points, object frame


def surface_samples(template: ObjectTemplate, count: int = SURFACE_SAMPLES) -> np.ndarray:
    """``count`` points on the object's mesh, seeded (the same points every run)."""
    mesh = trimesh.Trimesh(template.vertices, template.faces, process=False)
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=0)
    return points.astype(np.float32)


def object_batch(names: list[str], library: dict[str, tuple[ObjectTemplate, np.ndarray]], device) -> ObjectBatch:
    """One object per row, by the row's object name or path; each distinct object's grid is stored
    once. ``library`` maps a name to its template and surface samples."""
    distinct = sorted(set(names))

    def stack(values):
        return torch.from_numpy(np.stack(values)).float().to(device)

    return ObjectBatch(
        points=stack([library[n][0].points for n in names]),
        index=torch.tensor([distinct.index(n) for n in names], device=device),
        sdf=stack([library[n][0].sdf for n in distinct]),
        grid_min=stack([library[n][0].grid_min for n in distinct]),
        grid_max=stack([library[n][0].grid_max for n in distinct]),
        surface=stack([library[n][1] for n in names]),
    )


def object_sdf(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
               objects: ObjectBatch) -> torch.Tensor:
    """Trilinear SDF of each row's object at world points (B, N, 3); +inf outside the grid."""
    local = (points - translation[:, None]) @ rotation  # rows of R^T (h - t)
    lo, hi = objects.grid_min[objects.index][:, None], objects.grid_max[objects.index][:, None]
    unit = (local - lo) / (hi - lo)
    inside = ((unit >= 0) & (unit <= 1)).all(-1)
    # grid_sample reads (x, y, z) as (W, H, D) = (iz, iy, ix) of sdf[k, ix, iy, iz]; a NaN or huge
    # coordinate makes its CPU kernel index out of bounds (IndexError), and is outside anyway
    grid = torch.nan_to_num(2 * unit - 1, nan=2.0).clamp(-2.0, 2.0).flip(-1)[:, :, None, None]
    values = F.grid_sample(objects.sdf[objects.index][:, None], grid, align_corners=True)[:, 0, :, 0, 0]
    return torch.where(inside, values, torch.full_like(values, float("inf")))


# --------------------------------------------------------------------------------------------
# Posing x
# --------------------------------------------------------------------------------------------

@dataclass
class PosedScene:
    human: torch.Tensor  # (B, Nh, 3)
    objects: torch.Tensor  # (B, No, 3)
    rotation: torch.Tensor  # (B, 3, 3) object rotation R
    translation: torch.Tensor  # (B, 3) object translation t


def pose_scene(x: torch.Tensor, body: BodyPoints, objects: ObjectBatch) -> PosedScene:
    """Human points and object points of states x (differentiable in x)."""
    state = unpack_state(x)
    human = body(rotation_6d_to_matrix(state.pose_6d), state.betas)
    rotation = rotation_6d_to_matrix(state.object_rotation_6d)
    placed = objects.points @ rotation.transpose(1, 2) + state.object_translation[:, None]
    return PosedScene(human, placed, rotation, state.object_translation)


# --------------------------------------------------------------------------------------------
# Contact masks
# --------------------------------------------------------------------------------------------

@dataclass
class ContactMasks:
    human: torch.Tensor  # (B, Nh) the paper's M_h, as weights in [0, 1]
    floor: torch.Tensor  # (B, No) the paper's M_f


ContactPredictor = Callable[[PosedScene, ObjectBatch], ContactMasks]


@dataclass(frozen=True)
class DistanceContactPredictor:
    """The default contact predictor: human points within ``distance`` of the object's surface or
    inside it, and object points within ``floor_distance`` of the floor.

    ScoreHOI predicts the masks with CONTHO's contact transformer from image features; that
    network is not public, so any callable (scene, objects) -> ContactMasks can replace this.
    """

    distance: float = 0.10
    floor_distance: float = 0.05

    def __call__(self, scene: PosedScene, objects: ObjectBatch) -> ContactMasks:
        surface = objects.surface @ scene.rotation.transpose(1, 2) + scene.translation[:, None]
        near = torch.cdist(scene.human, surface).min(dim=2).values < self.distance
        inside = object_sdf(scene.human, scene.rotation, scene.translation, objects) < 0
        return ContactMasks(human=(near | inside).float(),
                            floor=(scene.objects[..., 1] < self.floor_distance).float())


# --------------------------------------------------------------------------------------------
# Guidance
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuidanceWeights:
    """l_ho, l_of, l_pt of L_P and the hinge margins (``kernels.guidance``).

    The paper gives no values (the public code's 0.5 / 0.5 / 0.1 weigh other loss forms, and its
    penetration term has no gradient). Each term sums over points and a distance-predicted contact
    mask marks far more points than penetrate, so L_pt is weighted 10x and its hinge starts 1 cm
    outside the surface (negative margin); chosen on the demo scenes with rho 0.5 (docs/refine.md).
    """

    contact: float = 1.0
    floor: float = 1.0
    penetration: float = 10.0
    contact_margin: float = 0.02
    penetration_margin: float = -0.01

    def kernel_options(self) -> dict:
        return dict(w_contact=self.contact, w_floor=self.floor, w_penetration=self.penetration,
                    contact_margin=self.contact_margin, penetration_margin=self.penetration_margin)


class PhysicalGuidance:
    """x0_hat -> (L_P (B,), dL/dx0_hat (B, 331)) for fixed objects and contact masks."""

    def __init__(self, body: BodyPoints, objects: ObjectBatch, masks: ContactMasks,
                 weights: GuidanceWeights, clock: Optional[StageClock] = None):
        self.body, self.objects, self.masks, self.weights = body, objects, masks, weights
        self.clock = clock or StageClock()

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """L_P alone (no gradient)."""
        with torch.no_grad():
            with self.clock.stage("body"):
                scene = pose_scene(x0, self.body, self.objects)
            with self.clock.stage("loss"):
                return self._kernel(scene).loss

    def __call__(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            with self.clock.stage("body"):
                x = x0.detach().requires_grad_(True)
                scene = pose_scene(x, self.body, self.objects)
            with self.clock.stage("loss"):
                result = self._kernel(scene)
                # o_j = R p_j + t: dL/dR = sum_j g_j p_j^T, dL/dt = sum_j g_j
                grad_rotation = result.grad_obj_rot + result.grad_obj_points.transpose(1, 2) @ self.objects.points
                grad_translation = result.grad_obj_trans + result.grad_obj_points.sum(1)
            with self.clock.stage("body"):
                (grad,) = torch.autograd.grad((scene.human, scene.rotation, scene.translation), x,
                                              (result.grad_human, grad_rotation, grad_translation))
        return result.loss, grad

    def _kernel(self, scene: PosedScene):
        o = self.objects
        return guidance_loss_and_grad(
            scene.human.detach(), self.masks.human, scene.objects.detach(), scene.rotation.detach(),
            scene.translation.detach(), o.sdf, o.grid_min, o.grid_max, o.index,
            floor_contact=self.masks.floor, **self.weights.kernel_options())
