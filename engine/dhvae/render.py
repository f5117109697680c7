"""How ``motionfleet render`` draws a generate row: the two people's 22 joint positions (the first
66 of each frame's 262 features) as two coloured skeletons over the ground, each with an arrow the
way it faces, the prompt as the title, one fixed camera for the whole clip."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from motionfleet.core.registry import Render
from motionfleet.render import MAX_FRAMES, Canvas, prompt_title, skeleton_frames, write_mp4


def people(row: dict) -> np.ndarray:
    """(2, T, 22, 3) joint positions of a dhvae row (features in the dataset's normalised space)."""
    from motionfleet.dhvae.runner import motion_array

    motion = motion_array(row)
    return motion[:, :MAX_FRAMES, :66].reshape(motion.shape[0], -1, 22, 3)


def render_row(row: dict, path: Path) -> int:
    canvas = Canvas(1, [prompt_title(row["sample_id"], str(row.get("prompt", "")))])
    try:
        return write_mp4(path, skeleton_frames(people(row), canvas))
    finally:
        canvas.close()


def videos(job: Path, values: dict) -> Callable[[list[dict], Path], int]:
    return lambda rows, path: render_row(rows[0], path)


RENDER = Render(columns=("sample_id", "prompt", "motion"), videos=videos)
