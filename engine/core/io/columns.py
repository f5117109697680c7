"""Arrow columns whose shape readers see: fixed-length vectors as ``fixed_size_list`` and
(person, frame, feature) arrays as ``fixed_size_list<list<fixed_size_list<float32, F>>, P>``, so
pyarrow, polars, DuckDB and pandas hand back arrays without a reshape.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def people_frames_type(people: int, features: int) -> pa.DataType:
    """(person, frame, feature): ``people`` and ``features`` fixed, frames per row."""
    return pa.list_(pa.list_(pa.list_(pa.float32(), features)), people)


def people_frames_column(arrays: list[np.ndarray], people: int, features: int) -> pa.Array:
    """One row per (people, frames, features) float array; frames may differ between rows."""
    if not arrays:
        return pa.array([], people_frames_type(people, features))
    frames = np.repeat([a.shape[1] for a in arrays], people)
    values = pa.array(np.concatenate([np.ascontiguousarray(a, np.float32).reshape(-1) for a in arrays]))
    per_frame = pa.FixedSizeListArray.from_arrays(values, features)
    offsets = pa.array(np.concatenate([[0], np.cumsum(frames)]).astype(np.int32))
    per_person = pa.ListArray.from_arrays(offsets, per_frame)
    return pa.FixedSizeListArray.from_arrays(per_person, people)
