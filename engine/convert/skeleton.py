"""What every format writes: a person's skeleton (joint names, parents, rest offsets) and its motion
(root position and one local rotation per joint, per frame), and the forward kinematics that turns
them back into joint positions (what the tests compare against the families' own joints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    """``offsets`` (J, 3): each joint's rest position relative to its parent (the root's is zero:
    the root's position is animated); ``parents`` (J,): parent index, -1 for the root, parents first."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray

    def children(self, joint: int) -> list[int]:
        return [j for j, parent in enumerate(self.parents) if parent == joint]


@dataclass(frozen=True)
class PersonMotion:
    """``root_positions`` (T, 3) in metres, y up; ``rotations`` (T, J, 3, 3) local rotations (each
    relative to its parent joint, the root's relative to the world), acting on column vectors;
    ``start_s``: when its first frame is, on the sample's clock (a person tracked from the middle of a
    video starts later)."""

    skeleton: Skeleton
    root_positions: np.ndarray
    rotations: np.ndarray
    fps: float
    start_s: float = 0.0

    @property
    def num_frames(self) -> int:
        return len(self.root_positions)


def rest_offsets(rest_joints: np.ndarray, parents) -> np.ndarray:
    """(J, 3) offsets from (J, 3) rest joint positions: joint minus parent, zero at the root."""
    offsets = np.zeros_like(rest_joints, dtype=np.float64)
    for joint, parent in enumerate(parents):
        if parent >= 0:
            offsets[joint] = rest_joints[joint] - rest_joints[parent]
    return offsets


def forward_kinematics(motion: PersonMotion) -> np.ndarray:
    """(T, J, 3) joint positions: p_j = p_parent + G_parent offset_j, G_j = G_parent R_j."""
    skeleton = motion.skeleton
    frames, joints = motion.rotations.shape[:2]
    world = np.zeros((frames, joints, 3, 3))
    positions = np.zeros((frames, joints, 3))
    for joint, parent in enumerate(skeleton.parents):
        if parent < 0:
            world[:, joint] = motion.rotations[:, joint]
            positions[:, joint] = motion.root_positions
            continue
        world[:, joint] = world[:, parent] @ motion.rotations[:, joint]
        positions[:, joint] = positions[:, parent] + world[:, parent] @ skeleton.offsets[joint]
    return positions


def fit_rotation(rest: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations R minimising sum |R rest_k - posed_k|^2 for (K, 3) rest and (T, K, 3) posed
    vectors (Kabsch: R = U diag(1, 1, det) V^T from the SVD of sum posed_k rest_k^T)."""
    covariance = np.einsum("tki,kj->tij", posed, rest)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= sign[:, None]
    return u @ vt
