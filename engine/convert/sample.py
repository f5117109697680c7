"""One converted sample: its people's motions and, per person, the arrays of its ``.npz``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motionfleet.convert.skeleton import PersonMotion


@dataclass(frozen=True)
class Sample:
    """``key``: the raw id the file names come from (unique per sample: id, repeat or variant, or
    video); ``people``: one motion per person; ``arrays``: one ``.npz`` content per person."""

    key: str
    people: list[PersonMotion]
    arrays: list[dict[str, np.ndarray]]
