"""The plain ViT backbone of ViTPose, as HMR 2.0 (4D-Humans) uses it.

Follows ``hmr2/models/backbones/vit.py`` of shubham-goel/4D-Humans (a copy of ViTPose's, without
its unused classification parts); names and shapes match its state dict (``patch_embed.proj``,
``pos_embed``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``last_norm``).
Differences from a textbook ViT (and from timm's, which is why this is written out): the patch
convolution pads 2 pixels (a 256 x 192 image gives 16 x 12 patches and the last 2 pixel rows and
columns are never seen), there is no class token but the class token's position embedding is
added to every patch's (``pos_embed[:, 1:] + pos_embed[:, :1]``), the final norm is ``last_norm``,
and LayerNorms use eps 1e-6.

The patch embedding runs as unfold + matrix product (the same arithmetic as the convolution):
its rows are then ``batch x patches``, a multiple of 4 for the released grid, so a crop's bits do
not depend on the batch it is in (``core/runtime/batching.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PATCH_PADDING = 2  # ViTPose's ``padding=4 + 2 * (ratio // 2 - 1)`` with ratio 1
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    """ViT-H of 4D-Humans' ``vit()``: 256 x 192 input, patch 16, width 1280, depth 32, 16 heads."""

    image_height: int = 256
    image_width: int = 192
    patch_size: int = 16
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: int = 4

    @property
    def grid(self) -> tuple[int, int]:
        """Patches (rows, columns): the padded convolution's output size."""
        size = lambda n: (n + 2 * PATCH_PADDING - self.patch_size) // self.patch_size + 1
        return size(self.image_height), size(self.image_width)


class PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(3, config.embed_dim, kernel_size=p, stride=p, padding=PATCH_PADDING)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, patches, embed_dim), patches in row-major order."""
        p = self.proj.kernel_size[0]
        columns = F.unfold(images, p, padding=PATCH_PADDING, stride=p).transpose(1, 2)
        bias = self.proj.bias
        assert bias is not None  # the released patch embedding has one
        return columns @ self.proj.weight.flatten(1).t() + bias


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)); drop path is off at inference."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, dim * config.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """(B, 3, image_height, image_width) normalised images -> (B, patches, embed_dim) tokens
    (4D-Humans returns them as a (B, C, 16, 12) map that its head flattens back to these tokens)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        rows, columns = config.grid
        self.patch_embed = PatchEmbed(config)
        self.pos_embed = nn.Parameter(torch.zeros(1, rows * columns + 1, config.embed_dim))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.last_norm = nn.LayerNorm(config.embed_dim, eps=LAYER_NORM_EPS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images) + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            x = block(x)
        return self.last_norm(x)
