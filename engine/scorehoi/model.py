"""ScoreHOI denoiser: epsilon prediction for one human-object state of 331 numbers.

x = [52 x 6 SMPL-H pose (6D) | 6 object rotation (6D) | 3 object translation | 10 betas scaled
to [-1, 1]]; the first 321 numbers and the 10 betas go through two separate branches and are
concatenated back.

Layer names, sizes and forward follow the public code of ``IPFC_Obj`` (RammusLeo/ScoreHOI,
``lib/models/denoising_model_attcond.py`` with blocks from ``lib/models/model_blocks.py``; sizes
from ``lib/core/config.py``: ``use_betas`` on, 3 pose blocks, 2 shape blocks, hidden 2048), so the
released ``diffusion.pth.tar`` (``['model_state_dict']``) loads with strict key matching.

Its attention runs on sequences of length one: the softmax over a single key is exactly 1, so
each ``AttentionCondEmb`` returns ``x + out_proj(W_v value_proj(x) + b_v)`` whatever the query.
The query is the only place the image and geometry features enter, so the output does not depend
on them at all. :func:`fold_scorehoi` replaces those paths by the single
equivalent affine map; the unfolded model stays the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from motionfleet.common.modules import items_of
from motionfleet.common.weights import assigned, check_layout, meta_layout, read_state_dict, seeded
from motionfleet.core.errors import RejectedInput

POSE_OBJECT_DIM = 52 * 6 + 6 + 3  # 321: pose, object rotation, object translation
BETAS_DIM = 10
STATE_DIM = POSE_OBJECT_DIM + BETAS_DIM  # 331
CHECKPOINT_KEY = "model_state_dict"


@dataclass(frozen=True)
class ScoreHOIConfig:
    """Sizes of ``IPFC_Obj``; the defaults are the released model's (about 362M parameters).

    ``condition_dim`` is both the image feature size (ProHMR-style 2048) and the width of the
    geometry embedding; ``geometry_input_dim`` is 64 object points x 3 plus a 1024-dim point
    feature. ``geometry_mid_dim`` is the public extractor's fixed 2048-wide second layer.
    """

    hidden_dim: int = 2048
    condition_dim: int = 2048
    geometry_input_dim: int = 64 * 3 + 1024
    geometry_hidden_dim: int = 4096
    geometry_mid_dim: int = 2048
    num_pose_blocks: int = 3
    num_shape_blocks: int = 2
    num_heads: int = 1


PRESETS = {
    "released": ScoreHOIConfig(),
    "small": ScoreHOIConfig(
        hidden_dim=64,
        condition_dim=32,
        geometry_input_dim=24,
        geometry_hidden_dim=48,
        geometry_mid_dim=40,
    ),
}


class SinusoidalEmbedding(nn.Module):
    """``SinusoidalPosEmb``: sin/cos of t at ``dim // 2`` frequencies, zero-padded to ``dim``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (B,) in the model's float dtype."""
        half = self.dim // 2
        # frequencies in float32 like the public code, whatever dtype the model runs in
        frequencies = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t[:, None] * frequencies[None, :].to(t.dtype)
        embedding = torch.cat((angles.sin(), angles.cos()), dim=-1)
        if self.dim % 2 == 1:
            embedding = torch.cat((embedding, torch.zeros_like(embedding[:, :1])), dim=-1)
        return embedding


class ConditionAttention(nn.Module):
    """``AttentionCondEmb``: x + attention(query from the condition, key and value from x).

    The public code unsqueezes (B, D) to a sequence of length 1, so the softmax weight is 1.
    """

    def __init__(self, dim: int, condition_dim: int, num_heads: int):
        super().__init__()
        self.query_proj = nn.Linear(condition_dim, dim)
        self.key_proj = nn.Linear(dim, dim)
        self.value_proj = nn.Linear(dim, dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        query = self.query_proj(condition).unsqueeze(0)
        key = self.key_proj(x).unsqueeze(0)
        value = self.value_proj(x).unsqueeze(0)
        attended, _ = self.attn(query, key, value, need_weights=False)
        return x + attended.squeeze(0)


class ConditionedMLP(nn.Module):
    """``AttnMLPBlock`` with ``is_ip``: LN, Linear, GELU, two condition attentions, Linear, LN, Linear, GELU."""

    def __init__(self, dim: int, hidden_dim: int, condition_dim: int, num_heads: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim)
        self.linear_layer1 = nn.Linear(dim, hidden_dim)
        self.attn_cond_emb = ConditionAttention(hidden_dim, condition_dim, num_heads)
        self.ip_attn_cond_emb = ConditionAttention(hidden_dim, condition_dim, num_heads)
        self.after_ip_attn = nn.Linear(hidden_dim, hidden_dim)
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.linear_layer2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x, geometry_embedding, image_embedding):
        h = self.act(self.linear_layer1(self.layer_norm1(x)))
        # public: attn(h, geometry) + ip_attn(h, image) * ip_scale, with ip_scale always 1.0
        h = self.attn_cond_emb(h, geometry_embedding) + self.ip_attn_cond_emb(h, image_embedding)
        h = self.after_ip_attn(h)
        return self.act(self.linear_layer2(self.layer_norm2(h)))


class ResidualBlock(nn.Module):
    """``AttnResMLPBlock`` with ``is_ip``: time scale/shift, then x + ConditionedMLP(x)."""

    def __init__(self, dim: int, time_dim: int, config: ScoreHOIConfig):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim))
        self.block = ConditionedMLP(dim, config.hidden_dim, config.condition_dim, config.num_heads)
        self.align_ip_cond = nn.Linear(config.condition_dim, config.condition_dim)

    def forward(self, x, time_embedding, geometry_embedding, image_features):
        scale, shift = self.mlp(time_embedding).chunk(2, dim=1)
        x = x * (scale + 1) + shift
        return x + self.block(x, geometry_embedding, self.align_ip_cond(image_features))


class GeometryEncoder(nn.Module):
    """``OBJFeatureExtractor`` in eval mode (dropout is the identity; batch norm uses running stats)."""

    def __init__(self, config: ScoreHOIConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.geometry_input_dim, config.geometry_hidden_dim)
        self.bn1 = nn.BatchNorm1d(config.geometry_hidden_dim)
        self.fc2 = nn.Linear(config.geometry_hidden_dim, config.geometry_mid_dim)
        self.bn2 = nn.BatchNorm1d(config.geometry_mid_dim)
        self.fc3 = nn.Linear(config.geometry_mid_dim, config.condition_dim)

    def forward(self, geometry_features: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.fc1(geometry_features)))
        h = torch.relu(self.bn2(self.fc2(h)))
        return self.fc3(h)


def time_mlp(dim: int) -> nn.Sequential:
    """Sinusoid of t, then Linear(dim, 4 dim), GELU, Linear(4 dim, 4 dim) (keys ``.1`` and ``.3``)."""
    return nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, 4 * dim))


def run_branch(x, t, time_net, init_mlp, blocks, final_mlp, block_conditions=()):
    """One branch of IPFC_Obj: init_mlp, the residual blocks under the time embedding, final_mlp."""
    time_embedding = time_net(t.to(x.dtype))
    h = init_mlp(x)
    for block in blocks:
        h = block(h, time_embedding, *block_conditions)
    return final_mlp(h)


class ScoreHOIDenoiser(nn.Module):
    """``IPFC_Obj`` with betas: (x_t, t, image features, geometry features) -> predicted noise."""

    def graph_spec(self):
        """What a backend runs: this module's graph inputs and call convention."""
        from motionfleet.scorehoi.graphs import scorehoi_graph

        return scorehoi_graph(self)

    def __init__(self, config: ScoreHOIConfig):
        super().__init__()
        self.time_mlp = time_mlp(POSE_OBJECT_DIM)
        self.init_mlp = nn.Linear(POSE_OBJECT_DIM, POSE_OBJECT_DIM)
        self.blocks = nn.ModuleList(
            ResidualBlock(POSE_OBJECT_DIM, 4 * POSE_OBJECT_DIM, config) for _ in range(config.num_pose_blocks)
        )
        self.final_mlp = nn.Linear(POSE_OBJECT_DIM, POSE_OBJECT_DIM)
        self.time_mlp_betas = time_mlp(BETAS_DIM)
        self.init_mlp_betas = nn.Linear(BETAS_DIM, BETAS_DIM)
        self.blocks_betas = nn.ModuleList(
            ResidualBlock(BETAS_DIM, 4 * BETAS_DIM, config) for _ in range(config.num_shape_blocks)
        )
        self.final_mlp_betas = nn.Linear(BETAS_DIM, BETAS_DIM)
        self.geo_cond_embedding_feat = GeometryEncoder(config)

    def forward(self, x_t, t, image_features, geometry_features):
        """x_t (B, 331), t (B,), image_features (B, condition_dim), geometry_features (B, ...)
        flattened to (B, geometry_input_dim) -> epsilon (B, 331)."""
        geometry_embedding = self.geo_cond_embedding_feat(geometry_features.reshape(len(x_t), -1))
        conditions = (geometry_embedding, image_features)
        pose_object = run_branch(
            x_t[:, :POSE_OBJECT_DIM], t, self.time_mlp, self.init_mlp, self.blocks, self.final_mlp, conditions
        )
        betas = run_branch(
            x_t[:, POSE_OBJECT_DIM:], t, self.time_mlp_betas, self.init_mlp_betas,
            self.blocks_betas, self.final_mlp_betas, conditions,
        )
        return torch.cat((pose_object, betas), dim=1)


# --- folding -------------------------------------------------------------------------------


class FoldedResidualBlock(nn.Module):
    """ResidualBlock with both attention paths and ``after_ip_attn`` as one Linear."""

    def __init__(self, block: ResidualBlock, attention_affine: nn.Linear):
        super().__init__()
        inner = block.block
        self.mlp = block.mlp
        self.layer_norm1 = inner.layer_norm1
        self.linear_layer1 = inner.linear_layer1
        self.attention_affine = attention_affine
        self.layer_norm2 = inner.layer_norm2
        self.linear_layer2 = inner.linear_layer2
        self.act = nn.GELU()

    def forward(self, x, time_embedding):
        scale, shift = self.mlp(time_embedding).chunk(2, dim=1)
        x = x * (scale + 1) + shift
        h = self.act(self.linear_layer1(self.layer_norm1(x)))
        h = self.attention_affine(h)
        return x + self.act(self.linear_layer2(self.layer_norm2(h)))


def attention_as_affine(attention: ConditionAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with h + attention(h, any condition) = W h + b.

    Softmax over one key is 1, so attn(q, k, v) = out_proj(W_v v + b_v) with v = value_proj(h);
    the query and key projections drop out.
    """
    dim = attention.value_proj.out_features
    w_v = attention.attn.in_proj_weight[2 * dim :]
    b_v = attention.attn.in_proj_bias[2 * dim :]
    w_o, b_o = attention.attn.out_proj.weight, attention.attn.out_proj.bias
    identity = torch.eye(dim, dtype=w_v.dtype, device=w_v.device)
    weight = identity + w_o @ w_v @ attention.value_proj.weight
    bias = w_o @ (w_v @ attention.value_proj.bias + b_v) + b_o
    return weight, bias


def fold_block(block: ResidualBlock) -> FoldedResidualBlock:
    """after_ip_attn(attn(h) + ip_attn(h)) as one Linear(hidden, hidden)."""
    inner = block.block
    with torch.no_grad():
        w_geometry, b_geometry = attention_as_affine(inner.attn_cond_emb)
        w_image, b_image = attention_as_affine(inner.ip_attn_cond_emb)
        after = inner.after_ip_attn
        weight = after.weight @ (w_geometry + w_image)
        bias = after.weight @ (b_geometry + b_image) + after.bias
        affine = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        affine.weight.copy_(weight)
        affine.bias.copy_(bias)
    return FoldedResidualBlock(block, affine)


class FoldedScoreHOIDenoiser(nn.Module):
    """The same function as :class:`ScoreHOIDenoiser` without the dead condition paths.

    Takes the same arguments so it drops in for the unfolded model; the image and geometry
    features are accepted and unused, because the unfolded model's output does not depend on them.
    """

    def graph_spec(self):
        """What a backend runs: this module's graph inputs and call convention."""
        from motionfleet.scorehoi.graphs import scorehoi_folded_graph

        return scorehoi_folded_graph(self)

    def __init__(self, model: ScoreHOIDenoiser,
                 fold: Callable[[ResidualBlock], FoldedResidualBlock] = fold_block):
        super().__init__()
        self.time_mlp = model.time_mlp
        self.init_mlp = model.init_mlp
        self.blocks = nn.ModuleList(fold(block) for block in items_of(model.blocks, ResidualBlock))
        self.final_mlp = model.final_mlp
        self.time_mlp_betas = model.time_mlp_betas
        self.init_mlp_betas = model.init_mlp_betas
        self.blocks_betas = nn.ModuleList(fold(block) for block in items_of(model.blocks_betas, ResidualBlock))
        self.final_mlp_betas = model.final_mlp_betas

    def forward(self, x_t, t, image_features=None, geometry_features=None):
        pose_object = run_branch(
            x_t[:, :POSE_OBJECT_DIM], t, self.time_mlp, self.init_mlp, self.blocks, self.final_mlp
        )
        betas = run_branch(
            x_t[:, POSE_OBJECT_DIM:], t, self.time_mlp_betas, self.init_mlp_betas,
            self.blocks_betas, self.final_mlp_betas,
        )
        return torch.cat((pose_object, betas), dim=1)


def fold_scorehoi(model: ScoreHOIDenoiser) -> FoldedScoreHOIDenoiser:
    """The exact folded equivalent of ``model``, which is left unchanged: the layers the fold does
    not change are ``model``'s own, shared, not copied (copies took 1.1 s of the 3.9 s fold of the
    released size on 2 CPU cores, and held a second copy of them while both models lived)."""
    return FoldedScoreHOIDenoiser(model).eval()


def folded_layout(config: ScoreHOIConfig) -> FoldedScoreHOIDenoiser:
    """The folded denoiser of ``config`` on the meta device, its weights not computed: what a stored
    fold (``scorehoi.fold_cache``) is loaded into."""

    def unfolded_block(block: ResidualBlock) -> FoldedResidualBlock:
        hidden = block.block.after_ip_attn.in_features
        return FoldedResidualBlock(block, nn.Linear(hidden, hidden))

    with torch.device("meta"):
        return FoldedScoreHOIDenoiser(ScoreHOIDenoiser(config), unfolded_block).eval()


# --- building, loading, measuring ----------------------------------------------------------


def build_model(config: ScoreHOIConfig = PRESETS["released"], seed: int = 0) -> ScoreHOIDenoiser:
    """Seeded dummy weights (PyTorch's default init); the same seed gives the same weights."""
    with seeded(seed):
        model = ScoreHOIDenoiser(config)
    return model.eval()


def expected_layout(config: ScoreHOIConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict for ``config``, computed on the meta device (no memory)."""
    return meta_layout(lambda: ScoreHOIDenoiser(config))


def load_released_checkpoint(path, config: ScoreHOIConfig = PRESETS["released"]):
    """(model, config) from ScoreHOI's ``diffusion.pth.tar`` (``['model_state_dict']``), strict keys.

    Built on the meta device and filled by assignment, so the released 362M parameters are
    allocated once.
    """
    state_dict = released_state_dict(path, config)
    return assigned(lambda: ScoreHOIDenoiser(config), state_dict).eval(), config


def released_state_dict(path, config: ScoreHOIConfig, mmap: bool = False) -> dict:
    """The ``model_state_dict`` of ScoreHOI's checkpoint, its keys and shapes checked against ``config``."""
    checkpoint = read_state_dict(path, mmap=mmap)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
        raise RejectedInput(f"{path} has no '{CHECKPOINT_KEY}' entry; expected ScoreHOI's diffusion.pth.tar")
    state_dict = checkpoint[CHECKPOINT_KEY]
    check_layout(state_dict, expected_layout(config), str(path), "ScoreHOI IPFC_Obj")
    return state_dict


def probe_released_checkpoint(path, config: ScoreHOIConfig) -> None:
    """The checks of :func:`load_released_checkpoint` on the memory-mapped file, nothing built:
    the driver's, so that a wrong file is one line before a job folder is written."""
    if path is not None:
        released_state_dict(path, config, mmap=True)


def example_inputs(config: ScoreHOIConfig, batch_size: int, device="cpu", dtype=torch.float32, seed: int = 0):
    """Random (x_t, t, image_features, geometry_features) with the shapes the denoiser takes."""
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch_size, STATE_DIM, generator=generator, dtype=dtype)
    t = torch.randint(0, 1000, (batch_size,), generator=generator)
    image_features = torch.randn(batch_size, config.condition_dim, generator=generator, dtype=dtype)
    geometry_features = torch.randn(batch_size, config.geometry_input_dim, generator=generator, dtype=dtype)
    return tuple(tensor.to(device) for tensor in (x_t, t, image_features, geometry_features))


def parameter_and_flop_count(model: nn.Module, config: ScoreHOIConfig) -> tuple[int, int]:
    """(parameters, FLOPs of one forward for one sample) as torch's FlopCounterMode counts them.

    Works on meta-device models, so the released sizes cost no memory.
    """
    parameters = sum(p.numel() for p in model.parameters())
    reference = next(model.parameters())
    inputs = example_inputs(config, batch_size=1, device=reference.device, dtype=reference.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return parameters, counter.get_total_flops()


def load_model(checkpoint: str | None = None, preset: str = "released", seed: int = 0):
    """(model, weights description) from dummy weights of ``preset`` or ScoreHOI's released
    ``diffusion.pth.tar`` (read with the layout of ``preset``)."""
    from motionfleet.common.weights import weights_description

    if checkpoint is None:
        return build_model(PRESETS[preset], seed), weights_description(None, seed)
    return load_released_checkpoint(checkpoint, PRESETS[preset])[0], weights_description(checkpoint, seed)
