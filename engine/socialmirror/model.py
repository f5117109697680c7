"""SocialMirror denoiser: two people, 16 frames each, x0 prediction, with a text ControlNet.

State per sample: (2, L, 157) = per person and frame 144 pose numbers (24 joints in 6D), 10 SMPL
betas and 3 camera-translation numbers (CloseInt's crop camera s, tx, ty). CloseInt diffuses the
offset from an initial estimate (centre = init pose, zero betas, camera (0.9, 0, 0): ``diffusion_centre``); the network
maps x_t to x0 in whatever space x_t is given, so adding and removing that mean is the sampler's job.

The base branch follows CloseInt's ``interhuman_diffusion_phys`` (boycehbz/HumanInteraction,
``demo_module/CloseInt/model/interhuman_diffusion{,_phys}.py``, ``model/utils.py``
(PositionalEncoding, TimestepEmbedder) and ``demo/CloseInt/model/layers.py`` (AdaLN,
VanillaSelfAttention, VanillaCrossAttention, FFN)); its ``blocks.py`` is not in the public index,
and the call ``block(h_a, h_b, emb, mask)`` with these layers matches InterGen's ``TransformerBlock``
(sa_block, ca_block, ffn), which we follow. Names and sizes match so CloseInt's released
``checkpoint_non_phys.pkl`` (``['model']``) loads strictly into the base branch.

The ControlNet (SocialMirror supplementary, eq. 9) is a trainable copy of the base blocks fed the
per-person text feature through a zero-initialised linear layer, with one zero-initialised linear
layer after each copied block whose output is added to the base block's output. Its names follow a
public CloseInt fork with a ControlNet (PolarisXQ/closeinteraction, ``model/cinterhuman_diffusion_phys.py``:
``net.*`` base, ``control_net.blocks``, ``control_net.text_project``, ``control_net.mid_zero_linear``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from motionfleet.common.modules import items_of
from motionfleet.common.weights import assigned, check_layout, meta_layout, read_state_dict, seeded
from motionfleet.core.errors import RejectedInput

POSE_DIM = 24 * 6
SHAPE_DIM = 10
CAMERA_DIM = 3
MOTION_DIM = POSE_DIM + SHAPE_DIM + CAMERA_DIM  # 157
BBOX_DIM = 3
NUM_PEOPLE = 2
CHECKPOINT_KEY = "model"
# Keys of CloseInt's released module that are not part of the denoiser: the SMPL body model it
# carries as a submodule (``smpl.pose``, ``smpl.shape``, ``smpl.name``) and the zero-initialised
# ``out`` FinalLayer, which its inference never calls.
UNUSED_RELEASED_PREFIXES = ("smpl.", "out.")


@dataclass(frozen=True)
class SocialMirrorConfig:
    """Sizes; the defaults are CloseInt's released model plus SocialMirror's ControlNet.

    ``text_feature_dim``: the per-person text feature the ControlNet's first zero linear layer
    projects to the latent width (the paper's F_text = 256). 768 is what the engine's text
    encoders emit (CLIP ViT-L/14, or MiniLM's 384 projected to 768); the public fork feeds CLIP
    ViT-B/32 features, so 512 there. The paper does not give this number.
    """

    latent_dim: int = 256
    num_layers: int = 4
    num_heads: int = 8
    ff_size: int = 512
    image_feature_dim: int = 1024
    text_feature_dim: int = 768
    frames: int = 16
    max_positions: int = 5000


PRESETS = {
    "released": SocialMirrorConfig(),
    "small": SocialMirrorConfig(
        latent_dim=32, num_layers=2, num_heads=4, ff_size=64, image_feature_dim=48, text_feature_dim=24
    ),
}


# --- CloseInt layers -----------------------------------------------------------------------


def sinusoid_table(max_positions: int, dim: int) -> torch.Tensor:
    """CloseInt's PositionalEncoding table, computed in float32 as the public code does."""
    position = torch.arange(0, max_positions, dtype=torch.float).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    table = torch.zeros(max_positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class PositionalEncoding(nn.Module):
    """Adds the sinusoid of the frame index; its table also embeds the timestep."""

    pe: torch.Tensor  # (max_positions, dim), a registered buffer

    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_positions, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.pe[: h.shape[-2]]


class TimestepEmbedder(nn.Module):
    """MLP of the sinusoid table's row t; holds the shared PositionalEncoding, as the public code does."""

    def __init__(self, dim: int, positional_encoding: PositionalEncoding):
        super().__init__()
        self.sequence_pos_encoder = positional_encoding
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_embed(self.sequence_pos_encoder.pe[t])


class AdaLN(nn.Module):
    """LayerNorm without affine, scaled and shifted per frame by the condition embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, h, emb):
        scale, shift = self.emb_layers(emb).chunk(2, dim=-1)
        return self.norm(h) * (1 + scale) + shift


def attention(dim: int, num_heads: int) -> nn.MultiheadAttention:
    """CloseInt's attention: batch first, one extra all-zero key/value (add_zero_attn), no dropout at inference."""
    return nn.MultiheadAttention(dim, num_heads, batch_first=True, add_zero_attn=True)


class SelfAttention(nn.Module):
    """SA of eqs. 4-5: queries, keys and values from the own branch."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm = AdaLN(dim)
        self.attention = attention(dim, num_heads)

    def forward(self, h, emb):
        h_norm = self.norm(h, emb)
        return self.attention(h_norm, h_norm, h_norm, need_weights=False)[0]


class CrossAttention(nn.Module):
    """CA of eqs. 6-7: queries from the own branch, keys and values from the other person's."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm = AdaLN(dim)
        self.xf_norm = AdaLN(dim)
        self.attention = attention(dim, num_heads)

    def forward(self, h, h_other, emb):
        h_norm = self.norm(h, emb)
        other_norm = self.xf_norm(h_other, emb)
        return self.attention(h_norm, other_norm, other_norm, need_weights=False)[0]


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_size: int):
        super().__init__()
        self.norm = AdaLN(dim)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.activation = nn.GELU()

    def forward(self, h, emb):
        return self.linear2(self.activation(self.linear1(self.norm(h, emb))))


class TransformerBlock(nn.Module):
    """One block of eq. 8. The paper writes LayerNorm(h + SA + CA); the released code applies
    SA, CA and FFN one after another, each with an AdaLN pre-norm and a residual, and so do we."""

    def __init__(self, config: SocialMirrorConfig):
        super().__init__()
        self.sa_block = SelfAttention(config.latent_dim, config.num_heads)
        self.ca_block = CrossAttention(config.latent_dim, config.num_heads)
        self.ffn = FeedForward(config.latent_dim, config.ff_size)

    def forward(self, h, h_other, emb):
        h = h + self.sa_block(h, emb)
        h = h + self.ca_block(h, h_other, emb)
        return h + self.ffn(h, emb)


def apply_shared_block(block: TransformerBlock, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Both branches through one block with the same weights (eqs. 4-8).

    h, emb: (B, 2, L, D). Person a attends to b's previous hidden state and b to a's; the two
    branches run as one batch of 2B sequences.
    """
    batch, people, frames, dim = h.shape
    h_self = h.reshape(batch * people, frames, dim)
    h_other = h.flip(1).reshape(batch * people, frames, dim)
    out = block(h_self, h_other, emb.reshape(batch * people, frames, -1))
    return out.reshape(batch, people, frames, dim)


# --- base branch (CloseInt) ----------------------------------------------------------------


def output_head(dim: int, out_dim: int) -> nn.Sequential:
    """LayerNorm and Linear over [hidden state | bbox]."""
    return nn.Sequential(nn.LayerNorm(dim + BBOX_DIM), nn.Linear(dim + BBOX_DIM, out_dim))


class CloseIntDenoiser(nn.Module):
    """CloseInt's denoiser: (x_t, t, image features, bbox) -> x0, everything shaped (B, 2, L, .)."""

    def __init__(self, config: SocialMirrorConfig):
        super().__init__()
        dim = config.latent_dim
        condition_dim = config.image_feature_dim + BBOX_DIM
        self.sequence_pos_encoder = PositionalEncoding(dim, config.max_positions)
        self.embed_timestep = TimestepEmbedder(dim, self.sequence_pos_encoder)
        self.motion_embed = nn.Linear(MOTION_DIM, dim)
        self.feature_embed = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.project = nn.Sequential(nn.LayerNorm(condition_dim), nn.Linear(condition_dim, dim))
        self.head = output_head(dim, POSE_DIM)
        self.shape_head = output_head(dim, SHAPE_DIM)
        self.cam_head = output_head(dim, CAMERA_DIM)

    def condition(self, t, image_features, bbox):
        """Per-frame condition embedding: timestep embedding + embedded image feature and bbox."""
        image = self.project(torch.cat((image_features, bbox), dim=-1))
        return self.embed_timestep(t)[:, None, None, :] + self.feature_embed(image)

    def embed_motion(self, x_t):
        """h^0: motion embedding plus frame positional encoding."""
        return self.sequence_pos_encoder(self.motion_embed(x_t))

    def run_blocks(self, h, emb, block_residuals=None):
        """The N shared-weight blocks; ``block_residuals[i]`` is added to block i's output (eq. 9)."""
        for index, block in enumerate(items_of(self.blocks, TransformerBlock)):
            h = apply_shared_block(block, h, emb)
            if block_residuals is not None:
                h = h + block_residuals[index]
        return h

    def predict(self, h, bbox):
        """x0 = [pose | betas | camera] from the last hidden state and the bbox."""
        features = torch.cat((h, bbox), dim=-1)
        return torch.cat((self.head(features), self.shape_head(features), self.cam_head(features)), dim=-1)

    def forward(self, x_t, t, image_features, bbox):
        """x_t (B, 2, L, 157), t (B,) integer in [0, 100), image_features (B, 2, L, image_feature_dim),
        bbox (B, 2, L, 3) CloseInt's normalised bbox_info -> x0 (B, 2, L, 157)."""
        emb = self.condition(t, image_features, bbox)
        return self.predict(self.run_blocks(self.embed_motion(x_t), emb), bbox)


# --- ControlNet and the full model ---------------------------------------------------------


def zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class TextControlNet(nn.Module):
    """Eq. 9: Z(T(h^0 + Z(F_text; Θz1), F_img; Θc); Θz2) for every block, as block residuals."""

    def __init__(self, base_blocks: nn.ModuleList, config: SocialMirrorConfig):
        super().__init__()
        self.blocks = copy.deepcopy(base_blocks)
        self.text_project = zero_linear(config.text_feature_dim, config.latent_dim)
        self.mid_zero_linear = nn.ModuleList(
            zero_linear(config.latent_dim, config.latent_dim) for _ in range(config.num_layers)
        )

    def forward(self, h, emb, text_features):
        """h (B, 2, L, D) = h^0, emb (B, 2, L, D), text_features (B, 2, text_dim) -> N residuals."""
        h = h + self.text_project(text_features)[:, :, None, :]
        residuals = []
        for block, zero_layer in zip(items_of(self.blocks, TransformerBlock), self.mid_zero_linear):
            h = apply_shared_block(block, h, emb)
            residuals.append(zero_layer(h))
        return residuals


class SocialMirrorDenoiser(nn.Module):
    """CloseInt base branch (``net``) plus the text ControlNet (``control_net``)."""

    def graph_spec(self):
        """What a backend runs: this module's graph inputs and call convention."""
        from motionfleet.socialmirror.graphs import socialmirror_graph

        return socialmirror_graph(self)

    def __init__(self, config: SocialMirrorConfig, net: CloseIntDenoiser | None = None):
        super().__init__()
        self.config = config
        self.net = net if net is not None else CloseIntDenoiser(config)
        self.control_net = TextControlNet(self.net.blocks, config)

    def forward(self, x_t, t, image_features, bbox, text_features=None):
        """As :meth:`CloseIntDenoiser.forward`, plus text_features (B, 2, text_feature_dim), one
        per person; absent text is the empty-text feature, zeros."""
        if text_features is None:
            text_features = x_t.new_zeros(x_t.shape[0], NUM_PEOPLE, self.config.text_feature_dim)
        emb = self.net.condition(t, image_features, bbox)
        h = self.net.embed_motion(x_t)
        residuals = self.control_net(h, emb, text_features)
        return self.net.predict(self.net.run_blocks(h, emb, residuals), bbox)


# --- building and loading ------------------------------------------------------------------


def build_model(config: SocialMirrorConfig = PRESETS["released"], seed: int = 0) -> SocialMirrorDenoiser:
    """Seeded dummy weights; the same seed gives the same weights.

    Every base layer gets PyTorch's default random init, including those CloseInt zero-initialises
    for training (AdaLN modulation, FFN output): zero there would make dummy outputs ignore t and
    the image. The ControlNet starts as a copy of the base blocks with zero linear layers (eq. 9).
    """
    with seeded(seed):
        model = SocialMirrorDenoiser(config)
    return model.eval()


def expected_layout(config: SocialMirrorConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the base branch's state dict, computed on the meta device."""
    return meta_layout(lambda: CloseIntDenoiser(config))


def denoiser_keys(state_dict: dict) -> dict:
    """The released state dict without the keys listed in UNUSED_RELEASED_PREFIXES."""
    return {key: value for key, value in state_dict.items() if not key.startswith(UNUSED_RELEASED_PREFIXES)}


def load_released_checkpoint(path, config: SocialMirrorConfig = PRESETS["released"]):
    """(model, config) with CloseInt's ``checkpoint_non_phys.pkl`` (``['model']``) in the base branch.

    Every denoiser key must be present with its shape and nothing else may be (strict); the
    ControlNet starts as a copy of the loaded blocks with zero linear layers, so the model's
    output equals CloseInt's until ControlNet weights are trained.
    """
    state_dict = released_state_dict(path, config)
    return SocialMirrorDenoiser(config, assigned(lambda: CloseIntDenoiser(config), state_dict)).eval(), config


def released_state_dict(path, config: SocialMirrorConfig, mmap: bool = False) -> dict:
    """The denoiser keys of CloseInt's ``['model']``, their names and shapes checked against ``config``."""
    checkpoint = read_state_dict(path, mmap=mmap)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
        raise RejectedInput(f"{path} has no '{CHECKPOINT_KEY}' entry; expected CloseInt's checkpoint_non_phys.pkl")
    state_dict = denoiser_keys(checkpoint[CHECKPOINT_KEY])
    check_layout(state_dict, expected_layout(config), str(path), "CloseInt denoiser")
    return state_dict


def probe_model(checkpoint: str | None) -> None:
    """The checks of :func:`load_model` without loading the tensors (a folder's header and config,
    a released file memory-mapped): the driver's, so that a wrong file is one line before a job
    folder is written."""
    from motionfleet.common.weights import checked_config, is_model_folder, probe_checkpoint

    if checkpoint is None:
        return
    if is_model_folder(checkpoint):
        probe_checkpoint(checkpoint, lambda saved: checked_config(SocialMirrorConfig, saved, checkpoint))
    else:
        released_state_dict(checkpoint, PRESETS["released"], mmap=True)


def example_inputs(config: SocialMirrorConfig, batch_size: int, dtype=torch.float32, seed: int = 0):
    """Random (x_t, t, image_features, bbox, text_features) with the shapes the denoiser takes."""
    generator = torch.Generator().manual_seed(seed)
    per_frame = (batch_size, NUM_PEOPLE, config.frames)
    x_t = torch.randn(*per_frame, MOTION_DIM, generator=generator, dtype=dtype)
    t = torch.randint(0, 100, (batch_size,), generator=generator)
    image_features = torch.randn(*per_frame, config.image_feature_dim, generator=generator, dtype=dtype)
    bbox = torch.randn(*per_frame, BBOX_DIM, generator=generator, dtype=dtype)
    text_features = torch.randn(batch_size, NUM_PEOPLE, config.text_feature_dim, generator=generator, dtype=dtype)
    return x_t, t, image_features, bbox, text_features


def load_model(checkpoint: str | None = None, preset: str = "released", seed: int = 0):
    """(model, weights description) from dummy weights of ``preset``, our model folder
    (``model.safetensors`` + ``config.json``) or CloseInt's released checkpoint."""
    from motionfleet.common.weights import build_checked, checked_config, is_model_folder, load_model_folder, weights_description

    if checkpoint is None:
        model = build_model(PRESETS[preset], seed)
    elif is_model_folder(checkpoint):
        state, saved = load_model_folder(checkpoint)
        config = checked_config(SocialMirrorConfig, saved, checkpoint)
        model = build_checked(lambda: SocialMirrorDenoiser(config), state, checkpoint, "socialmirror")
        model.load_state_dict(state, strict=True)
        model.eval()
    else:
        model = load_released_checkpoint(checkpoint)[0]
    return model, weights_description(checkpoint, seed)
