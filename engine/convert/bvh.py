"""BVH (Biovision hierarchy) of one person: the skeleton's rest offsets, then one line per frame.

Every joint has the rotation channels ``Zrotation Xrotation Yrotation`` (degrees): the joint's
local rotation is Rz(z) Rx(x) Ry(y), applied to column vectors in the order the channels are listed
(the BVH convention). The root also has ``Xposition Yposition Zposition``: its position in
metres (y up), absolute, so its OFFSET is zero. A joint without children ends in an ``End Site``
(a zero-length bone, which BVH readers need to close the joint). The frame time is 1 / fps.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

from motionfleet.convert.skeleton import PersonMotion, Skeleton

ROTATION_CHANNELS = "Zrotation Xrotation Yrotation"
POSITION_CHANNELS = "Xposition Yposition Zposition"
EULER_ORDER = "ZXY"  # scipy's intrinsic sequence: R = Rz Rx Ry


def bvh_text(motion: PersonMotion) -> str:
    lines = ["HIERARCHY"]
    hierarchy(motion.skeleton, 0, 0, lines)
    lines += ["MOTION", f"Frames: {motion.num_frames}", f"Frame Time: {1.0 / motion.fps:.8f}"]
    channels = frame_channels(motion)
    lines += [" ".join(f"{v:.6f}" for v in frame) for frame in channels]
    return "\n".join(lines) + "\n"


def hierarchy(skeleton: Skeleton, joint: int, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    root = skeleton.parents[joint] < 0
    offset = " ".join(f"{v:.6f}" for v in skeleton.offsets[joint])
    channels = f"CHANNELS 6 {POSITION_CHANNELS} {ROTATION_CHANNELS}" if root else f"CHANNELS 3 {ROTATION_CHANNELS}"
    lines += [f"{pad}{'ROOT' if root else 'JOINT'} {skeleton.names[joint]}", f"{pad}{{", f"{pad}  OFFSET {offset}",
              f"{pad}  {channels}"]
    children = skeleton.children(joint)
    for child in children:
        hierarchy(skeleton, child, depth + 1, lines)
    if not children:
        lines += [f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0.000000 0.000000 0.000000", f"{pad}  }}"]
    lines.append(f"{pad}}}")


def joint_order(skeleton: Skeleton) -> list[int]:
    """Joints in the order the hierarchy lists them (depth first), which is the channels' order."""
    order, stack = [], [0]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(reversed(skeleton.children(joint)))
    return order


def euler_zxy(rotations: np.ndarray) -> np.ndarray:
    """(T, 3, 3) -> (T, 3) degrees (z, x, y), each channel unwrapped over time so that a player
    interpolating between frames never spins through 360 degrees."""
    with warnings.catch_warnings():  # x = +-90 degrees (gimbal lock) still gives a valid triple
        warnings.simplefilter("ignore", UserWarning)
        angles = Rotation.from_matrix(rotations).as_euler(EULER_ORDER, degrees=True)
    return np.unwrap(angles, period=360.0, axis=0)


def frame_channels(motion: PersonMotion) -> np.ndarray:
    """(T, 3 + 3 J) channel values in the hierarchy's order."""
    columns = [motion.root_positions]
    for joint in joint_order(motion.skeleton):
        columns.append(euler_zxy(motion.rotations[:, joint]))
    return np.concatenate(columns, axis=1)
