"""``motionfleet export``: a family's model -> ONNX graphs, one denoiser step per graph (and
dhvae's decoder and, if asked, its whole DDIM loop; socialmirror's detector and HMR 2.0 from the
files its ``export_options`` name), batch dynamic.

The model comes from the family's one loader (``Family.load_model``, as the jobs and ``bench``
load it) and the graphs from the family (``Family.graphs``); the tracing, the checks and the
metadata are the engine's (``motionfleet.core.runtime.graphs``). This package imports the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from motionfleet.core import registry
from motionfleet.core.options import UsageError
from motionfleet.core.runtime.graphs import OPSET, export_graph


def export_family(family: str, out_dir: str | Path, checkpoint: Optional[str] = None,
                  preset: Optional[str] = None, seed: int = 0, precision: str = "fp32",
                  loop_steps: Optional[int] = None, guidance_scale: float = 3.5, opset: int = OPSET,
                  progress: Optional[Callable[[str], None]] = None, options: Optional[dict] = None) -> list[Path]:
    """Export every graph of ``family``; returns the written paths. ``progress(name)`` is called
    before each graph is traced; ``options``: checked values of the family's ``export_options``."""
    entry = registry.get(family)
    if entry.graphs is None:
        raise UsageError(f"--family {family}: this family declares no ONNX graphs (Family.graphs); export one that does")
    model, weights = entry.load_model(checkpoint, preset or entry.default_preset, seed)
    paths = []
    for spec in entry.graphs(model, loop_steps, guidance_scale, **(options or {})):
        if progress:
            progress(spec.filename(precision))
        paths.append(export_graph(spec, out_dir, spec.weights or weights, precision, opset))
    return paths
