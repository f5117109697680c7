"""A body model evaluated at a few vertices only: exact linear blend skinning of a vertex subset.

ScoreHOI's guidance needs 431 of SMPL-H's 6,890 vertices (``bodies.sample_vertex_ids``), and it
needs them, with their gradient, at every guided DDIM step. smplx poses all vertices and chains
the 52 joint transforms one joint at a time; here the blend shapes, pose correctives and skinning
weights are sliced to the subset once, the joint regressor is folded into the template and the
shape directions (J = J_reg (T + S b) = J_reg T + (J_reg S) b), and the kinematic chain runs one
tree level at a time. The result equals ``BodyModel.forward(...).vertices[:, ids]`` up to float
rounding (tests/test_refine_job.py checks values and gradients), and a row's bits do not depend on
its batch (``row_invariant``).

SMPL linear blend skinning (Loper et al. 2015, eqs. 2-4), per vertex i and joint j:
    v_shaped = T + S b,   v_posed = v_shaped + P (vec(R_1..R_J) - vec(I))
    G_j = G_parent(j) [R_j | J_j - J_parent(j)],   v_i = sum_j w_ij (G_j [v_posed_i - J_j ; 1])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from motionfleet.common.bodies import BodyModel
from motionfleet.core.runtime.row_invariant import NARROW


def tree_levels(parents: list[int]) -> list[list[int]]:
    """Joints grouped by depth in the kinematic tree (level 0 is the root)."""
    depth = [0] * len(parents)
    for joint, parent in enumerate(parents):
        if parent >= 0:
            depth[joint] = depth[parent] + 1
    return [[j for j in range(len(parents)) if depth[j] == level] for level in range(max(depth) + 1)]


def shape_matrix(shapedirs: torch.Tensor) -> torch.Tensor:
    """(N, 3, 10) blend shapes as a (NARROW, 3N) matrix, zero rows below the 10 betas."""
    matrix = shapedirs.permute(2, 0, 1).reshape(shapedirs.shape[2], -1)
    return F.pad(matrix, (0, 0, 0, NARROW - len(matrix)))


def shape_blend(betas: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) = S b. The 10 betas are padded with zeros to ``row_invariant.NARROW`` so that the
    GEMM rounds every row alike wherever it sits in the batch (the zeros add exactly nothing)."""
    padded = F.pad(betas, (0, len(matrix) - betas.shape[1]))
    return (padded @ matrix).reshape(len(betas), -1, 3)


class BodyPoints(nn.Module):
    """(rotations (B, J, 3, 3), betas (B, 10)) -> the posed vertices ``vertex_ids`` (B, n, 3)."""

    vertex_ids: torch.Tensor  # the buffers registered below
    template: torch.Tensor
    shape_matrix: torch.Tensor
    posedirs: torch.Tensor
    skinning_weights: torch.Tensor
    joint_template: torch.Tensor
    joint_shape_matrix: torch.Tensor

    def __init__(self, body: BodyModel, vertex_ids: torch.Tensor):
        super().__init__()
        layer = body.layer
        ids = vertex_ids.to(layer.v_template.device)
        num_vertices = layer.v_template.shape[0]
        posedirs = layer.posedirs.reshape(-1, num_vertices, 3)[:, ids]  # (9 (J-1), n, 3)
        joint_shapedirs = torch.einsum("jv,vkl->jkl", layer.J_regressor, layer.shapedirs)
        self.register_buffer("vertex_ids", ids)
        self.register_buffer("template", layer.v_template[ids])
        self.register_buffer("shape_matrix", shape_matrix(layer.shapedirs[ids]))
        self.register_buffer("posedirs", posedirs.reshape(posedirs.shape[0], -1))
        self.register_buffer("skinning_weights", layer.lbs_weights[ids])
        self.register_buffer("joint_template", layer.J_regressor @ layer.v_template)
        self.register_buffer("joint_shape_matrix", shape_matrix(joint_shapedirs))
        parents = layer.parents.tolist()
        self._levels = tree_levels(parents)[1:]
        self._parents = parents

    def joints(self, betas: torch.Tensor) -> torch.Tensor:
        """(B, J, 3) rest joints of each body shape."""
        return self.joint_template + shape_blend(betas, self.joint_shape_matrix)

    def world_transforms(self, rotations: torch.Tensor, joints: torch.Tensor):
        """(R (B, J, 3, 3), t (B, J, 3)) of each joint in the world, computed level by level."""
        order = [0]
        world_r, world_t = rotations[:, :1], joints[:, :1]
        for level in self._levels:
            position = [order.index(self._parents[j]) for j in level]
            parent_r, parent_t = world_r[:, position], world_t[:, position]
            offset = joints[:, level] - joints[:, [self._parents[j] for j in level]]
            world_r = torch.cat([world_r, parent_r @ rotations[:, level]], dim=1)
            world_t = torch.cat([world_t, (parent_r @ offset[..., None])[..., 0] + parent_t], dim=1)
            order += level
        back = torch.argsort(torch.tensor(order, device=rotations.device))
        return world_r[:, back], world_t[:, back]

    def forward(self, rotations: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        batch = rotations.shape[0]
        joints = self.joints(betas)
        eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
        shaped = self.template + shape_blend(betas, self.shape_matrix)
        posed = shaped + (pose_feature @ self.posedirs).reshape(batch, -1, 3)
        world_r, world_t = self.world_transforms(rotations, joints)
        # skinning transform G_j [I | -J_j]: rotation R_j, translation t_j - R_j J_j
        skin_t = world_t - (world_r @ joints[..., None])[..., 0]
        # both blends in one product: 12 columns round alike for every row, 9 alone would not
        blended = self.skinning_weights @ torch.cat([world_r.reshape(batch, -1, 9), skin_t], dim=2)
        blended_r = blended[..., :9].reshape(batch, -1, 3, 3)
        return (blended_r @ posed[..., None])[..., 0] + blended[..., 9:]
