"""InterCLIP: the InterHuman evaluator (InterGen; DHVAE's ``eval/interhuman/models.py``).

A motion encoder and a text encoder trained contrastively; metrics live in their shared
512-d space. Facts from the public code (cfg/eval_interhuman.yaml and models.py):
- motion side: both people's 262-d global features with the 4 foot contacts dropped (258 each,
  516 per frame) -> Linear to latent 1024 -> a learned query token prepended -> sinusoidal
  positions -> 8 post-norm Transformer encoder layers (8 heads, FF 2048, GELU) with the padded
  frames masked -> LayerNorm -> the query token -> Linear 1024 -> 512;
- text side: CLIP ViT-L/14@336px's token embedding and positional embedding (frozen copies in the
  checkpoint) -> 8 post-norm layers (d 768, 8 heads, FF 2048, GELU), no attention mask over the 77
  tokens -> LayerNorm -> the end-of-text token -> Linear 768 -> 512;
- both embeddings are L2-normalised and scaled by the learned ``latent_scale``;
- the released ``interclip.ckpt`` is a Lightning checkpoint: ``state_dict`` with keys prefixed
  ``model.``.
The evaluator reads de-normalised features (the public code de-normalises generated motion
with the dataset's mean and std before encoding it) padded with zeros after each motion's end.

Attention is written out (not ``nn.TransformerEncoder``, whose inference fast path turns a padded
batch into nested tensors) so that a motion's embedding is the same bytes whatever batch it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from motionfleet.common.weights import assigned, check_layout, meta_layout, read_state_dict, seeded, weights_description
from motionfleet.core.runtime.batching import pad_rows

FEATURES_PER_PERSON = 262
FOOT_CONTACTS = 4


@dataclass(frozen=True)
class InterCLIPConfig:
    input_dim: int = FEATURES_PER_PERSON - FOOT_CONTACTS  # per person
    latent_dim: int = 1024
    ff_dim: int = 2048
    layers: int = 8
    heads: int = 8
    text_dim: int = 768
    text_layers: int = 8
    text_heads: int = 8
    embed_dim: int = 512
    vocab_size: int = 49408
    context_length: int = 77
    max_frames: int = 2000  # rows of the stored sinusoid table


PRESETS = {
    "official": InterCLIPConfig(),
    # for tests and CI: the same architecture, narrow
    "tiny": InterCLIPConfig(latent_dim=64, ff_dim=128, layers=2, heads=4, text_dim=64, text_layers=2,
                            text_heads=4, embed_dim=32, max_frames=400),
}


def sinusoid_table(rows: int, dim: int) -> torch.Tensor:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...) (Vaswani et al. 2017)."""
    position = torch.arange(rows, dtype=torch.float32)[:, None]
    scale = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(rows, dim)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale)
    return table


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer with ``nn.TransformerEncoderLayer``'s parameter names:
    x = LN1(x + MHA(x)); x = LN2(x + W2 GELU(W1 x))."""

    def __init__(self, dim: int, heads: int, ff_dim: int):
        super().__init__()
        self.heads = heads
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def attention(self, x: torch.Tensor, padding: Optional[torch.Tensor]) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias).chunk(3, dim=-1)
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // self.heads)
        if padding is not None:  # (B, T) True where a frame is padding
            scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
        out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, t, d)
        return self.self_attn.out_proj(out)

    def forward(self, x: torch.Tensor, padding: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, padding))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class Encoder(nn.Module):
    """``nn.TransformerEncoder``'s ``layers.N`` naming."""

    def __init__(self, dim: int, heads: int, ff_dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ff_dim) for _ in range(layers))

    def forward(self, x: torch.Tensor, padding: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, padding)
        return x


class SinusoidTable(nn.Module):
    pe: torch.Tensor  # (rows, dim), a registered buffer

    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(rows, dim))


class MotionEncoder(nn.Module):
    def __init__(self, c: InterCLIPConfig):
        super().__init__()
        self.query_token = nn.Parameter(torch.randn(1, c.latent_dim))
        self.embed_motion = nn.Linear(2 * c.input_dim, c.latent_dim)
        self.sequence_pos_encoder = SinusoidTable(c.max_frames, c.latent_dim)
        self.transformer = Encoder(c.latent_dim, c.heads, c.ff_dim, c.layers)
        self.out_ln = nn.LayerNorm(c.latent_dim)
        self.out = nn.Linear(c.latent_dim, c.embed_dim)

    def forward(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, 2 x 258) features, (B,) lengths -> (B, 512) un-normalised embeddings."""
        b, t, _ = motion.shape
        tokens = torch.cat([self.query_token.expand(b, 1, -1), self.embed_motion(motion)], dim=1)
        tokens = tokens + self.sequence_pos_encoder.pe[: t + 1]
        frame = torch.arange(t, device=motion.device)
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=motion.device),
                             frame[None, :] >= lengths[:, None]], dim=1)
        return self.out(self.out_ln(self.transformer(tokens, padding))[:, 0])


class InterCLIP(nn.Module):
    def __init__(self, config: InterCLIPConfig):
        super().__init__()
        c = self.config = config
        self.motion_encoder = MotionEncoder(c)
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_dim)
        self.positional_embedding = nn.Parameter(torch.randn(c.context_length, c.text_dim) * 0.01)
        self.latent_scale = nn.Parameter(torch.ones(1))
        self.textTransEncoder = Encoder(c.text_dim, c.text_heads, c.ff_dim, c.text_layers)
        self.text_ln = nn.LayerNorm(c.text_dim)
        self.out = nn.Linear(c.text_dim, c.embed_dim)

    def _scaled(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding / embedding.norm(dim=-1, keepdim=True) * self.latent_scale

    def encode_motion(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.motion_encoder(motion, lengths))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) CLIP token ids -> (B, 512); the end-of-text token (the largest id) is read."""
        x = self.textTransEncoder(self.token_embedding(tokens) + self.positional_embedding)
        x = self.text_ln(x)[torch.arange(len(tokens)), tokens.argmax(dim=-1)]
        return self._scaled(self.out(x))


def evaluator_input(motion: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(2, T, 262) normalised generated motion -> (T, 516) evaluator features: de-normalised with the
    dataset's statistics, each person's 4 foot contacts dropped, the two people side by side."""
    raw = motion * std + mean
    return raw[..., : FEATURES_PER_PERSON - FOOT_CONTACTS].permute(1, 0, 2).reshape(motion.shape[1], -1)


def pad_frames(features: list[torch.Tensor], frames: int) -> torch.Tensor:
    """(B, frames, D): each (T_i, D) with zeros after its end (the public loaders' padding)."""
    out = torch.zeros(len(features), frames, features[0].shape[-1])
    for i, f in enumerate(features):
        out[i, : len(f)] = f
    return out


@torch.inference_mode()
def embed_motions(model: InterCLIP, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Row-invariant: rows padded to a multiple of 4 (``core/batching``)."""
    n = len(motion)
    return model.encode_motion(pad_rows(motion), pad_rows(lengths))[:n]


@torch.inference_mode()
def embed_texts(model: InterCLIP, tokens: torch.Tensor) -> torch.Tensor:
    n = len(tokens)
    return model.encode_text(pad_rows(tokens))[:n]


# --- weights ---------------------------------------------------------------------------------


def build_dummy(config: InterCLIPConfig, seed: int) -> InterCLIP:
    with seeded(seed):
        model = InterCLIP(config)
    return model.eval()


def lightning_state_dict(checkpoint: dict) -> dict:
    """The released file's ``state_dict`` with the LightningModule's ``model.`` prefix removed."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError("not an InterCLIP Lightning checkpoint: no 'state_dict' entry")
    return {key.removeprefix("model."): value for key, value in checkpoint["state_dict"].items()}


def load(checkpoint: Optional[str], preset: str = "official", seed: int = 0) -> tuple[InterCLIP, str]:
    """(model in eval mode, weights description): a checkpoint in the released ``interclip.ckpt``
    layout (the ``official`` preset is the released architecture), or seeded dummy weights."""
    if preset not in PRESETS:
        raise ValueError(f"unknown evaluator preset {preset!r}: use {', '.join(PRESETS)}")
    config = PRESETS[preset]
    if checkpoint is None:
        return build_dummy(config, seed), f"dummy, seed {seed}, preset {preset}"
    # fp16 copies of CLIP's embeddings would otherwise meet fp32 activations
    state = {k: v.float() for k, v in lightning_state_dict(read_state_dict(checkpoint)).items()}
    check_layout(state, meta_layout(lambda: InterCLIP(config)), str(checkpoint), f"InterCLIP ({preset})")
    return assigned(lambda: InterCLIP(config), state).eval(), weights_description(checkpoint, seed)
