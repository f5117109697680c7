"""SocialMirror's graphs: the denoiser's, and with the front end's files the detector's and HMR 2.0's."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

from motionfleet.core.runtime.graphs import GraphInput, GraphSpec, denoiser_call_inputs, graph_for, same_shape_as_first
from motionfleet.socialmirror import model as socialmirror
from motionfleet.socialmirror.front_end import front_end_graphs
from motionfleet.socialmirror.settings import ReconstructSettings


def socialmirror_graph(model: socialmirror.SocialMirrorDenoiser) -> GraphSpec:
    c = model.config
    per_frame = ("batch", socialmirror.NUM_PEOPLE, c.frames)
    inputs = (GraphInput("x_t", (*per_frame, socialmirror.MOTION_DIM)), GraphInput("t", (1,), "timestep", 100),
              GraphInput("image_features", (*per_frame, c.image_feature_dim)),
              GraphInput("bbox", (*per_frame, socialmirror.BBOX_DIM)),
              GraphInput("text_features", ("batch", socialmirror.NUM_PEOPLE, c.text_feature_dim)))
    return GraphSpec("socialmirror", "denoiser", model, inputs, "x0", asdict(c), denoiser_call_inputs,
                     same_shape_as_first)


def family_graphs(model: socialmirror.SocialMirrorDenoiser, loop_steps: int | None = None, guidance: float = 0.0,
                  detector_weights: Optional[str] = None, detector_size: tuple[int, int] = ReconstructSettings.detector_size,
                  estimator_weights: Optional[str] = None) -> list[GraphSpec]:
    """The denoiser's graph, then the front end's of the files given (``export``'s flags of reconstruct's)."""
    if loop_steps:
        raise ValueError("the whole-loop graph exists for dhvae only")
    return [graph_for(model), *front_end_graphs(model.config.image_feature_dim, detector_weights, detector_size,
                                                estimator_weights)]
