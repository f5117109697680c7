"""SocialMirror's denoiser graph."""

from __future__ import annotations

from dataclasses import asdict

from motionfleet.core.runtime.graphs import GraphInput, GraphSpec, denoiser_call_inputs, graph_for, same_shape_as_first
from motionfleet.socialmirror import model as socialmirror


def socialmirror_graph(model: socialmirror.SocialMirrorDenoiser) -> GraphSpec:
    c = model.config
    per_frame = ("batch", socialmirror.NUM_PEOPLE, c.frames)
    inputs = (GraphInput("x_t", (*per_frame, socialmirror.MOTION_DIM)), GraphInput("t", (1,), "timestep", 100),
              GraphInput("image_features", (*per_frame, c.image_feature_dim)),
              GraphInput("bbox", (*per_frame, socialmirror.BBOX_DIM)),
              GraphInput("text_features", ("batch", socialmirror.NUM_PEOPLE, c.text_feature_dim)))
    return GraphSpec("socialmirror", "denoiser", model, inputs, "x0", asdict(c), denoiser_call_inputs,
                     same_shape_as_first)


def family_graphs(model: socialmirror.SocialMirrorDenoiser, loop_steps: int | None = None,
                  guidance: float = 0.0) -> list[GraphSpec]:
    if loop_steps:
        raise ValueError("the whole-loop graph exists for dhvae only")
    return [graph_for(model)]
