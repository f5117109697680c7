"""The DHVAE release's own generation loop, re-created to be timed beside the engine.

Written by us from reading ZenGengChin/dhvae-official (not copied): ``CHMLD.denoise`` and
``CHMLD.forward_test`` (models/chmld/chmld.py), the AdaLN denoiser (models/hmld/hdn.py
``HDenoiser.forward_adaln_noar``, models/hmld/adaln.py ``AdaLNTransformer``), the decoder
(models/chmld/chvae.py ``HDecoder.forward_hire``, models/hmld/net.py ``SkipCoTransformer``). What
their loop does, and so what this does:

- the text features of the whole CFG batch are given (uncond first); the text encoder is outside
  AITS, as DHVAE's Table 7 states;
- every one of the 50 steps runs the full denoiser on ``cat([latents] * 2)``: timestep embedding
  (diffusers ``Timesteps`` + ``TimestepEmbedding``) added to the text feature, each block's AdaLN
  ``ada_lin`` on that condition, the transformer; then diffusers' ``DDIMScheduler.step``;
- the decoder always decodes ``max_len`` (300) frames, with key-padding masks past the length, and
  zeroes the masked frames;
- ``torch.no_grad`` and ``eval()``, as their ``forward_test``.

Module and parameter names follow the release, so ``dhvae.map_release_keys`` maps them onto ours
and ``load_engine_weights`` gives this re-creation the engine's (dummy) weights: the two loops
then compute the same function, which ``tests/test_authors_loop.py`` checks.
"""

from __future__ import annotations

import math
from copy import deepcopy

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from motionfleet.dhvae import model as dhvae

RELEASE_MAX_POSITIONS = 5000  # the decoder's LearnablePositionalEncoding


class ReleaseSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(b, n, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class ReleaseFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ReleaseAdaLNBlock(nn.Module):
    def __init__(self, dim: int, cond_dim: int, heads: int, hidden: int):
        super().__init__()
        self.dim = dim
        self.attn = ReleaseSelfAttention(dim, heads)
        self.ffn = ReleaseFFN(dim, hidden)
        self.ln_wo_grad = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * dim))

    def forward(self, x, cond):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).view(-1, 1, 6, self.dim).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1)).mul_(gamma1)
        return x + self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2)


class ReleaseHead(nn.Module):
    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.dim = dim
        self.ln_wo_grad = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 2 * dim))

    def forward(self, x, cond):
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.dim).unbind(2)
        return self.ln_wo_grad(x).mul(scale.add(1)).add_(shift)


class ReleaseAdaLNTransformer(nn.Module):
    def __init__(self, c: dhvae.DHVAEConfig):
        super().__init__()
        self.layers = nn.ModuleList(ReleaseAdaLNBlock(c.latent_dim, c.cond_dim, c.heads, c.ffn_dim)
                                    for _ in range(c.layers))
        self.head_nm = ReleaseHead(c.latent_dim, c.cond_dim)

    def forward(self, x, cond):
        for layer in self.layers:
            x = layer(x, cond)
        return self.head_nm(x, cond)


class ReleaseDenoiser(nn.Module):
    """``HDenoiser`` with ``arch: adaln``, ``is_ar: false`` (the released config)."""

    def __init__(self, c: dhvae.DHVAEConfig):
        super().__init__()
        if c.skip or c.segment_pe or c.token_scaling:
            raise ValueError("the re-creation covers the released (official) denoiser layout")
        self.denoiser = nn.Module()
        self.denoiser.denoiser = ReleaseAdaLNTransformer(c)
        self.time_proj = Timesteps(c.cond_dim, True, 0)
        self.time_embedding = TimestepEmbedding(c.cond_dim, c.cond_dim)
        self.register_buffer("pe", dhvae.sinusoidal_positions(1000, c.latent_dim), persistent=False)

    def forward(self, x, cond_b1d, timesteps):
        time_emb = self.time_embedding(self.time_proj(timesteps)).unsqueeze(1)
        if timesteps.shape[0] != cond_b1d.shape[0]:
            time_emb = time_emb.expand(cond_b1d.shape[0], -1, -1)
        x = x + self.pe[: x.shape[1]].unsqueeze(0)
        return self.denoiser.denoiser(x, cond_b1d + time_emb)


class ReleaseCoHalf(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.normlayer1, self.normlayer2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, query, kv, mask):
        x, _ = self.mha(query=query, key=kv, value=kv, key_padding_mask=mask)
        x = self.normlayer1(query + x)
        return self.normlayer2(x + self.ffn(x))


def release_encoder_layer(dim: int, heads: int, hidden: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.1, activation="relu", batch_first=True)


class ReleaseCoLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.LeftCoTRMLayer = ReleaseCoHalf(dim, heads, hidden)
        self.RightCoTRMLayer = deepcopy(self.LeftCoTRMLayer)
        self.LeftTRMLayer = release_encoder_layer(dim, heads, hidden)
        self.RightTRMLayer = deepcopy(self.LeftTRMLayer)

    def forward(self, left, right, mask):
        left = self.LeftTRMLayer(self.LeftCoTRMLayer(left, right, mask), src_key_padding_mask=mask)
        right = self.RightTRMLayer(self.RightCoTRMLayer(right, left, mask), src_key_padding_mask=mask)
        return left, right


class ReleaseSkipCoTransformer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, layers: int):
        super().__init__()
        half = (layers - 1) // 2
        self.in_blocks = nn.ModuleList(ReleaseCoLayer(dim, heads, hidden) for _ in range(half))
        self.mid_blocks = nn.ModuleList([ReleaseCoLayer(dim, heads, hidden)])
        self.out_blocks = nn.ModuleList(ReleaseCoLayer(dim, heads, hidden) for _ in range(half))
        self.left_concat_layers = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(half))
        self.right_concat_layers = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(half))

    def forward(self, left, right, mask):
        saved = []
        for layer in self.in_blocks:
            left, right = layer(left, right, mask)
            saved.append((left, right))
        left, right = self.mid_blocks[0](left, right, mask)
        for layer, lin_l, lin_r in zip(self.out_blocks, self.left_concat_layers, self.right_concat_layers):
            skip_l, skip_r = saved.pop()
            left, right = layer(lin_l(torch.cat([left, skip_l], -1)), lin_r(torch.cat([right, skip_r], -1)), mask)
        return left, right


class ReleasePositions(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.pe = nn.Parameter(torch.zeros(1, RELEASE_MAX_POSITIONS, dim))

    def forward(self, x):
        return x + self.pe[:, : x.size(1)]


class ReleaseDecoder(nn.Module):
    """``HDecoder.forward_hire`` (``is_decode_cat: false``, one positional encoding)."""

    def __init__(self, c: dhvae.DHVAEConfig):
        super().__init__()
        d, h, f = c.latent_dim, c.decoder_heads, c.decoder_ffn_dim
        self.max_len = c.max_frames
        self.pe = ReleasePositions(d)
        self.top_decoder = ReleaseSkipCoTransformer(d, h, f, c.interaction_layers)
        layer = nn.TransformerDecoderLayer(d, h, f, dropout=0.1, batch_first=True)
        self.decoder_left = nn.TransformerDecoder(layer, c.decoder_layers)
        self.decoder_right = nn.TransformerDecoder(layer, c.decoder_layers)
        self.output_proj1, self.output_proj2 = nn.Linear(d, c.motion_dim), nn.Linear(d, c.motion_dim)

    def forward(self, z1, z2, z3, length):
        mask = torch.arange(self.max_len, device=length.device)[None] >= length[:, None]
        top_mask = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)
        query = torch.zeros(z1.shape[0], self.max_len, z1.shape[-1], device=z1.device)
        tokens = self.pe(torch.cat([z3, query], dim=1))
        x3, x4 = self.top_decoder(tokens, tokens, top_mask)
        x1 = self.decoder_left(tgt=x3[:, 1:], memory=torch.cat([z3, z1], dim=1), tgt_key_padding_mask=mask)
        x2 = self.decoder_right(tgt=x4[:, 1:], memory=torch.cat([z3, z2], dim=1), tgt_key_padding_mask=mask)
        x1, x2 = self.output_proj1(x1), self.output_proj2(x2)
        x1[mask] = 0
        x2[mask] = 0
        return x1, x2


class ReleaseModel(nn.Module):
    """The parts of ``CHMLD`` its generation loop runs: ``denoiser`` and ``vae.decoder``."""

    def __init__(self, c: dhvae.DHVAEConfig):
        super().__init__()
        self.config = c
        self.denoiser = ReleaseDenoiser(c)
        self.vae = nn.Module()
        self.vae.decoder = ReleaseDecoder(c)


def release_scheduler() -> DDIMScheduler:
    """The release's sampler (cfg/chmld/chmld.yaml ``NoiseScheduler``)."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def load_engine_weights(release: ReleaseModel, engine: dhvae.DHVAE) -> ReleaseModel:
    """Copy the engine model's weights into the re-creation through ``map_release_keys``."""
    ours = engine.state_dict()
    state = release.state_dict()
    for key, value in state.items():
        mapped = dhvae.map_release_keys({key: value}, release.config)
        for our_key in mapped:
            source = ours[our_key]
            value[(slice(None),) * (value.dim() - source.dim()) + tuple(slice(0, n) for n in source.shape)] = source
    release.load_state_dict(state)
    return release.eval()


@torch.no_grad()
def generate(model: ReleaseModel, scheduler: DDIMScheduler, text: torch.Tensor, null_text: torch.Tensor,
             lengths: torch.Tensor, steps: int = 50, guidance: float = 3.5, latents: torch.Tensor | None = None):
    """``CHMLD.forward_test`` for a batch of text features (B, cond_dim): (x1, x2) of (B, max_len, 262).

    ``latents`` (B, 3, D): the initial noise (their loop draws ``torch.randn`` itself)."""
    c = model.config
    bsz = len(text)
    if latents is None:
        latents = torch.randn(bsz, dhvae.NUM_TOKENS, c.latent_dim)
    latents = latents * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    cond_b1d = torch.cat([null_text.expand(bsz, -1), text]).unsqueeze(1)
    for t in scheduler.timesteps:
        noise_pred = model.denoiser(torch.cat([latents] * 2), cond_b1d, t.unsqueeze(0))
        uncond, cond = noise_pred.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, eta=0.0).prev_sample
    z1, z2, z3 = torch.chunk(latents, 3, dim=1)
    return model.vae.decoder(z1, z2, z3 / c.z_g_scale, lengths)
