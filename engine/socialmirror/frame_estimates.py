"""Per-frame image features, initial estimates and auxiliary joints from an upstream Parquet file.

Schema (one row per video, output frame and person; columns other than these are ignored):

    video_id          string    as ``video.list_videos`` names the video
    frame_index       int       output frame index (at the job's target fps)
    person            int       0 or 1 (the track file's person)
    image_features    list<float>[image_feature_dim]   optional: F_img, replaces ResNet-50 + projection
    initial_estimate  list<float>[157]                 optional: x_init (144 pose 6D, 10 betas, 3 crop camera)
    aux_joints        list<float>[72]                  optional: 24 x 3 camera-frame joints for the guidance

A video with no rows is computed from its pixels; a video with rows must cover every frame and
person of every clip it reaches, else that shard is rejected (``missing_estimates``). Each
column is used where present: features without an estimate feed the regression head; an estimate
without features still needs the backbone for F_img.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from motionfleet.core.errors import MissingFile, RejectedInput
from motionfleet.core.io.inputs import non_finite_rows
from motionfleet.socialmirror.model import MOTION_DIM

KEY_COLUMNS = ("video_id", "frame_index", "person")
AUX_JOINTS_DIM = 24 * 3


def value_columns(image_feature_dim: int) -> dict[str, int]:
    return {"image_features": image_feature_dim, "initial_estimate": MOTION_DIM, "aux_joints": AUX_JOINTS_DIM}


@dataclass(frozen=True)
class VideoEstimates:
    """One video's rows: ``index[(frame, person)]`` is the row of each column's ``values``."""

    index: dict[tuple[int, int], int]
    values: dict[str, np.ndarray]

    def clip_values(self, column: str, frame_indices: np.ndarray) -> Optional[np.ndarray]:
        """(2, L, width) float32 values at a clip's frames, None if the file lacks the column."""
        if column not in self.values:
            return None
        rows = [[self._row(int(frame), person) for frame in frame_indices] for person in (0, 1)]
        return self.values[column][np.asarray(rows)]

    def _row(self, frame: int, person: int) -> int:
        try:
            return self.index[(frame, person)]
        except KeyError:
            raise RejectedInput(f"missing_estimates: no upstream row for frame {frame}, person {person}") from None


class FrameEstimates:
    """The upstream file, read one video at a time."""

    def __init__(self, path: str | Path, image_feature_dim: int):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFile(f"upstream estimates file {self.path} does not exist")
        names = pq.read_schema(self.path).names
        missing = [c for c in KEY_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{self.path}: an estimates file needs columns {list(KEY_COLUMNS)}; missing {missing}")
        self.widths = {c: w for c, w in value_columns(image_feature_dim).items() if c in names}
        if not self.widths:
            raise ValueError(f"{self.path}: no value column; expected one of {list(value_columns(image_feature_dim))}")

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.widths)

    def for_video(self, video_id: str) -> Optional[VideoEstimates]:
        table = pq.read_table(self.path, columns=[*KEY_COLUMNS, *self.widths], filters=[("video_id", "=", video_id)])
        if table.num_rows == 0:
            return None
        keys = zip(table.column("frame_index").to_pylist(), table.column("person").to_pylist())
        index = {(int(f), int(p)): row for row, (f, p) in enumerate(keys)}
        if len(index) != table.num_rows:
            raise RejectedInput(f"missing_estimates: {video_id} lists a (frame, person) twice in {self.path.name}")
        return VideoEstimates(index, {c: self._matrix(table, c, w, video_id) for c, w in self.widths.items()})

    def _matrix(self, table, column: str, width: int, video_id: str) -> np.ndarray:
        values = table.column(column).combine_chunks()
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if values.null_count or np.any(lengths != width):
            raise RejectedInput(f"missing_estimates: {video_id}'s {column} must hold {width} numbers in every row")
        matrix = np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)
        bad = non_finite_rows(matrix)
        if bad:
            raise RejectedInput(f"bad_estimates: {video_id}'s {column} has NaN or infinite values "
                                f"({len(bad)} rows, first at frame {table.column('frame_index')[bad[0]].as_py()})")
        return matrix
