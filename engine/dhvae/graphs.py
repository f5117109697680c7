"""DHVAE's graphs: the denoiser step, the decoder (any length up to max_frames), and the whole
deterministic DDIM loop unrolled for a fixed step count."""

from __future__ import annotations

import torch
from torch import nn

from motionfleet.core.runtime.graphs import (
    GraphInput,
    GraphSpec,
    denoiser_call_inputs,
    graph_for,
    same_shape_as_first,
)
from motionfleet.dhvae import model as dhvae
from motionfleet.sampling import ddim


def decoder_call_inputs(z: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return z, torch.arange(num_frames, device=z.device)


class DecoderGraph(nn.Module):
    """The DHVAE decoder with the frame count carried by the length of ``frame_index`` (0..T-1),
    so one graph decodes any length up to ``max_frames``."""

    def __init__(self, decoder: dhvae.DHVAEDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, frame_index.shape[0])


class DDIMLoopGraph(nn.Module):
    """The whole deterministic DDIM loop (eta 0) for a fixed step count, unrolled into one graph:
    (x_T, text, null_text) -> x_0, each step one classifier-free-guidance batch, as the per-step
    backends run it."""

    def __init__(self, denoiser: dhvae.DHVAEDenoiser, steps: int, guidance: float):
        super().__init__()
        self.denoiser = denoiser
        self.plan = ddim.plan(ddim.DDIMConfig(steps=steps, eta=0.0))
        self.guidance = guidance

    def forward(self, x: torch.Tensor, text: torch.Tensor, null_text: torch.Tensor) -> torch.Tensor:
        both = torch.cat([null_text.expand_as(text), text])
        n = x.shape[0]

        def denoise(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            # cfg_denoiser's batching, split by slicing: the exporter cannot prove chunk(2)'s
            # size guard for a symbolic batch
            out = self.denoiser(torch.cat([x_t, x_t]), t, both)
            return out[:n], out[n:]

        return ddim.sample(denoise, x, self.plan, self.guidance)


def dhvae_denoiser_graph(denoiser: dhvae.DHVAEDenoiser) -> GraphSpec:
    c = denoiser.config
    inputs = (GraphInput("x", ("batch", dhvae.NUM_TOKENS, c.latent_dim)), GraphInput("t", (1,), "timestep", 1000),
              GraphInput("text", ("batch", c.cond_dim)))
    return GraphSpec("dhvae", "denoiser", denoiser, inputs, "eps", c.to_dict(), denoiser_call_inputs,
                     same_shape_as_first)


def dhvae_decoder_graph(decoder: dhvae.DHVAEDecoder) -> GraphSpec:
    c = decoder.config

    def output_shape(z, frame_index):
        return (z.shape[0], 2, frame_index.shape[0], c.motion_dim)

    inputs = (GraphInput("z", ("batch", dhvae.NUM_TOKENS, c.latent_dim)),
              GraphInput("frame_index", ("frames",), "frame_index"))
    return GraphSpec("dhvae", "decoder", DecoderGraph(decoder).eval(), inputs, "motion", c.to_dict(),
                     decoder_call_inputs, output_shape, max_frames=c.max_frames)


def dhvae_loop_graph(denoiser: dhvae.DHVAEDenoiser, steps: int, guidance: float) -> GraphSpec:
    c = denoiser.config
    inputs = (GraphInput("x", ("batch", dhvae.NUM_TOKENS, c.latent_dim)), GraphInput("text", ("batch", c.cond_dim)),
              GraphInput("null_text", (1, c.cond_dim)))
    config = {**c.to_dict(), "steps": steps, "guidance": guidance, "eta": 0.0}

    def call_inputs(x, text, null_text):
        return x, text, null_text

    # The exporter's optimizer takes superlinear time on the unrolled loop (official preset: 2 steps
    # 21 s, 5 steps 76 s, against 38 s for 5 steps without it); ONNX Runtime optimises on load.
    return GraphSpec("dhvae", f"loop{steps}", DDIMLoopGraph(denoiser, steps, guidance).eval(), inputs, "x0",
                     config, call_inputs, same_shape_as_first, optimize=False)


def family_graphs(model: dhvae.DHVAE, loop_steps: int | None = None, guidance: float = 3.5) -> list[GraphSpec]:
    """The denoiser and the decoder, and the DDIM loop if ``loop_steps``."""
    graphs = [graph_for(model.denoiser), graph_for(model.decoder)]
    if loop_steps:
        graphs.append(dhvae_loop_graph(model.denoiser, loop_steps, guidance))
    return graphs
