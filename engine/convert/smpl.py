"""SMPL / SMPL-H results (``reconstruct``: SMPL, one row per video frame and person; ``refine``:
SMPL-H, one pose per sample and variant) as samples: the body model's rest joints (with the
person's shape) give the skeleton, the pose's joint rotations and the translation its motion.

``.npz`` follows AMASS's SMPL+H layout: ``poses`` (T, 156) axis-angle of the 52 SMPL-H joints
(root, 21 body joints, 15 left-hand then 15 right-hand finger joints; zeros where the family has
no hands, so SMPL's two hand joints 22 and 23 are not in it), ``trans`` (T, 3), ``betas`` (10,),
``gender``, ``mocap_framerate``. Axes are the job's (y up), not AMASS's z-up capture world.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from motionfleet.common.bodies import find_model_file, load_body_model
from motionfleet.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rotation_6d_to_matrix
from motionfleet.convert.sample import Sample
from motionfleet.convert.skeleton import PersonMotion, Skeleton, rest_offsets
from motionfleet.core.errors import DataError
from motionfleet.core.io.digests import content_sha256
from motionfleet.core.jobfolder.sink import iter_results
from motionfleet.core.options import UsageError
from motionfleet.demo.body_models import cached_synthetic_body_models

AMASS_JOINTS = 52  # SMPL-H: root, 21 body joints, 2 x 15 finger joints
BODY_JOINTS = 22
STILL_FPS = 30.0  # a refine result is one pose: one frame, the rate only sets the BVH's frame time
SHA256 = re.compile(r"sha256:([0-9a-f]{64})")
SMPL_HAND_NAMES = ("left_hand", "right_hand")


def joint_names(kind: str) -> tuple[str, ...]:
    """smplx's names of the kinematic joints of ``kind`` ("smpl": 24, "smplh": 52)."""
    from smplx.joint_names import JOINT_NAMES

    body = tuple(JOINT_NAMES[:BODY_JOINTS])
    return body + (SMPL_HAND_NAMES if kind == "smpl" else tuple(JOINT_NAMES[25:55]))


class BodySkeletons:
    """Skeletons of one body model, one per shape: rest joints at zero pose with the given betas."""

    def __init__(self, kind: str, folder: Path):
        self.kind = kind
        self.model = load_body_model(kind, folder)
        self.names = joint_names(kind)
        self.parents = tuple(int(p) for p in self.model.parents.tolist())

    def rest_joints(self, betas: np.ndarray) -> np.ndarray:
        eye = torch.eye(3).expand(1, self.model.num_joints, 3, 3)
        with torch.no_grad():
            out = self.model.forward_rotmats(eye, torch.as_tensor(betas, dtype=torch.float32)[None])
        return out.joints[0].double().numpy()

    def motion(self, rotations: np.ndarray, trans: np.ndarray, betas: np.ndarray, fps: float,
               start_s: float = 0.0) -> PersonMotion:
        """The root's animated position is the posed pelvis, rest pelvis + trans (smplx adds trans last)."""
        rest = self.rest_joints(betas)
        skeleton = Skeleton(self.names, self.parents, rest_offsets(rest, self.parents))
        return PersonMotion(skeleton, rest[0] + trans, rotations, fps, start_s)


def body_model_folder(kind: str, recorded: str, given: Optional[str]) -> Path:
    """The folder of the body model the job recorded: the synthetic stand-in, or the user's licensed
    model (``--body-models``), checked against the sha256 the job recorded."""
    if "synthetic" in recorded:
        if given is not None:
            raise UsageError(f"--body-models: the job used the synthetic {kind} stand-in ({recorded}); leave the flag out")
        return cached_synthetic_body_models(kind)
    digest = SHA256.search(recorded)
    if digest is None:
        raise DataError(f"the job's body_model {recorded[:120]!r} names neither the synthetic stand-in nor a sha256")
    if given is None:
        raise UsageError(f"the job used a licensed {kind} model ({recorded[:80]}): give its folder with --body-models")
    found = content_sha256(find_model_file(kind, given))
    if found != digest[1]:
        raise UsageError(f"--body-models {given}: its {kind} file has sha256 {found[:12]}, the job used {digest[1][:12]}")
    return Path(given)


def amass_arrays(axis_angles: np.ndarray, trans: np.ndarray, betas: np.ndarray, fps: float) -> dict[str, np.ndarray]:
    """AMASS's keys from (T, J, 3) axis-angles (J = 24 SMPL or 52 SMPL-H joints)."""
    poses = np.zeros((len(axis_angles), AMASS_JOINTS, 3))
    joints = BODY_JOINTS if axis_angles.shape[1] != AMASS_JOINTS else AMASS_JOINTS
    poses[:, :joints] = axis_angles[:, :joints]
    return {"poses": poses.reshape(len(poses), -1), "trans": np.asarray(trans, np.float64),
            "betas": np.asarray(betas, np.float64), "gender": np.array("neutral"),
            "mocap_framerate": np.array(float(fps))}


def as_matrices(axis_angles: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(axis_angles, dtype=torch.float64)).numpy()


def as_axis_angles(rotations: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(rotations, dtype=torch.float64)).numpy()


def first_value(location: str, column: str) -> str:
    batch = next(iter_results(location, [column], batch_rows=1), None)
    if batch is None or batch.num_rows == 0:
        raise DataError(f"{location} has no committed results to convert")
    return str(batch.column(0)[0].as_py())


# --- refine (scorehoi): one SMPL-H pose per row ------------------------------------------------


def refine_samples(location: str, job: dict, body_models: Optional[str]) -> Iterator[Sample]:
    skeletons = BodySkeletons("smplh", body_model_folder("smplh", first_value(location, "body_model"), body_models))
    for batch in iter_results(location, ["sample_id", "variant", "pose_6d", "betas"]):
        rows = batch.to_pydict()
        poses = np.asarray(rows["pose_6d"], np.float64).reshape(batch.num_rows, 1, AMASS_JOINTS, 6)
        for i in range(batch.num_rows):
            rotations = rotation_6d_to_matrix(torch.from_numpy(poses[i])).numpy()
            betas, trans = np.asarray(rows["betas"][i], np.float64), np.zeros((1, 3))
            motion = skeletons.motion(rotations, trans, betas, STILL_FPS)
            arrays = amass_arrays(as_axis_angles(rotations), trans, betas, STILL_FPS)
            yield Sample(f"{rows['sample_id'][i]}#{rows['variant'][i]}", [motion], [arrays])


# --- reconstruct (socialmirror): one row per frame and person -----------------------------------


RECONSTRUCT_COLUMNS = ["video_id", "frame_index", "person", "pose_axis_angle", "translation", "betas"]


def reconstruct_samples(location: str, job: dict, body_models: Optional[str]) -> Iterator[Sample]:
    """One sample per video, one person per track. A video's rows may span shards: a first pass over
    the ``video_id`` column finds each video's last batch, so a video is written (and its rows let go)
    as soon as that batch is read."""
    skeletons = BodySkeletons("smpl", body_model_folder("smpl", first_value(location, "body_model"), body_models))
    fps = job_fps(job)
    last_batch = {}
    for index, batch in enumerate(iter_results(location, ["video_id"])):
        last_batch.update(dict.fromkeys(batch.column(0).to_pylist(), index))
    open_videos: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for index, batch in enumerate(iter_results(location, RECONSTRUCT_COLUMNS)):
        for row in batch.to_pylist():
            open_videos[row["video_id"]][row["person"]].append(row)
        for video in [v for v in open_videos if last_batch.get(v) == index]:
            yield video_sample(video, open_videos.pop(video), skeletons, fps)


def job_fps(job: dict) -> float:
    fps = job.get("settings", {}).get("target_fps") if isinstance(job.get("settings"), dict) else None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise DataError(f"job.json: settings.target_fps {fps!r:.40} is not a positive frame rate")
    return float(fps)


def video_sample(video: str, people: dict[int, list], skeletons: BodySkeletons, fps: float) -> Sample:
    motions, arrays = [], []
    for person in sorted(people):
        first, axis_angles, trans, betas = person_frames(people[person])
        rotations = as_matrices(axis_angles)
        motions.append(skeletons.motion(rotations, trans, betas, fps, first / fps))
        arrays.append(amass_arrays(axis_angles, trans, betas, fps))
    return Sample(video, motions, arrays)


def person_frames(rows: list[dict]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The first frame index the person is in, (T, 24, 3) axis-angles, (T, 3) translations from the first to the last frame the person is in
    (a frame it is missing from holds the frame before, so the frame rate stays true), and the mean
    of its per-frame betas (one shape per file)."""
    rows = sorted(rows, key=lambda r: r["frame_index"])
    first = rows[0]["frame_index"]
    slot = np.zeros(rows[-1]["frame_index"] - first + 1, np.int64)
    slot[[r["frame_index"] - first for r in rows]] = np.arange(len(rows))
    slot = np.maximum.accumulate(slot)
    poses = np.asarray([r["pose_axis_angle"] for r in rows], np.float64).reshape(len(rows), -1, 3)
    trans = np.asarray([r["translation"] for r in rows], np.float64)
    betas = np.asarray([r["betas"] for r in rows], np.float64).mean(0)
    return first, poses[slot], trans[slot], betas
