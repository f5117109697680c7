"""ScoreHOI's denoiser graphs: the unfolded reference and the folded form refine runs."""

from __future__ import annotations

from dataclasses import asdict

import torch

from motionfleet.common.modules import items_of
from motionfleet.core.runtime.graphs import (
    GraphInput,
    GraphSpec,
    denoiser_call_inputs,
    graph_for,
    same_shape_as_first,
    timestep_tensor,
)
from motionfleet.scorehoi import model as scorehoi


def scorehoi_config_of(model: scorehoi.ScoreHOIDenoiser) -> scorehoi.ScoreHOIConfig:
    """The config a ScoreHOI denoiser was built with, read from its layer sizes."""
    block = items_of(model.blocks, scorehoi.ResidualBlock)[0]
    geometry = model.geo_cond_embedding_feat
    return scorehoi.ScoreHOIConfig(
        hidden_dim=block.block.linear_layer1.out_features, condition_dim=block.align_ip_cond.in_features,
        geometry_input_dim=geometry.fc1.in_features, geometry_hidden_dim=geometry.fc1.out_features,
        geometry_mid_dim=geometry.fc2.out_features, num_pose_blocks=len(model.blocks),
        num_shape_blocks=len(model.blocks_betas), num_heads=block.block.attn_cond_emb.attn.num_heads)


def scorehoi_graph(model: scorehoi.ScoreHOIDenoiser) -> GraphSpec:
    c = scorehoi_config_of(model)
    inputs = (GraphInput("x_t", ("batch", scorehoi.STATE_DIM)), GraphInput("t", (1,), "timestep", 1000),
              GraphInput("image_features", ("batch", c.condition_dim)),
              GraphInput("geometry_features", ("batch", c.geometry_input_dim)))
    return GraphSpec("scorehoi", "denoiser", model, inputs, "eps", asdict(c), denoiser_call_inputs,
                     same_shape_as_first)


def folded_call_inputs(x: torch.Tensor, t, *conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded ScoreHOI denoiser's graph reads x_t and t only (the conditions do not change its output)."""
    return x, timestep_tensor(t, x.device)


def scorehoi_folded_graph(model: scorehoi.FoldedScoreHOIDenoiser) -> GraphSpec:
    inputs = (GraphInput("x_t", ("batch", scorehoi.STATE_DIM)), GraphInput("t", (1,), "timestep", 1000))
    config = {"folded": True, "pose_blocks": len(model.blocks), "shape_blocks": len(model.blocks_betas)}
    return GraphSpec("scorehoi", "denoiser-folded", model, inputs, "eps", config, folded_call_inputs,
                     same_shape_as_first)


def family_graphs(model: scorehoi.ScoreHOIDenoiser, loop_steps: int | None = None,
                  guidance: float = 0.0) -> list[GraphSpec]:
    """The denoiser, unfolded and folded."""
    if loop_steps:
        raise ValueError("the whole-loop graph exists for dhvae only")
    return [graph_for(model), graph_for(scorehoi.fold_scorehoi(model))]
