"""Synthetic stand-ins for the licensed SMPL / SMPL-H / SMPL-X files: a well-formed model of the
right sizes, written to disk in the released file formats, for tests and ``--demo`` runs."""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import ConvexHull
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS

from motionfleet.common.bodies import NUM_BETAS, _check_kind_and_gender, model_file_name
from motionfleet.core.io.cache import cache_dir

# --------------------------------------------------------------------------------------------
# Synthetic stand-in models
# --------------------------------------------------------------------------------------------

# (name, parent, rest position (m), radius of the bone parent->joint, end part (length, radius)
# or None). Body facing +z, left = +x, feet on y = 0. Only left-side limbs are listed; the
# right side mirrors x. Parents always come before children.
_BODY_LEFT_AND_CENTRE = (
    ("pelvis", None, (0.0, 0.93, 0.0), 0.0, None),
    ("left_hip", "pelvis", (0.09, 0.86, 0.0), 0.10, None),
    ("spine1", "pelvis", (0.0, 1.04, -0.01), 0.12, None),
    ("left_knee", "left_hip", (0.10, 0.49, 0.01), 0.075, None),
    ("spine2", "spine1", (0.0, 1.17, 0.0), 0.13, None),
    ("left_ankle", "left_knee", (0.11, 0.09, -0.03), 0.055, None),
    ("spine3", "spine2", (0.0, 1.23, 0.01), 0.14, None),
    ("left_foot", "left_ankle", (0.12, 0.04, 0.10), 0.045, (0.06, 0.03)),
    ("neck", "spine3", (0.0, 1.46, -0.01), 0.13, None),
    ("left_collar", "spine3", (0.07, 1.38, -0.01), 0.06, None),
    ("head", "neck", (0.0, 1.55, 0.02), 0.055, (0.12, 0.09)),
    ("left_shoulder", "left_collar", (0.18, 1.41, -0.01), 0.055, None),
    ("left_elbow", "left_shoulder", (0.44, 1.41, -0.02), 0.05, None),
    ("left_wrist", "left_elbow", (0.69, 1.41, -0.01), 0.04, None),
)
_SMPL_HAND = (("left_hand", "left_wrist", (0.78, 1.40, -0.01), 0.03, (0.08, 0.03)),)
_FACE = (
    ("jaw", "head", (0.0, 1.53, 0.04), 0.03, (0.05, 0.03)),
    ("left_eye", "head", (0.032, 1.62, 0.075), 0.012, (0.012, 0.012)),
)
# Finger root offsets from the wrist, then each next joint's offset from the previous one
# (SMPL-H order: index, middle, pinky, ring, thumb).
_FINGERS = (
    ("index", (0.09, 0.0, 0.025), (0.033, 0.0, 0.0)),
    ("middle", (0.095, 0.0, 0.005), (0.035, 0.0, 0.0)),
    ("pinky", (0.08, 0.0, -0.04), (0.025, 0.0, 0.0)),
    ("ring", (0.09, 0.0, -0.018), (0.032, 0.0, 0.0)),
    ("thumb", (0.025, -0.01, 0.03), (0.025, -0.005, 0.02)),
)
_PALM_RADIUS, _FINGER_RADIUS, _FINGERTIP = 0.028, 0.009, (0.02, 0.008)

# SMPL joint order (smplx.joint_names.JOINT_NAMES), the reference for the body joints.
_SMPL_BODY_ORDER = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)

# Where smplx's vertex keypoints should sit: (anchor joint, offset) for the nose and the left
# side; the right side mirrors them.
_LEFT_KEYPOINT_TARGETS = {
    "nose": ("head", (0.0, 0.05, 0.11)), "leye": ("head", (0.03, 0.08, 0.09)),
    "lear": ("head", (0.085, 0.05, 0.0)),
    "LBigToe": ("left_foot", (0.0, -0.03, 0.07)), "LSmallToe": ("left_foot", (0.04, -0.03, 0.05)),
    "LHeel": ("left_ankle", (0.0, -0.07, -0.05)),
    "lthumb": ("left_wrist", (0.1, -0.02, 0.07)), "lindex": ("left_wrist", (0.19, 0.0, 0.025)),
    "lmiddle": ("left_wrist", (0.2, 0.0, 0.005)), "lring": ("left_wrist", (0.19, 0.0, -0.018)),
    "lpinky": ("left_wrist", (0.165, 0.0, -0.04)),
}


@dataclass
class _Joint:
    name: str
    parent: str | None
    position: np.ndarray
    bone_radius: float
    end_part: tuple[float, float] | None


def _as_joint(row: tuple) -> _Joint:
    name, parent, position, bone_radius, end_part = row
    return _Joint(name, parent, np.array(position, dtype=np.float64), bone_radius, end_part)


def _mirror(joint: _Joint) -> _Joint:
    """The right-side twin of a left-side joint (x -> -x)."""
    def swap(name):
        return None if name is None else name.replace("left_", "right_")
    return _Joint(swap(joint.name), swap(joint.parent), joint.position * (-1.0, 1.0, 1.0),
                  joint.bone_radius, joint.end_part)


def _finger_joints() -> list[_Joint]:
    joints = []
    wrist = next(_as_joint(row) for row in _BODY_LEFT_AND_CENTRE if row[0] == "left_wrist").position
    for finger, root_offset, step in _FINGERS:
        position, parent = wrist + root_offset, "left_wrist"
        for k in (1, 2, 3):
            name = f"left_{finger}{k}"
            radius = _PALM_RADIUS if k == 1 else _FINGER_RADIUS
            joints.append(_Joint(name, parent, position, radius, _FINGERTIP if k == 3 else None))
            position, parent = position + step, name
    return joints


def _with_right_side(left: list[_Joint]) -> list[_Joint]:
    """Left-side joints followed by their mirrors, in the same order."""
    return left + [_mirror(j) for j in left]


def _skeleton_joints(kind: str) -> list[_Joint]:
    """The synthetic skeleton in smplx's joint order for ``kind``."""
    left_and_centre = [_as_joint(row) for row in _BODY_LEFT_AND_CENTRE]
    by_name = {j.name: j for j in _with_right_side(left_and_centre)}  # centre joints mirror to themselves
    body = [by_name[name] for name in _SMPL_BODY_ORDER]
    if kind == "smpl":
        return body + _with_right_side([_as_joint(row) for row in _SMPL_HAND])
    hands = _with_right_side(_finger_joints())
    if kind == "smplh":
        return body + hands
    jaw, eye = (_as_joint(row) for row in _FACE)
    return body + [jaw, eye, _mirror(eye)] + hands


def synthetic_skeleton(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Rest joint positions (J, 3) in metres and parents (J,) (-1 for the root) of the synthetic model."""
    joints = _skeleton_joints(kind)
    index = {j.name: i for i, j in enumerate(joints)}
    positions = np.stack([j.position for j in joints]).astype(np.float32)
    parents = np.array([-1 if j.parent is None else index[j.parent] for j in joints], dtype=np.int64)
    return positions, parents


@dataclass
class _Part:
    """An ellipsoid along the segment ``start -> end`` that moves with joint ``owner``."""

    owner: int
    start: np.ndarray
    end: np.ndarray
    radius: float

    @property
    def semi_axes(self) -> np.ndarray:
        """Along the segment: half its length plus half a radius of overlap at each end."""
        half = np.linalg.norm(self.end - self.start) / 2
        return np.array([half + self.radius / 2, self.radius, self.radius])

    @property
    def frame(self) -> np.ndarray:
        """Rotation whose first column is the segment direction (det +1)."""
        direction = (self.end - self.start) / np.linalg.norm(self.end - self.start)
        helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        second = np.cross(helper, direction)
        second /= np.linalg.norm(second)
        return np.stack([direction, second, np.cross(direction, second)], axis=1)

    def area(self) -> float:
        """Knud Thomsen's approximation of the ellipsoid's surface area (p = 1.6075)."""
        a, b, c = self.semi_axes ** 1.6075
        return 4 * np.pi * ((a * b + a * c + b * c) / 3) ** (1 / 1.6075)


def _body_parts(joints: list[_Joint]) -> list[_Part]:
    """One part per bone (owned by the bone's parent joint) and per end part (owned by its joint)."""
    index = {j.name: i for i, j in enumerate(joints)}
    parts = []
    for i, joint in enumerate(joints):
        if joint.parent is not None:
            parent = joints[index[joint.parent]]
            parts.append(_Part(index[joint.parent], parent.position, joint.position, joint.bone_radius))
        if joint.end_part is not None:
            if joint.parent is None:
                raise ValueError(f"{joint.name}: an end part continues the bone from its parent, and a root has none")
            length, radius = joint.end_part
            direction = joint.position - joints[index[joint.parent]].position
            end = joint.position + length * direction / np.linalg.norm(direction)
            parts.append(_Part(i, joint.position, end, radius))
    return parts


def _vertex_budget(parts: list[_Part], num_vertices: int, minimum: int = 12) -> np.ndarray:
    """Vertices per part, proportional to surface area (largest remainder), summing to num_vertices."""
    spare = num_vertices - minimum * len(parts)
    if spare < 0:
        raise ValueError(f"need at least {minimum * len(parts)} vertices for {len(parts)} body parts")
    share = np.array([p.area() for p in parts])
    share = spare * share / share.sum()
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share)[: spare - counts.sum()]] += 1
    return counts + minimum


def _fibonacci_sphere(n: int) -> np.ndarray:
    """n near-uniform unit vectors: z = 1 - (2i + 1)/n, azimuth = i * golden angle."""
    i = np.arange(n)
    z = 1 - (2 * i + 1) / n
    azimuth = i * np.pi * (3 - np.sqrt(5))
    ring = np.sqrt(1 - z * z)
    return np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)


def _outward_hull_faces(points: np.ndarray) -> np.ndarray:
    """Triangles of the convex hull of points on the unit sphere, wound counter-clockwise seen from outside."""
    faces = ConvexHull(points).simplices
    a, b, c = (points[faces[:, k]] for k in range(3))
    inward = (np.cross(b - a, c - a) * (a + b + c)).sum(-1) < 0
    faces[inward] = faces[inward][:, ::-1]
    return faces


def _part_surfaces(parts: list[_Part], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and faces (F, 3) of all part ellipsoids: x = centre + R diag(axes) u."""
    vertices, faces, offset = [], [], 0
    for part, count in zip(parts, counts):
        sphere = _fibonacci_sphere(int(count))
        centre = (part.start + part.end) / 2
        vertices.append(centre + (sphere * part.semi_axes) @ part.frame.T)
        faces.append(_outward_hull_faces(sphere) + offset)
        offset += int(count)
    return np.concatenate(vertices), np.concatenate(faces)


def _segment_distances(points: np.ndarray, parts: list[_Part]) -> np.ndarray:
    """(V, P) distance from each point to each part's segment."""
    start = np.stack([p.start for p in parts])
    direction = np.stack([p.end - p.start for p in parts])
    rel = points[:, None, :] - start[None]
    t = np.clip((rel * direction).sum(-1) / (direction * direction).sum(-1), 0.0, 1.0)
    return np.linalg.norm(rel - t[..., None] * direction, axis=-1)


def _skinning_weights(vertices: np.ndarray, parts: list[_Part], num_joints: int,
                      falloff: float = 0.005) -> np.ndarray:
    """(V, J) softmax over joints of -d_j / falloff, d_j = distance to the nearest bone joint j moves."""
    part_distance = _segment_distances(vertices, parts)
    distance = np.full((len(vertices), num_joints), np.inf)
    for p, part in enumerate(parts):
        distance[:, part.owner] = np.minimum(distance[:, part.owner], part_distance[:, p])
    logits = -(distance - distance.min(axis=1, keepdims=True)) / falloff
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def _joint_regressor(vertices: np.ndarray, joints: np.ndarray, neighbours: int = 64) -> np.ndarray:
    """(J, V) rows summing to 1 that reproduce ``joints`` from ``vertices`` exactly.

    Row j is supported on the joint's nearest vertices N; its weights w are the minimum-norm
    change from the uniform mean that satisfies [X_N^T; 1^T] w = [joint_j; 1]. With 64
    neighbours around the joint the weights stay close to uniform (no large negative lobes).
    """
    regressor = np.zeros((len(joints), len(vertices)))
    for j, joint in enumerate(joints):
        near = np.argsort(((vertices - joint) ** 2).sum(-1))[:neighbours]
        system = np.vstack([vertices[near].T, np.ones(neighbours)])
        uniform = np.full(neighbours, 1.0 / neighbours)
        target = np.append(joint, 1.0)
        regressor[j, near] = uniform + np.linalg.lstsq(system, target - system @ uniform, rcond=None)[0]
    return regressor


def _keypoint_targets(joints: list[_Joint]) -> dict[str, np.ndarray]:
    """Target position of each smplx vertex keypoint name ('lthumb', 'RHeel', ...)."""
    position = {j.name: j.position for j in joints}
    targets = {}
    for name, (anchor, offset) in _LEFT_KEYPOINT_TARGETS.items():
        targets[name] = position[anchor] + offset
        if name != "nose":
            right_name = ("R" if name[0] == "L" else "r") + name[1:]
            right_anchor = position[anchor.replace("left_", "right_")]
            targets[right_name] = right_anchor + np.array(offset) * (-1.0, 1.0, 1.0)
    return targets


def _keypoint_permutation(vertices: np.ndarray, joints: list[_Joint], vertex_ids: dict) -> np.ndarray:
    """Vertex order (new -> old) that puts, at each of smplx's keypoint ids, the vertex nearest
    that keypoint's anatomical target (so smplx's toes, heels, fingertips land sensibly)."""
    targets = _keypoint_targets(joints)
    order = np.arange(len(vertices))
    taken: set[int] = set()
    for name, vertex_id in vertex_ids.items():
        distance = np.linalg.norm(vertices - targets[name], axis=-1)
        distance[list(taken)] = np.inf
        nearest = int(distance.argmin())
        taken.add(nearest)
        current = int(np.flatnonzero(order == nearest)[0])
        order[[current, vertex_id]] = order[[vertex_id, current]]
    return order


def _face_landmarks(faces: np.ndarray, owner: np.ndarray, head: int, rng: np.random.Generator,
                    count: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """``count`` landmark faces on the head and random barycentric coordinates (rows sum to 1)."""
    head_faces = np.flatnonzero((owner[faces] == head).all(axis=1))
    chosen = rng.choice(head_faces, size=count, replace=len(head_faces) < count)
    return chosen.astype(np.int64), rng.dirichlet(np.ones(3), size=count)


def _random_rotation_basis(rng: np.random.Generator, size: int) -> np.ndarray:
    """An orthonormal (size, size) matrix (QR of a Gaussian), standing in for hand PCA components."""
    q, r = np.linalg.qr(rng.normal(size=(size, size)))
    return q * np.sign(np.diag(r))


def _spread_by_weights(weights: np.ndarray, per_joint: np.ndarray) -> np.ndarray:
    """(V, J) weights and (J, 3, K) per-joint offsets -> (V, 3, K) smooth per-vertex offsets."""
    return (weights @ per_joint.reshape(len(per_joint), -1)).reshape(len(weights), *per_joint.shape[1:])


def _synthetic_arrays(kind: str, num_vertices: int, seed: int) -> dict[str, np.ndarray]:
    """All arrays of a synthetic ``kind`` model file."""
    rng = np.random.default_rng(seed)
    joints = _skeleton_joints(kind)
    positions, parents = synthetic_skeleton(kind)
    num_joints = len(joints)
    parts = _body_parts(joints)
    vertices, faces = _part_surfaces(parts, _vertex_budget(parts, num_vertices))
    vertex_ids = SMPLX_VERTEX_IDS["smplx" if kind == "smplx" else "smplh"]
    order = _keypoint_permutation(vertices, joints, vertex_ids)
    vertices, faces = vertices[order], np.argsort(order)[faces]
    weights = _skinning_weights(vertices, parts, num_joints)

    # Smooth blend shapes: per-joint random offsets spread by the skinning weights. Shape
    # component 0 also scales the body about the floor point (+3 % height per unit beta).
    num_shape = NUM_BETAS + (10 if kind == "smplx" else 0)  # SMPL-X appends 10 expression dirs
    shapedirs = _spread_by_weights(weights, rng.normal(0.0, 0.01, (num_joints, 3, num_shape)))
    shapedirs[:, :, 0] += 0.03 * vertices
    if kind == "smplx":
        face_weight = weights[:, [j.name in ("head", "jaw") for j in joints]].sum(1)
        shapedirs[:, :, NUM_BETAS:] *= face_weight[:, None, None]
    num_pose_features = 9 * (num_joints - 1)  # flattened (R_j - I) of every non-root joint
    posedirs = _spread_by_weights(weights, rng.normal(0.0, 2e-4, (num_joints, 3, num_pose_features)))

    arrays = {
        "v_template": vertices, "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": _joint_regressor(vertices, positions.astype(np.float64)),
        "kintree_table": np.stack([parents, np.arange(num_joints)]), "weights": weights,
        "f": faces.astype(np.int64),
    }
    if kind != "smpl":
        for side in "lr":
            arrays[f"hands_components{side}"] = _random_rotation_basis(rng, 45)
            arrays[f"hands_mean{side}"] = rng.normal(0.0, 0.1, 45)
    if kind == "smplx":
        owner = weights.argmax(axis=1)
        head = [j.name for j in joints].index("head")
        arrays["lmk_faces_idx"], arrays["lmk_bary_coords"] = _face_landmarks(faces, owner, head, rng)
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()}


def write_synthetic_body_model(folder: str | Path, kind: str, gender: str = "neutral",
                               num_vertices: int | None = None, seed: int = 0) -> Path:
    """Write a synthetic, well-formed ``kind`` model to ``folder/<kind>/<KIND>_<GENDER>.<ext>``.

    SMPL is a pickle of numpy arrays (like the released SMPL files), SMPL-H and SMPL-X are npz.
    ``num_vertices`` defaults to the real models' counts (6,890; SMPL-X 10,475) and must cover
    the vertex ids smplx hard-codes for its keypoints. Returns the file's path.
    """
    _check_kind_and_gender(kind, gender)
    vertex_ids = SMPLX_VERTEX_IDS["smplx" if kind == "smplx" else "smplh"]
    num_vertices = num_vertices or (10475 if kind == "smplx" else 6890)
    if num_vertices <= max(vertex_ids.values()):
        raise ValueError(f"{kind} needs more than {max(vertex_ids.values())} vertices (smplx's keypoint ids)")
    arrays = _synthetic_arrays(kind, num_vertices, seed)
    path = Path(folder) / kind / model_file_name(kind, gender)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pkl":
        path.write_bytes(pickle.dumps(arrays, protocol=2))
    else:
        np.savez(path, allow_pickle=False, **arrays)
    return path


def cached_synthetic_body_models(kind: str) -> Path:
    """The body model folder holding the synthetic ``kind`` (``$MOTIONFLEET_CACHE/body_models``),
    written once; concurrent writers each write the same file to a temporary folder and rename it,
    so a reader never sees half a file."""
    folder = cache_dir("body_models")
    target = folder / kind / model_file_name(kind)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            os.replace(write_synthetic_body_model(tmp, kind), target)
    return folder
