"""glTF 2.0 binary (``.glb``) of a sample: per person a node tree (one node per joint, its rest offset
as the node's translation) and one animation that drives each joint's rotation and the root's
translation (LINEAR samplers over the sample's clock, in seconds), all people in one scene."""

from __future__ import annotations

import numpy as np
import pygltflib as gl
from scipy.spatial.transform import Rotation

from motionfleet.convert.sample import Sample
from motionfleet.convert.skeleton import PersonMotion

FLOAT = gl.FLOAT
TYPES = {1: gl.SCALAR, 3: gl.VEC3, 4: gl.VEC4}


class Blob:
    """The binary chunk and the accessors into it: one buffer view per array, 4-byte aligned."""

    def __init__(self, gltf: gl.GLTF2):
        self.gltf, self.data = gltf, bytearray()

    def accessor(self, values: np.ndarray, bounds: bool = False) -> int:
        values = np.ascontiguousarray(values, np.float32)
        width = 1 if values.ndim == 1 else values.shape[1]
        self.gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self.data), byteLength=values.nbytes))
        self.data += values.tobytes()
        self.data += b"\0" * (-len(self.data) % 4)
        rows = values.reshape(len(values), width)
        self.gltf.accessors.append(gl.Accessor(
            bufferView=len(self.gltf.bufferViews) - 1, componentType=FLOAT, count=len(values), type=TYPES[width],
            min=rows.min(0).tolist() if bounds else None, max=rows.max(0).tolist() if bounds else None))
        return len(self.gltf.accessors) - 1


def quaternions(rotations: np.ndarray) -> np.ndarray:
    """(T, 3, 3) -> (T, 4) glTF quaternions (x, y, z, w), each on the side of the one before (no flips)."""
    q = Rotation.from_matrix(rotations).as_quat()
    signs = np.cumprod(np.where(np.einsum("ti,ti->t", q[1:], q[:-1]) < 0, -1.0, 1.0))
    q[1:] *= signs[:, None]
    return q


def add_person(gltf: gl.GLTF2, blob: Blob, animation: gl.Animation, motion: PersonMotion, label: str) -> int:
    """The person's joint nodes and animation channels; returns its root node."""
    skeleton, first = motion.skeleton, len(gltf.nodes)
    for joint, name in enumerate(skeleton.names):
        children = [first + c for c in skeleton.children(joint)]
        translation = motion.root_positions[0] if joint == 0 else skeleton.offsets[joint]
        gltf.nodes.append(gl.Node(name=f"{label}_{name}", children=children, translation=np.asarray(translation, float).tolist(),
                                  rotation=quaternions(motion.rotations[:1, joint])[0].tolist()))
    times = blob.accessor(motion.start_s + np.arange(motion.num_frames) / motion.fps, bounds=True)
    targets = [(0, "translation", motion.root_positions)]
    targets += [(joint, "rotation", quaternions(motion.rotations[:, joint])) for joint in range(len(skeleton.names))]
    for joint, path, values in targets:
        animation.samplers.append(gl.AnimationSampler(input=times, output=blob.accessor(values), interpolation="LINEAR"))
        animation.channels.append(gl.AnimationChannel(sampler=len(animation.samplers) - 1,
                                                      target=gl.AnimationChannelTarget(node=first + joint, path=path)))
    return first


def glb_bytes(sample: Sample) -> bytes:
    gltf = gl.GLTF2(asset=gl.Asset(version="2.0", generator="motionfleet convert"))
    blob, animation = Blob(gltf), gl.Animation(name="motion")
    roots = [add_person(gltf, blob, animation, motion, f"person{i}") for i, motion in enumerate(sample.people)]
    gltf.scenes.append(gl.Scene(name=sample.key[:200], nodes=roots))
    gltf.scene = 0
    gltf.animations.append(animation)
    gltf.buffers.append(gl.Buffer(byteLength=len(blob.data)))
    gltf.set_binary_blob(bytes(blob.data))
    return b"".join(gltf.save_to_bytes())
