"""DHVAE (text -> two-person motion): the latent denoiser and the hierarchical decoder.

Latent: (B, 3, 256) = [z_a, z_b, z_g]; z_g is multiplied by ``z_g_scale`` (5) before diffusion and
divided by it before decoding. The denoiser is an AdaLN-zero transformer (DiT-style, six
modulation vectors per block: gate, scale, shift for attention and FFN) conditioned on
text feature + timestep embedding (768). The official release uses 9 plain blocks; the paper's
variant has 13 blocks with U-Net skips between opposite blocks, segment positional encoding and
token scaling (paper Sec. 3.2). The decoder maps z_g through an interaction co-transformer, then
two person decoders cross-attend to [z_g, z_a] and [z_g, z_b], giving 262-dim frames per person
(22x3 positions, 22x3 velocities, 21x6 rotations, 4 foot contacts).

Module names follow the release where that keeps the key map short; see ``map_release_keys``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from motionfleet.common.modules import items_of
from motionfleet.common.weights import seeded
from motionfleet.core.runtime.batching import pad_rows
from motionfleet.dhvae.interx import FEATURES_PER_PERSON as INTERX_MOTION_DIM

MOTION_DIM = 262
NUM_TOKENS = 3  # z_a, z_b, z_g


@dataclass(frozen=True)
class DHVAEConfig:
    latent_dim: int = 256
    heads: int = 4
    layers: int = 9
    ffn_dim: int = 1024
    cond_dim: int = 768
    z_g_scale: float = 5.0
    skip: bool = False  # U-Net skips between opposite blocks (paper)
    segment_pe: bool = False  # learned per-token segment embedding (paper's SPE)
    token_scaling: bool = False  # learned per-token input gain (paper)
    learned_pe: bool = False  # the release's is_lpe: learned positions (denoiser.pe.pe) instead of sinusoids
    ar_conditioning: bool = False  # the release's is_ar: c = text_proj(text) + MLP(t), no positional encoding
    # decoder
    decoder_layers: int = 4  # per-person transformer decoder layers ("nlayer_ind")
    interaction_layers: int = 3  # co-transformer layers, odd ("nlayer_top")
    decoder_heads: int = 4
    decoder_ffn_dim: int = 1024
    max_frames: int = 300
    motion_dim: int = MOTION_DIM

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # The public release (cfg/chmld/chmld.yaml): 9 AdaLN blocks, no skips.
    "official": DHVAEConfig(),
    # The paper (Sec. 4.1): 13 blocks with U-Net skips, SPE and token scaling.
    "paper": DHVAEConfig(layers=13, skip=True, segment_pe=True, token_scaling=True),
    # Small enough for unit tests on two CPU cores.
    "tiny": DHVAEConfig(latent_dim=64, heads=2, layers=3, ffn_dim=128, cond_dim=768,
                        decoder_layers=1, interaction_layers=1, decoder_heads=2, decoder_ffn_dim=128),
}
# The tiny model writing Inter-X's layout (56 x 6 features a person, ``interx.py``), for the interx
# evaluation protocol with dummy weights: DHVAE has released no Inter-X model.
PRESETS["tiny-interx"] = replace(PRESETS["tiny"], motion_dim=INTERX_MOTION_DIM)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al. 2017, sec. 3.5: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' ``get_timestep_embedding`` with flip_sin_to_cos=True, shift 0: [cos, sin]."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freq[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(timestep_features(t, self.linear_1.in_features))))


class SelfAttention(nn.Module):
    """Multi-head attention with q and v biases only (VAR's block), softmax scale 0.25/sqrt(d_head)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 0.25 / math.sqrt(dim // heads)
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(x, self.mat_qkv.weight, bias).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """AdaLN (Peebles & Xie 2023): LN(x) * (1 + scale) + shift, LN without affine, eps 1e-6."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """x += gate1 * Attn(mod(x)); x += gate2 * FFN(mod(x)); the six vectors come from the condition."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, cond_dim: int):
        super().__init__()
        self.attn = SelfAttention(dim, heads)
        self.ffn = FeedForward(dim, ffn_dim)
        self.ada_lin = nn.Linear(cond_dim, 6 * dim)

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, cond_dim) -> (B, 6, 1, dim): gate1, gate2, scale1, scale2, shift1, shift2."""
        return self.ada_lin(F.silu(cond)).view(cond.shape[0], 6, 1, -1)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        gate1, gate2, scale1, scale2, shift1, shift2 = mod.unbind(1)
        x = x + self.attn(modulate(x, scale1, shift1)) * gate1
        return x + self.ffn(modulate(x, scale2, shift2)) * gate2


class AdaLNHead(nn.Module):
    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.ada_lin = nn.Linear(cond_dim, 2 * dim)

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        return self.ada_lin(F.silu(cond)).view(cond.shape[0], 2, 1, -1)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        scale, shift = mod.unbind(1)
        return modulate(x, scale, shift)


class DHVAEDenoiser(nn.Module):
    """eps_theta(z_t, t, c): (B, 3, D) latent, scalar or (B,) timestep, (B, 768) text feature.

    Split in two so a sampler can hoist work out of its loop: ``modulation(t, text)`` (the AdaLN
    vectors of every block: for the unconditional text they are the same for every sample) and
    ``forward_modulated(x, mods)`` (the transformer proper).
    """

    def graph_spec(self):
        """What a backend runs: this module's graph inputs and call convention."""
        from motionfleet.dhvae.graphs import dhvae_denoiser_graph

        return dhvae_denoiser_graph(self)

    def guided_pair(self, x: torch.Tensor, t: int, text: torch.Tensor, null_text: torch.Tensor):
        """(eps_uncond, eps_cond) with the null text modulated once per step (``guided_pair`` below)."""
        return guided_pair(self, x, t, text, null_text)

    def step_modulations(self, timesteps: list[int], text: torch.Tensor):
        """The AdaLN vectors of ``text`` at each of ``timesteps`` (``step_modulations`` below)."""
        return step_modulations(self, timesteps, text)

    def guided_pair_modulated(self, x: torch.Tensor, mods_null: list, mods_cond: list):
        """``guided_pair`` from modulations computed beforehand (``guided_pair_modulated`` below)."""
        return guided_pair_modulated(self, x, mods_null, mods_cond)

    def __init__(self, config: DHVAEConfig):
        super().__init__()
        c = config
        self.config = c
        self.time_embedding = TimestepMLP(c.cond_dim)
        if c.learned_pe:
            self.positions = nn.Parameter(torch.zeros(NUM_TOKENS, c.latent_dim))
        else:
            self.register_buffer("positions", sinusoidal_positions(NUM_TOKENS, c.latent_dim), persistent=False)
        if c.ar_conditioning:
            if c.cond_dim != c.latent_dim:
                raise ValueError("is_ar conditioning adds text_proj(text) (latent_dim) to the timestep embedding "
                                 "(cond_dim): they must be equal")
            self.text_proj = nn.Linear(c.cond_dim, c.latent_dim)
        if c.segment_pe:
            self.segment_embedding = nn.Parameter(torch.zeros(NUM_TOKENS, c.latent_dim))
        if c.token_scaling:
            self.token_scale = nn.Parameter(torch.ones(NUM_TOKENS, 1))
        self.blocks = nn.ModuleList(AdaLNBlock(c.latent_dim, c.heads, c.ffn_dim, c.cond_dim) for _ in range(self.num_blocks))
        if c.skip:
            self.skip_linears = nn.ModuleList(nn.Linear(2 * c.latent_dim, c.latent_dim) for _ in range(self.num_blocks // 2))
        self.head = AdaLNHead(c.latent_dim, c.cond_dim)

    @property
    def num_blocks(self) -> int:
        layers = self.config.layers
        return layers + 1 if self.config.skip and layers % 2 == 0 else layers

    def condition(self, t: torch.Tensor | int, text: torch.Tensor) -> torch.Tensor:
        """c = text + MLP(sinusoid(t)) (the release adds them)."""
        t = torch.as_tensor(t, device=text.device).reshape(-1)
        return self.text_condition(text) + self.time_embedding(t).expand(text.shape[0], -1)

    def text_condition(self, text: torch.Tensor) -> torch.Tensor:
        """The text's part of c: the feature itself, or ``text_proj`` of it on the release's is_ar path."""
        return self.text_proj(text) if self.config.ar_conditioning else text

    def modulation(self, t: torch.Tensor | int, text: torch.Tensor) -> list[torch.Tensor]:
        return self.cond_modulation(self.condition(t, text))

    def cond_modulation(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """The AdaLN vectors of every block (and the head) for conditions c (B, cond_dim)."""
        return [block.modulation(cond) for block in items_of(self.blocks, AdaLNBlock)] + [self.head.modulation(cond)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.token_scaling:
            x = x * self.token_scale
        if not self.config.ar_conditioning:  # the release's is_ar path applies no positional encoding
            x = x + self.positions
        if self.config.segment_pe:
            x = x + self.segment_embedding
        return x

    def forward_modulated(self, x: torch.Tensor, mods: list[torch.Tensor]) -> torch.Tensor:
        x = self.embed(x)
        if not self.config.skip:
            for block, mod in zip(self.blocks, mods):
                x = block(x, mod)
            return self.head(x, mods[-1])
        return self._forward_skip(x, mods)

    def _forward_skip(self, x: torch.Tensor, mods: list[torch.Tensor]) -> torch.Tensor:
        """U-Net skips: block i's output is concatenated into block (n-1-i)'s input.

        The release's skip transformer defines its AdaLN head but never applies it; we do the same
        so its checkpoints behave as trained.
        """
        half = self.num_blocks // 2
        saved = []
        for block, mod in zip(self.blocks[:half], mods[:half]):
            x = block(x, mod)
            saved.append(x)
        x = self.blocks[half](x, mods[half])
        for block, mod, linear in zip(self.blocks[half + 1:], mods[half + 1:-1], self.skip_linears):
            x = block(linear(torch.cat([x, saved.pop()], dim=-1)), mod)
        return x

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.forward_modulated(x, self.modulation(t, text))


class CrossAttentionHalf(nn.Module):
    """Query attends to the other person's tokens; post-norm residual + ReLU FFN (CoTransformer)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        x = self.norm1(query + self.mha(query, other, other, need_weights=False)[0])
        return self.norm2(x + self.ffn(x))


def encoder_layer(dim: int, heads: int, ffn_dim: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout=0.0, batch_first=True)


class CoTransformerLayer(nn.Module):
    """Left attends to right, then self-attends; right attends to the updated left, then self-attends."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.left_cross = CrossAttentionHalf(dim, heads, ffn_dim)
        self.right_cross = CrossAttentionHalf(dim, heads, ffn_dim)
        self.left_self = encoder_layer(dim, heads, ffn_dim)
        self.right_self = encoder_layer(dim, heads, ffn_dim)

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        left = self.left_self(self.left_cross(left, right))
        right = self.right_self(self.right_cross(right, left))
        return left, right


class SkipCoTransformer(nn.Module):
    """Co-transformer layers with U-Net skips (odd count: in, middle, out)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        if layers % 2 != 1:
            raise ValueError("interaction_layers must be odd")
        half = layers // 2
        self.in_blocks = nn.ModuleList(CoTransformerLayer(dim, heads, ffn_dim) for _ in range(half))
        self.mid_block = CoTransformerLayer(dim, heads, ffn_dim)
        self.out_blocks = nn.ModuleList(CoTransformerLayer(dim, heads, ffn_dim) for _ in range(half))
        self.left_skip = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(half))
        self.right_skip = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(half))

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        saved = []
        for block in self.in_blocks:
            left, right = block(left, right)
            saved.append((left, right))
        left, right = self.mid_block(left, right)
        for block, lin_l, lin_r in zip(self.out_blocks, self.left_skip, self.right_skip):
            skip_l, skip_r = saved.pop()
            left, right = block(lin_l(torch.cat([left, skip_l], -1)), lin_r(torch.cat([right, skip_r], -1)))
        return left, right


class DHVAEDecoder(nn.Module):
    """[z_a, z_b, z_g] -> two motions (B, T, 262).

    Frame queries (zeros + learned positions) follow z_g through the interaction co-transformer;
    each person's decoder then cross-attends to [z_g, z_own]. Decoding T frames attends only over
    those T frames, which equals the release's masked 300-frame decode on the valid frames.
    """

    def graph_spec(self):
        """What a backend runs: this module's graph inputs and call convention."""
        from motionfleet.dhvae.graphs import dhvae_decoder_graph

        return dhvae_decoder_graph(self)

    def __init__(self, config: DHVAEConfig):
        super().__init__()
        c = config
        self.config = c
        d = c.latent_dim
        self.positions = nn.Parameter(torch.zeros(1, c.max_frames + 1, d))
        self.interaction = SkipCoTransformer(d, c.decoder_heads, c.decoder_ffn_dim, c.interaction_layers)
        layer = nn.TransformerDecoderLayer(d, c.decoder_heads, c.decoder_ffn_dim, dropout=0.0, batch_first=True)
        self.decoder_a = nn.TransformerDecoder(layer, c.decoder_layers)  # clones ``layer``
        self.decoder_b = nn.TransformerDecoder(layer, c.decoder_layers)
        self.output_a = nn.Linear(d, c.motion_dim)
        self.output_b = nn.Linear(d, c.motion_dim)

    def forward(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """z: (B, 3, D) diffusion latent (z_g still scaled); returns (B, 2, T, motion_dim)."""
        if not 1 <= num_frames <= self.config.max_frames:
            raise ValueError(f"num_frames must be in [1, {self.config.max_frames}]")
        z_a, z_b, z_g = z[:, 0:1], z[:, 1:2], z[:, 2:3] / self.config.z_g_scale
        queries = torch.zeros(z.shape[0], num_frames, z.shape[-1], dtype=z.dtype, device=z.device)
        tokens = torch.cat([z_g, queries], dim=1) + self.positions[:, : num_frames + 1]
        left, right = self.interaction(tokens, tokens)
        motion_a = self.output_a(self.decoder_a(left[:, 1:], torch.cat([z_g, z_a], dim=1)))
        motion_b = self.output_b(self.decoder_b(right[:, 1:], torch.cat([z_g, z_b], dim=1)))
        return torch.stack([motion_a, motion_b], dim=1)


class DHVAE(nn.Module):
    """The pair the engine runs: ``denoiser`` inside the DDIM loop, ``decoder`` once per sample."""

    family = "dhvae"

    def __init__(self, config: DHVAEConfig):
        super().__init__()
        self.config = config
        self.denoiser = DHVAEDenoiser(config)
        self.decoder = DHVAEDecoder(config)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (NUM_TOKENS, self.config.latent_dim)


def build_dummy(config: DHVAEConfig, seed: int) -> DHVAE:
    """Seeded random weights (as vLLM's ``--load-format dummy``): same seed, same bytes.

    Linear weights ~ N(0, 0.02) and AdaLN gates at the same scale, so the dummy network is a
    non-trivial function of every input (an AdaLN-zero init would make it the identity).
    """
    with seeded(seed):
        model = DHVAE(config)
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                nn.init.normal_(param, std=0.02)
            elif "norm" not in name and "token_scale" not in name:
                nn.init.normal_(param, std=0.02)
    return model.eval()


# Release key -> our key. Lightning prefixes: "denoiser.denoiser.denoiser." is
# CHMLD.denoiser (HDenoiser) . denoiser (AdaLNDenoiser) . denoiser (AdaLNTransformer).
_RELEASE_KEY_RULES = [
    (r"^denoiser\.denoiser\.denoiser\.layers\.(\d+)\.", r"denoiser.blocks.\1."),
    (r"^denoiser\.denoiser\.denoiser\.head_nm\.ada_lin\.1\.", "denoiser.head.ada_lin."),
    (r"^denoiser\.time_embedding\.", "denoiser.time_embedding."),
    (r"\.ada_lin\.1\.", ".ada_lin."),
    (r"^vae\.decoder\.pe\.pe$", "decoder.positions"),
    (r"^vae\.decoder\.top_decoder\.in_blocks\.", "decoder.interaction.in_blocks."),
    (r"^vae\.decoder\.top_decoder\.mid_blocks\.0\.", "decoder.interaction.mid_block."),
    (r"^vae\.decoder\.top_decoder\.out_blocks\.", "decoder.interaction.out_blocks."),
    (r"^vae\.decoder\.top_decoder\.left_concat_layers\.", "decoder.interaction.left_skip."),
    (r"^vae\.decoder\.top_decoder\.right_concat_layers\.", "decoder.interaction.right_skip."),
    (r"\.LeftCoTRMLayer\.", ".left_cross."),
    (r"\.RightCoTRMLayer\.", ".right_cross."),
    (r"\.LeftTRMLayer\.", ".left_self."),
    (r"\.RightTRMLayer\.", ".right_self."),
    (r"\.normlayer([12])\.", r".norm\1."),
    (r"^vae\.decoder\.decoder_left\.", "decoder.decoder_a."),
    (r"^vae\.decoder\.decoder_right\.", "decoder.decoder_b."),
    (r"^vae\.decoder\.output_proj1\.", "decoder.output_a."),
    (r"^vae\.decoder\.output_proj2\.", "decoder.output_b."),
]
# Release keys the network has no use for: the VAE encoder, the text encoder (``dhvae.text`` reads
# it), the unused template co-transformer layer and buffers we recompute; the denoiser's text
# projection and positional table only where its flags use them (``_unused_denoiser_keys``).
_RELEASE_IGNORED = re.compile(
    r"^(vae\.encoder\.|text_encoder\.|normalizer\.)|zero_k_bias$|\.co_transformer_layer\."
)
_SKIP_RULES = [
    (r"^denoiser\.denoiser\.denoiser\.in_layers\.(\d+)\.", lambda m, n: f"denoiser.blocks.{int(m.group(1))}."),
    (r"^denoiser\.denoiser\.denoiser\.mid_layer\.", lambda m, n: f"denoiser.blocks.{n // 2}."),
    (r"^denoiser\.denoiser\.denoiser\.out_layers\.(\d+)\.", lambda m, n: f"denoiser.blocks.{n // 2 + 1 + int(m.group(1))}."),
    (r"^denoiser\.denoiser\.denoiser\.linear_layers\.", lambda m, n: "denoiser.skip_linears."),
]


def _unused_denoiser_keys(config: DHVAEConfig) -> re.Pattern:
    unused = [] if config.ar_conditioning else [r"denoiser\.text_proj\."]
    if not config.learned_pe:
        unused.append(r"denoiser\.pe\.")  # the sinusoid table, recomputed
    return re.compile("^(" + "|".join(unused) + ")") if unused else re.compile(r"(?!)")


def map_release_keys(release: dict, config: DHVAEConfig) -> dict:
    """Lightning ``state_dict`` of the DHVAE release (CHMLD) -> our ``DHVAE`` state dict."""
    num_blocks = config.layers + 1 if config.skip and config.layers % 2 == 0 else config.layers
    unused = _unused_denoiser_keys(config)
    ours = {}
    for key, value in release.items():
        if _RELEASE_IGNORED.search(key) or unused.search(key):
            continue
        new = key
        for pattern, repl in _SKIP_RULES:
            match = re.match(pattern, new)
            if match:
                new = repl(match, num_blocks) + new[match.end():]
        for pattern, replacement in _RELEASE_KEY_RULES:
            new = re.sub(pattern, replacement, new)
        if new == "decoder.positions":  # the release keeps 5000 positions; z_g + max_frames are used
            value = value[:, : config.max_frames + 1]
        if new == "denoiser.pe.pe":  # is_lpe: (1, 5000, d) learned table; the 3 latent tokens use rows 0-2
            new, value = "denoiser.positions", value.reshape(-1, value.shape[-1])[:NUM_TOKENS]
        ours[new] = value
    return ours


def guided_pair(denoiser: DHVAEDenoiser, x: torch.Tensor, t: int, text: torch.Tensor,
                null_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_uncond, eps_cond) in one batched call, for classifier-free guidance.

    The null text is the same for every sample, so its AdaLN modulation at step t is computed
    once (batch 1) and broadcast, instead of once per sample.
    """
    return guided_pair_modulated(denoiser, x, denoiser.modulation(t, null_text[:1]), denoiser.modulation(t, text))


def guided_pair_modulated(denoiser: DHVAEDenoiser, x: torch.Tensor, mods_null: list[torch.Tensor],
                          mods_cond: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``guided_pair`` from modulations computed beforehand (null: batch 1, cond: one row per x row)."""
    mods = [torch.cat([m_null.expand_as(m_cond), m_cond]) for m_null, m_cond in zip(mods_null, mods_cond)]
    eps_uncond, eps_cond = denoiser.forward_modulated(torch.cat([x, x]), mods).chunk(2)
    return eps_uncond, eps_cond


HOIST_ROWS = 1024  # condition rows (steps x samples) per hoisted modulation GEMM: bounds its memory


def step_modulations(denoiser: DHVAEDenoiser, timesteps: list[int], text: torch.Tensor,
                     rows: int = HOIST_ROWS) -> Iterator[list[torch.Tensor]]:
    """The AdaLN vectors of ``text`` (B, cond_dim) at each of ``timesteps`` in turn, [block] (B, k, 1, D).

    c_t = text + MLP(sinusoid(t)) does not depend on x_t, so the modulations of many steps are
    computed together, one GEMM per block over (steps x samples) rows. The ada_lin weights
    (768 x 6*256 per block) are most of the denoiser's bytes; per step at batch 1 the loop is bound
    by reading them, and this reads them once per chunk of steps instead of once per step.
    Rows are padded to ``ROW_QUANTUM`` so each row's bits do not depend on the chunk it is in.
    """
    text = denoiser.text_condition(text)
    n = len(text)
    per_chunk = max(1, rows // n)
    t_all = torch.as_tensor(timesteps, device=text.device)
    time_emb = denoiser.time_embedding(t_all)  # (S, cond_dim), the same for every batch
    for start in range(0, len(timesteps), per_chunk):
        cond = (text[None] + time_emb[start : start + per_chunk, None]).flatten(0, 1)
        mods = denoiser.cond_modulation(pad_rows(cond))
        for i in range(len(cond) // n):
            yield [m[i * n : (i + 1) * n] for m in mods]


def load(checkpoint: str | None, preset: str = "official", seed: int = 0,
         vae_hparams: str | None = None) -> tuple[DHVAE, str]:
    """(model, weights description); ``dhvae.release.load_model`` also returns the release's settings."""
    from motionfleet.dhvae.release import load_model

    loaded = load_model(checkpoint, preset, seed, vae_hparams)
    return loaded.model, loaded.weights


def save(model: DHVAE, folder: str) -> None:
    from motionfleet.common.weights import save_model

    save_model(folder, model.state_dict(), {"family": DHVAE.family, "model": model.config.to_dict()})
