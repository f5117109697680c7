"""dhvae's results (InterGen's 262-d frames per person) as samples on InterHuman's 22-joint skeleton.

A frame is (InterGen, utils/utils.py ``process_motion_np``): [0:66] the 22 joints' global
positions (metres, y up, the first person facing +z at the start), [66:132] their velocities,
[132:258] 6D local rotations of joints 1-21 (SMPL-H's body joints, relative to the parent, as the
first two rows of the matrix: pytorch3d's ``matrix_to_rotation_6d``), [258:262] foot contacts
(left heel, left toe, right heel, right toe). The joints and the kinematic tree are SMPL's first 22
(InterGen's and HumanML3D's ``t2m_kinematic_chain``).

What is exact and what is not: ``.npz`` holds the positions (and contacts) exactly. A BVH or glTF
skeleton needs rest offsets and a root rotation, which the frames do not carry: offsets point
along SMPL's rest-pose bones (the synthetic stand-in's, ``demo.body_models``) with the lengths of
the first frame's bones; the root rotation is the best fit (Kabsch) of the root's three rest bones
to the posed hips and spine; the other 21 rotations are the frames' own. The root position is
exact; the other joints land where those rotations put them, which matches the positions as far
as the model's rotations and positions agree (no SMPL fit).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from motionfleet.common.rotations import rotation_6d_to_matrix
from motionfleet.convert.sample import Sample
from motionfleet.convert.skeleton import PersonMotion, Skeleton, fit_rotation, rest_offsets
from motionfleet.convert.smpl import BODY_JOINTS, joint_names
from motionfleet.core.errors import DataError
from motionfleet.core.jobfolder.sink import iter_results
from motionfleet.core.options import UsageError
from motionfleet.demo.body_models import synthetic_skeleton
from motionfleet.dhvae.model import MOTION_DIM
from motionfleet.dhvae.motion_space import STATS_FILES, read_stats

FPS = 30.0  # InterHuman's capture rate (InterGen, utils/preprocess.py)
POSITIONS, ROTATIONS, CONTACTS = slice(0, 66), slice(132, 258), slice(258, 262)
NAMES = joint_names("smpl")[:BODY_JOINTS]
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)


def rest_directions() -> np.ndarray:
    """(22, 3) unit vectors along SMPL's rest-pose bones (zero at the root)."""
    offsets = rest_offsets(synthetic_skeleton("smpl")[0][:BODY_JOINTS].astype(np.float64), PARENTS)
    lengths = np.linalg.norm(offsets, axis=-1, keepdims=True)
    return np.divide(offsets, lengths, out=np.zeros_like(offsets), where=lengths > 0)


def person_motion(frames: np.ndarray) -> PersonMotion:
    """(T, 262) raw (de-normalised) frames of one person -> its motion on the 22-joint skeleton."""
    positions = frames[:, POSITIONS].reshape(len(frames), BODY_JOINTS, 3).astype(np.float64)
    bones = positions[0] - positions[0, list(np.maximum(PARENTS, 0))]
    offsets = rest_directions() * np.linalg.norm(bones, axis=-1, keepdims=True)
    rotations = np.empty((len(frames), BODY_JOINTS, 3, 3))
    d6 = torch.from_numpy(frames[:, ROTATIONS].reshape(len(frames), BODY_JOINTS - 1, 6).astype(np.float64))
    rotations[:, 1:] = rotation_6d_to_matrix(d6).numpy()
    root_children = [j for j, p in enumerate(PARENTS) if p == 0]
    rotations[:, 0] = fit_rotation(offsets[root_children], positions[:, root_children] - positions[:, :1])
    return PersonMotion(Skeleton(NAMES, PARENTS, offsets), positions[:, 0], rotations, FPS)


def positions_arrays(frames: np.ndarray) -> dict[str, np.ndarray]:
    return {"positions": frames[:, POSITIONS].reshape(len(frames), BODY_JOINTS, 3), "foot_contacts": frames[:, CONTACTS],
            "parents": np.array(PARENTS), "joint_names": np.array(NAMES), "mocap_framerate": np.array(FPS)}


def float64_stats(folder: str) -> tuple[np.ndarray, np.ndarray, str]:
    """InterHuman's motion mean and std in ``folder`` as float64 arrays, and their digest."""
    try:
        mean, std, digest = read_stats(folder, MOTION_DIM)
    except ValueError as err:  # a file of the wrong size or with non-finite values
        raise DataError(str(err)) from err
    return mean.double().numpy(), std.double().numpy(), digest


class Denormalizer:
    """Raw frames of a row, whichever space the job wrote: ``motion_denormalized`` when it wrote both,
    ``motion`` when raw, ``motion`` x std + mean with ``--motion-stats`` (the job's, by digest)."""

    def __init__(self, stats_folder: Optional[str]):
        self.stats_folder = stats_folder
        self.stats: Optional[tuple[np.ndarray, np.ndarray, str]] = None  # mean, std, digest: read on first use

    def column(self, space: str) -> str:
        return "motion_denormalized" if space == "both" else "motion"

    def raw(self, motion: np.ndarray, space: str, recorded_digest: Optional[str]) -> np.ndarray:
        if space in ("denormalized", "both"):
            return motion
        if space != "normalized":
            raise DataError(f"a result row's motion_space {space!r:.40} is not one dhvae writes")
        if self.stats_folder is None:
            raise UsageError(f"the job wrote normalized motions: give --motion-stats, the folder with InterHuman's "
                             f"{' and '.join(STATS_FILES)}, to de-normalise them")
        if self.stats is None:
            self.stats = float64_stats(self.stats_folder)
        mean, std, digest = self.stats
        if recorded_digest is not None and recorded_digest != digest:
            raise UsageError(f"--motion-stats {self.stats_folder}: not the statistics the job used "
                             f"({digest[:19]}..., the job recorded {recorded_digest[:19]}...)")
        return motion * std + mean


def generate_samples(location: str, job: dict, motion_stats: Optional[str]) -> Iterator[Sample]:
    denormalizer = Denormalizer(motion_stats)
    for batch in iter_results(location, ["sample_id", "repeat", "motion", "motion_denormalized", "motion_space",
                                         "motion_stats"], batch_rows=32):
        for row in batch.to_pylist():
            space = row["motion_space"]
            motion = row[denormalizer.column(space)]
            if motion is None:
                raise DataError(f"sample {row['sample_id']!r:.60}: no {denormalizer.column(space)} column values")
            raw = denormalizer.raw(np.asarray(motion, np.float64), space, row["motion_stats"])
            yield Sample(f"{row['sample_id']}#{row['repeat']}", [person_motion(p) for p in raw],
                         [positions_arrays(p) for p in raw])
