"""Built-in synthetic scenes for ``refine --demo``: deliberate penetration and missed contact.

Each scene is a ground-truth interaction of the synthetic SMPL-H (``demo.body_models.write_synthetic_body_model``,
standing on y = 0, facing +z) with a built-in object, and an initial estimate that breaks it:
the object pushed into the body (penetration) or pulled off it (missed contact), sometimes with
a tilted object or a raised arm as well. Placements were measured on the synthetic body: with
arms straight forward the undersides of forearms and hands are at y = 1.37 m, hands at
z = 0.45..0.69 m; in an A-pose the belly's front is at z = 0.144 m; the toes reach z = 0.171 m.
Rows carry the ground truth, so the report also shows Chamfer distance and contact F-score.
"""

from __future__ import annotations

import hashlib
import json
import math

from motionfleet.scorehoi.hoi import NUM_JOINTS
from motionfleet.scorehoi.source import EstimateRecord, EstimateSet

LEFT_SHOULDER, RIGHT_SHOULDER = 16, 17
ARMS_FORWARD = {LEFT_SHOULDER: (0.0, -math.pi / 2, 0.0), RIGHT_SHOULDER: (0.0, math.pi / 2, 0.0)}
A_POSE = {LEFT_SHOULDER: (0.0, 0.0, -math.radians(75)), RIGHT_SHOULDER: (0.0, 0.0, math.radians(75))}
ARMS_FORWARD_RAISED = {LEFT_SHOULDER: (-math.radians(6), -math.pi / 2, 0.0),
                       RIGHT_SHOULDER: (-math.radians(6), math.pi / 2, 0.0)}
NO_ROTATION = (0.0, 0.0, 0.0)

# name: (object, ground truth (arms, translation), estimate (arms, rotation axis-angle, translation))
SCENES = {
    "box_carry_penetrating": ("box", (ARMS_FORWARD, (0.0, 1.17, 0.45)),
                              (ARMS_FORWARD, (0.0, 0.0, math.radians(8)), (0.0, 1.24, 0.45))),
    "box_carry_missed": ("box", (ARMS_FORWARD, (0.0, 1.17, 0.45)),
                         (ARMS_FORWARD_RAISED, NO_ROTATION, (0.0, 1.10, 0.45))),
    "ball_hand_penetrating": ("ball", (ARMS_FORWARD, (-0.2, 1.257, 0.58)),
                              (ARMS_FORWARD, NO_ROTATION, (-0.2, 1.317, 0.58))),
    "ball_hand_missed": ("ball", (ARMS_FORWARD, (-0.2, 1.257, 0.58)),
                         (ARMS_FORWARD, NO_ROTATION, (-0.2, 1.197, 0.61))),
    "box_belly_penetrating": ("box", (A_POSE, (0.0, 1.05, 0.344)),
                              (A_POSE, (0.0, math.radians(10), 0.0), (0.0, 1.05, 0.264))),
    "box_belly_missed": ("box", (A_POSE, (0.0, 1.05, 0.344)),
                         (A_POSE, NO_ROTATION, (0.0, 1.05, 0.414))),
    "box_floor_feet_penetrating": ("box", (A_POSE, (0.0, 0.2, 0.371)),
                                   (A_POSE, NO_ROTATION, (0.0, 0.15, 0.321))),
    "box_floor_feet_missed": ("box", (A_POSE, (0.0, 0.2, 0.371)),
                              (A_POSE, NO_ROTATION, (0.0, 0.24, 0.441))),
}


def axis_angle_pose(joints: dict[int, tuple[float, float, float]]) -> list[float]:
    """52 x 3 axis-angle numbers, identity except ``joints``."""
    pose = [0.0] * (NUM_JOINTS * 3)
    for joint, rotation in joints.items():
        pose[3 * joint : 3 * joint + 3] = rotation
    return pose


def scene_record(name: str, feature_dim: int) -> EstimateRecord:
    obj, (true_arms, true_translation), (arms, rotation, translation) = SCENES[name]
    values = {
        "pose": axis_angle_pose(arms), "betas": [0.0] * 10, "object": obj,
        "object_rotation": list(rotation), "object_translation": list(translation),
        "image_features": [0.0] * feature_dim,
        "gt_pose": axis_angle_pose(true_arms), "gt_betas": [0.0] * 10,
        "gt_object_rotation": list(NO_ROTATION), "gt_object_translation": list(true_translation),
    }
    return EstimateRecord(name, tuple(values.items()))


def demo_scenes(feature_dim: int) -> EstimateSet:
    """The scenes as estimates; image features are zeros (the denoiser's output does not depend
    on them: ``motionfleet.scorehoi.model``'s docstring says why)."""
    records = tuple(scene_record(name, feature_dim) for name in SCENES)
    digest = hashlib.sha256(json.dumps([r.values for r in records]).encode()).hexdigest()
    return EstimateSet(records, "demo", digest)
