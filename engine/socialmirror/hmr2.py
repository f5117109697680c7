"""HMR 2.0 (Goel et al., "Humans in 4D", ICCV 2023): a ViT-H on the person crop and a transformer
decoder head regressing SMPL, loading 4D-Humans' released ``epoch=35-step=1000000.ckpt``.

Follows shubham-goel/4D-Humans ``hmr2/models/hmr2.py`` (forward_step), ``heads/smpl_head.py``
(SMPLTransformerDecoderHead), ``components/pose_transformer.py`` (TransformerDecoder,
TransformerCrossAttn, Attention, CrossAttention, FeedForward) and the experiment config
``configs_hydra/experiment/hmr_vit_transformer.yaml`` (decoder depth 6, 8 heads of 64, MLP 1024,
width 1024, context 1280), as vendored by CloseInt's demo (boycehbz/HumanInteraction
``demo_module/hmr2``), whose head also returns the last decoder token as ``feature`` (1024-d):
the image condition CloseInt's diffusion takes.

Forward on a (B, 3, 256, 256) normalised crop: the ViT sees its middle 256 x 192 columns
(``x[:, :, :, 32:-32]``); one decoder token (a zero scalar embedded by ``to_token_embedding``,
TRANSFORMER_INPUT 'zero') attends to the 192 image tokens; one IEF iteration (IEF_ITERS 1) adds
``decpose / decshape / deccam`` of the token to the SMPL mean parameters (buffers ``init_body_pose``
(144, 6D), ``init_betas``, ``init_cam``); the 6D of each of the 24 joints becomes a rotation matrix
by Gram-Schmidt with the two 3-vectors as COLUMNS (``rot6d_to_rotmat``), the transpose of
``common.rotations.rotation_6d_to_matrix`` (rows).

The released checkpoint is a PyTorch Lightning file: the weights are ``['state_dict']`` under
``backbone.`` and ``smpl_head.``; its other keys (``smpl.*``, the SMPL layer's buffers and
parameters; ``discriminator.*``; the ``initialized`` flag) are ignored. Lightning also pickles the
yacs config (``['hyper_parameters']['cfg']``, a ``yacs.config.CfgNode``), which
``torch.load(weights_only=True)`` refuses: that one class name is read as a plain OrderedDict
(:func:`released_globals`), so nothing of the file's code runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, cast

import torch
from torch import nn

from motionfleet.common.rotations import rotation_6d_to_matrix
from motionfleet.common.vit import ViT, ViTConfig
from motionfleet.common.weights import assigned, check_layout, meta_layout, read_state_dict, seeded
from motionfleet.core.errors import RejectedInput, UnsafeCheckpoint, checkpoint_errors
from motionfleet.socialmirror.initial_estimate import MEAN_CAMERA, mean_estimate
from motionfleet.socialmirror.model import POSE_DIM, SHAPE_DIM

CAMERA_DIM = 3
USED_PREFIXES = ("backbone.", "smpl_head.")
RELEASED_FILE = "epoch=35-step=1000000.ckpt"
VIT_INPUT_COLUMNS = slice(32, -32)  # forward_step: self.backbone(x[:, :, :, 32:-32])


@dataclass(frozen=True)
class HMR2Config:
    """Sizes; the defaults are the released model (ViT-H backbone, 6-layer decoder of width 1024)."""

    vit: ViTConfig = field(default_factory=ViTConfig)
    decoder_dim: int = 1024
    decoder_depth: int = 6
    decoder_heads: int = 8
    decoder_head_dim: int = 64
    decoder_mlp_dim: int = 1024


PRESETS = {
    "released": HMR2Config(),
    "tiny": HMR2Config(vit=ViTConfig(embed_dim=64, depth=2, num_heads=2), decoder_dim=48, decoder_depth=2,
                       decoder_heads=2, decoder_head_dim=16, decoder_mlp_dim=64),
}


# --- the decoder head (pose_transformer.py) -----------------------------------------------------


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``; the cross-attention's context is not normalised."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


def heads_first(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, back to (B, N, heads * d). Written out as the public code
    does: CPU ``scaled_dot_product_attention`` of one query gave a row other bits at another
    position in the batch (measured), these batched products do not."""
    q, k, v = (heads_first(t, heads) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, config: HMR2Config):
        super().__init__()
        inner = config.decoder_heads * config.decoder_head_dim
        self.heads = config.decoder_heads
        self.to_qkv = nn.Linear(config.decoder_dim, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, config.decoder_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        return self.to_out(attend(q, k, v, self.heads))


class CrossAttention(nn.Module):
    def __init__(self, config: HMR2Config):
        super().__init__()
        inner = config.decoder_heads * config.decoder_head_dim
        self.heads = config.decoder_heads
        self.to_kv = nn.Linear(config.vit.embed_dim, 2 * inner, bias=False)
        self.to_q = nn.Linear(config.decoder_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, config.decoder_dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return self.to_out(attend(self.to_q(x), k, v, self.heads))


class FeedForward(nn.Module):
    def __init__(self, config: HMR2Config):
        super().__init__()
        dim, hidden = config.decoder_dim, config.decoder_mlp_dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttentionLayers(nn.Module):
    """TransformerCrossAttn: per layer x += SA(x), x += CA(x, context), x += FF(x), each pre-normed."""

    def __init__(self, config: HMR2Config):
        super().__init__()
        dim = config.decoder_dim
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, SelfAttention(config)), PreNorm(dim, CrossAttention(config)),
                           PreNorm(dim, FeedForward(config))])
            for _ in range(config.decoder_depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            self_attention, cross_attention, feed_forward = cast(nn.ModuleList, layer)
            x = self_attention(x) + x
            x = cross_attention(x, context=context) + x
            x = feed_forward(x) + x
        return x


class TransformerDecoder(nn.Module):
    """One query token: ``to_token_embedding`` of a zero scalar plus ``pos_embedding``."""

    def __init__(self, config: HMR2Config):
        super().__init__()
        self.to_token_embedding = nn.Linear(1, config.decoder_dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, 1, config.decoder_dim))
        self.transformer = CrossAttentionLayers(config)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """(B, N, C) image tokens -> (B, decoder_dim) the token after the last layer."""
        token = self.to_token_embedding(context.new_zeros(len(context), 1, 1)) + self.pos_embedding
        return self.transformer(token, context).squeeze(1)


class SMPLHead(nn.Module):
    """SMPLTransformerDecoderHead with one IEF iteration."""

    def __init__(self, config: HMR2Config):
        super().__init__()
        self.transformer = TransformerDecoder(config)
        self.decpose = nn.Linear(config.decoder_dim, POSE_DIM)
        self.decshape = nn.Linear(config.decoder_dim, SHAPE_DIM)
        self.deccam = nn.Linear(config.decoder_dim, CAMERA_DIM)
        mean = mean_estimate()  # replaced by the checkpoint's smpl_mean_params.npz values
        self.register_buffer("init_body_pose", mean[None, :POSE_DIM].clone())
        self.register_buffer("init_betas", torch.zeros(1, SHAPE_DIM))
        self.register_buffer("init_cam", torch.tensor([MEAN_CAMERA]))

    def forward(self, tokens: torch.Tensor) -> "HMR2Output":
        return HMR2Output.of_regression(*self.regress(tokens))

    def regress(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, C) image tokens -> feature (B, decoder_dim), 6D pose (B, 144), betas (B, 10), camera (B, 3)."""
        feature = self.transformer(tokens)
        return (feature, self.decpose(feature) + self.init_body_pose, self.decshape(feature) + self.init_betas,
                self.deccam(feature) + self.init_cam)


# The regression's widths after the feature, in the order ``SMPLHead.regress`` returns them.
REGRESSION_DIMS = (POSE_DIM, SHAPE_DIM, CAMERA_DIM)


@dataclass
class HMR2Output:
    """Per crop: ``feature`` (B, decoder_dim) CloseInt's image condition, ``rotations`` (B, 24, 3, 3)
    global orient then body pose, ``betas`` (B, 10), ``camera`` (B, 3) the crop camera (s, tx, ty)."""

    feature: torch.Tensor
    rotations: torch.Tensor
    betas: torch.Tensor
    camera: torch.Tensor

    @classmethod
    def of_regression(cls, feature: torch.Tensor, pose_6d: torch.Tensor, betas: torch.Tensor,
                      camera: torch.Tensor) -> "HMR2Output":
        rotations = rotation_6d_to_matrix(pose_6d.unflatten(-1, (-1, 6))).transpose(-1, -2)  # rot6d_to_rotmat: columns
        return cls(feature, rotations, betas, camera)

    @classmethod
    def of_joined(cls, joined: torch.Tensor) -> "HMR2Output":
        """The outputs of ``HMR2.regress_joined``'s (B, decoder_dim + 157) tensor."""
        feature_dim = joined.shape[-1] - sum(REGRESSION_DIMS)
        return cls.of_regression(*joined.split([feature_dim, *REGRESSION_DIMS], dim=-1))


class HMR2(nn.Module):
    def __init__(self, config: HMR2Config):
        super().__init__()
        self.config = config
        self.backbone = ViT(config.vit)
        self.smpl_head = SMPLHead(config)

    def forward(self, crops: torch.Tensor) -> HMR2Output:
        """(B, 3, 256, 256) normalised crops (``hmr2_estimate.demo_crops``) -> per-crop outputs."""
        return self.smpl_head(self.backbone(crops[..., VIT_INPUT_COLUMNS]))

    def regress_joined(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) crops -> (B, decoder_dim + 157) feature, 6D pose, betas and camera in one
        tensor: what a backend runs (``hmr2_estimate.HMR2Graph``); the rotations are made from the 6D
        pose outside, in fp32 whatever the backend's precision (``HMR2Output.of_joined``)."""
        return torch.cat(self.smpl_head.regress(self.backbone(crops[..., VIT_INPUT_COLUMNS])), dim=-1)


# --- building and loading --------------------------------------------------------------------


def build_model(config: HMR2Config = PRESETS["tiny"], seed: int = 0) -> HMR2:
    """Seeded dummy weights (PyTorch's default init, position embeddings N(0, 0.02^2) as ViTPose's
    ``trunc_normal_``, so that they matter); the same seed gives the same weights."""
    with seeded(seed):
        model = HMR2(config)
        with torch.no_grad():
            model.backbone.pos_embed.normal_(0, 0.02)
    return model.eval()


def expected_layout(config: HMR2Config) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the used part of the released state dict, computed on the meta device."""
    return meta_layout(lambda: HMR2(config))


class ConfigStandIn:
    """What the name ``yacs.config.CfgNode`` unpickles to: an empty OrderedDict (a type the
    weights-only unpickler may fill and build), not yacs' class."""

    def __new__(cls, *args):
        return OrderedDict()


def released_globals() -> list:
    return [(ConfigStandIn, "yacs.config.CfgNode")]


def released_state_dict(path, config: HMR2Config = PRESETS["released"], mmap: bool = False) -> dict:
    """The ``backbone.`` and ``smpl_head.`` tensors of a 4D-Humans Lightning checkpoint, their
    names and shapes checked against ``config`` (RejectedInput naming what differs)."""
    try:
        checkpoint = read_state_dict(path, mmap=mmap, allowed_globals=released_globals())
    except UnsafeCheckpoint as err:
        raise UnsafeCheckpoint(f"{path} holds pickled objects other than 4D-Humans' checkpoint has and was refused; "
                               f"save {{'state_dict': checkpoint['state_dict']}} with torch.save and pass that file "
                               f"({str(err).splitlines()[0][-120:]})") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise RejectedInput(f"{path} has no 'state_dict' entry; expected 4D-Humans' {RELEASED_FILE}")
    state_dict = {key: value for key, value in checkpoint["state_dict"].items() if key.startswith(USED_PREFIXES)}
    check_layout(state_dict, expected_layout(config), str(path), "HMR 2.0")
    return state_dict


def is_released_file(path) -> bool:
    """Whether ``path`` holds a 4D-Humans Lightning checkpoint (a ``state_dict`` with ``backbone.``
    keys), not the ResNet-50 head's weights (``initial_estimate``); read memory-mapped."""
    try:
        checkpoint = read_state_dict(path, mmap=True, allowed_globals=released_globals())
    except (UnsafeCheckpoint, RejectedInput):
        return False
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    return isinstance(state_dict, dict) and any(str(key).startswith(USED_PREFIXES[0]) for key in state_dict)


def preset_feeding(image_feature_dim: int) -> str:
    """The HMR 2.0 preset whose feature width is the denoiser's image feature width."""
    for name, config in PRESETS.items():
        if config.decoder_dim == image_feature_dim:
            return name
    raise RejectedInput(f"no HMR 2.0 preset gives {image_feature_dim}-d features (presets: "
                        f"{ {n: c.decoder_dim for n, c in PRESETS.items()} })")


def load_model(checkpoint: Optional[str] = None, preset: str = "released", seed: int = 0) -> HMR2:
    """Eval-mode HMR 2.0: seeded dummy weights of ``preset``, or the released checkpoint (whose
    layout is that of ``preset``); a bad file is one DataError naming it."""
    config = PRESETS[preset]
    if checkpoint is None:
        return build_model(config, seed)
    with checkpoint_errors(checkpoint, "HMR 2.0", f"give 4D-Humans' released {RELEASED_FILE}"):
        model = assigned(lambda: HMR2(config), released_state_dict(checkpoint, config))
    return model.eval()
