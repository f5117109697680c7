"""The one cache root: ``$MOTIONFLEET_CACHE``, else ``~/.cache/motionfleet``.

Exported graphs, TensorRT engines, ScoreHOI's folded denoiser, synthetic body models and object SDF
grids live under it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MOTIONFLEET_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "motionfleet")


def cache_dir(*parts: str) -> Path:
    """``cache_root()/parts...`` (not created)."""
    return cache_root().joinpath(*parts)
