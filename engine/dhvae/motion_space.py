"""Which space a dhvae motion is written in.

The released decoder outputs the training set's normalized features, (x - mean) / std per
dimension of the 262-dim frame (what the InterHuman evaluator consumes), unless its VAE was trained
with ``do_norm``, whose decoder outputs raw features that the release normalizes afterwards. Raw
("denormalized") features are the 22x3 positions, 22x3 velocities, 21x6 rotations and 4 foot
contacts; getting them from normalized ones (or back) needs the dataset's statistics:
InterHuman's (InterGen's) ``global_mean.npy`` and ``global_std.npy``, given as a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from motionfleet.core.errors import MissingFile
from motionfleet.core.io.digests import content_sha256
from motionfleet.core.options import UsageError

SPACES = ("normalized", "denormalized", "both")
STATS_FILES = ("global_mean.npy", "global_std.npy")


def read_stats(folder: str | Path, motion_dim: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(mean, std, sha256 of both files) from InterHuman's statistics folder."""
    folder = Path(folder)
    arrays = []
    for name in STATS_FILES:
        path = folder / name
        if not path.is_file():
            raise MissingFile(f"{path} not found; --motion-stats takes the folder holding InterHuman's "
                              f"{' and '.join(STATS_FILES)} (one value per feature of a {motion_dim}-dim frame)")
        array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32).reshape(-1)
        if array.shape != (motion_dim,) or not np.isfinite(array).all():
            raise ValueError(f"{path} must hold {motion_dim} finite values, got shape {array.shape}")
        arrays.append(torch.from_numpy(array))
    mean, std = arrays
    if not (std > 0).all():
        raise ValueError(f"{folder / STATS_FILES[1]} has non-positive standard deviations")
    return mean, std, stats_digest(folder)


def stats_digest(folder: str | Path) -> str:
    return "sha256:" + "+".join(content_sha256(Path(folder) / name) for name in STATS_FILES)


class MotionSpaces:
    """The row columns ``motion`` (in ``space``; normalized when both) and ``motion_denormalized``
    (only when both) from the decoder's output, which is in ``native`` space."""

    def __init__(self, native: str, asked: str, stats_folder: Optional[str], motion_dim: int):
        if asked not in SPACES:
            raise UsageError(f"unknown motion space {asked!r}; known: {', '.join(SPACES)}")
        self.native, self.space = native, asked
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None
        self.stats_digest: Optional[str] = None
        if stats_folder is not None:
            self.mean, self.std, self.stats_digest = read_stats(stats_folder, motion_dim)
        elif asked != native:
            raise UsageError(f"--motion-space {asked} needs --motion-stats (the folder with InterHuman's "
                             f"{' and '.join(STATS_FILES)}): the decoder's output is {native}")

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.mean is not None and self.std is not None, "__init__ refuses another space without stats"
        return self.mean, self.std

    def normalized(self, motion: torch.Tensor) -> torch.Tensor:
        if self.native == "normalized":
            return motion
        mean, std = self._stats()
        return (motion - mean) / std

    def denormalized(self, motion: torch.Tensor) -> torch.Tensor:
        if self.native == "denormalized":
            return motion
        mean, std = self._stats()
        return motion * std + mean

    def columns(self, motion: torch.Tensor) -> dict:
        """(person, frame, feature) arrays of the row's ``motion`` and ``motion_denormalized``."""
        if self.space == "both":
            return {"motion": self.normalized(motion).numpy(), "motion_denormalized": self.denormalized(motion).numpy()}
        convert = self.normalized if self.space == "normalized" else self.denormalized
        return {"motion": convert(motion).numpy(), "motion_denormalized": None}



def motion_space_report(spec, settings) -> dict:
    """The report's record of the motion columns' space (``spec.motion_stats``, ``settings.motion_space``)."""
    note = ("motion is in the training set's normalized feature space (what the InterHuman evaluator reads); "
            "no --motion-stats, so no denormalized positions / velocities / rotations"
            if spec.motion_stats is None else
            f"normalized = (raw - mean) / std with {spec.motion_stats}/{STATS_FILES[0]}, {STATS_FILES[1]}")
    return {"space": settings.motion_space, "stats": spec.motion_stats, "note": note}
