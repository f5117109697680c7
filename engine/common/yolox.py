"""YOLOX (Ge et al. 2021): CSPDarknet backbone, PAFPN neck and decoupled head, with the module and
state-dict names of the public code (Megvii-BaseDetection/YOLOX and ifzhang/ByteTrack,
``yolox/models/{network_blocks,darknet,yolo_pafpn,yolo_head,yolox}.py``), so a released
``{'model': state_dict}`` file (YOLOX's ``yolox_{s,m,l,x}.pth``, ByteTrack's
``bytetrack_x_mot17.pth.tar``) loads strictly.

Interface:

    model = load_yolox(path)                 # sizes and classes read from the tensors' shapes
    model = build_yolox(PRESETS["test"], 0)  # seeded dummy weights, for tests
    predictions = model(images)              # (N, 3, H, W) -> (N, anchors, 5 + classes)

``images`` are what the checkpoint was trained on (``motionfleet.socialmirror.detect`` prepares
them); H and W are multiples of 32. Each prediction row is the public eval-mode output, decoded:
box centre x, y, width, height in input pixels, objectness and per-class probabilities.

A file that is not such a checkpoint (another model's, a truncated file, missing or mis-shaped
keys, a pickle that needs code to load) is one ``DataError`` line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from motionfleet.common.weights import check_layout, meta_layout, read_state_dict, seeded
from motionfleet.core.errors import RejectedInput, checkpoint_errors

CHECKPOINT_KEY = "model"
STRIDES = (8, 16, 32)
NECK_CHANNELS = (256, 512, 1024)  # the PAFPN's channels at width 1, strides 8, 16, 32
HEAD_CHANNELS = 256
# The public Exp.get_model sets every BatchNorm's eps to 1e-3 (``init_yolo``); the released
# files do not hold eps, so a model built with PyTorch's 1e-5 would compute something else.
BN_EPS = 1e-3
LAYOUT = "YOLOX"
EXPECTED_FILE = ("give a released YOLOX checkpoint ({'model': state_dict}, e.g. YOLOX's yolox_x.pth "
                 "or ByteTrack's bytetrack_x_mot17.pth.tar)")


@dataclass(frozen=True)
class YoloxConfig:
    """Depth and width multipliers of the public ``Exp`` and the number of classes (1 for
    ByteTrack's person detectors, 80 for YOLOX's COCO releases, where person is class 0)."""

    depth: float = 1.33
    width: float = 1.25
    num_classes: int = 1

    @property
    def base_channels(self) -> int:
        return int(self.width * 64)

    @property
    def base_depth(self) -> int:
        return max(round(self.depth * 3), 1)

    def channels(self, width_one: int) -> int:
        return int(width_one * self.width)


# The public sizes (``exps/default/yolox_{s,m,l,x}.py``) with ByteTrack's one class, and a test
# size for dummy weights.
PRESETS = {
    "s": YoloxConfig(0.33, 0.50),
    "m": YoloxConfig(0.67, 0.75),
    "l": YoloxConfig(1.0, 1.0),
    "x": YoloxConfig(1.33, 1.25),
    "test": YoloxConfig(0.33, 0.125),
}


# --- blocks (network_blocks.py) ------------------------------------------------------------


class BaseConv(nn.Module):
    """Conv (same padding, no bias) -> BatchNorm -> SiLU."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, padding=(ksize - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 then 3x3 convolution, with the input added when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool):
        super().__init__()
        self.conv1 = BaseConv(channels, channels, 1)
        self.conv2 = BaseConv(channels, channels, 3)
        self.use_add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Two 1x1 branches at half the output width, ``n`` bottlenecks on the first, concatenated
    and fused by a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, n: int, shortcut: bool = True):
        super().__init__()
        hidden = int(out_channels * 0.5)
        self.conv1 = BaseConv(in_channels, hidden, 1)
        self.conv2 = BaseConv(in_channels, hidden, 1)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: max pools of 5, 9 and 13 beside the input, fused by a 1x1 conv."""

    KERNELS = (5, 9, 13)

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in self.KERNELS)
        self.conv2 = BaseConv(hidden * (len(self.KERNELS) + 1), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


class Focus(nn.Module):
    """Space to depth: the four pixels of each 2x2 cell as channels (top-left, bottom-left,
    top-right, bottom-right), then a convolution."""

    def __init__(self, out_channels: int, ksize: int = 3):
        super().__init__()
        self.conv = BaseConv(3 * 4, out_channels, ksize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
        return self.conv(x)


# --- backbone, neck, head ------------------------------------------------------------------


def dark_stage(in_channels: int, out_channels: int, n: int) -> nn.Sequential:
    """A stride-2 3x3 convolution then a CSP layer."""
    return nn.Sequential(BaseConv(in_channels, out_channels, 3, 2), CSPLayer(out_channels, out_channels, n))


class CSPDarknet(nn.Module):
    """Focus stem and four stages; returns the features at strides 8, 16 and 32."""

    def __init__(self, config: YoloxConfig):
        super().__init__()
        c, n = config.base_channels, config.base_depth
        self.stem = Focus(c)
        self.dark2 = dark_stage(c, 2 * c, n)
        self.dark3 = dark_stage(2 * c, 4 * c, 3 * n)
        self.dark4 = dark_stage(4 * c, 8 * c, 3 * n)
        self.dark5 = nn.Sequential(BaseConv(8 * c, 16 * c, 3, 2), SPPBottleneck(16 * c, 16 * c),
                                   CSPLayer(16 * c, 16 * c, n, shortcut=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dark3 = self.dark3(self.dark2(self.stem(x)))
        dark4 = self.dark4(dark3)
        return dark3, dark4, self.dark5(dark4)


class PAFPN(nn.Module):
    """The backbone (as ``backbone``), a top-down path and a bottom-up path (PANet)."""

    def __init__(self, config: YoloxConfig):
        super().__init__()
        c3, c4, c5 = (config.channels(channels) for channels in NECK_CHANNELS)
        n = round(3 * config.depth)
        self.backbone = CSPDarknet(config)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False)
        self.reduce_conv1 = BaseConv(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False)
        self.bu_conv2 = BaseConv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False)
        self.bu_conv1 = BaseConv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat((self.upsample(fpn_out0), x1), dim=1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat((self.upsample(fpn_out1), x2), dim=1))
        pan_out1 = self.C3_n3(torch.cat((self.bu_conv2(pan_out2), fpn_out1), dim=1))
        pan_out0 = self.C3_n4(torch.cat((self.bu_conv1(pan_out1), fpn_out0), dim=1))
        return pan_out2, pan_out1, pan_out0


def conv_pair(channels: int) -> nn.Sequential:
    return nn.Sequential(BaseConv(channels, channels, 3), BaseConv(channels, channels, 3))


class YOLOXHead(nn.Module):
    """Per stride: a 1x1 stem, then a classification branch and a box + objectness branch."""

    def __init__(self, config: YoloxConfig):
        super().__init__()
        width = config.channels(HEAD_CHANNELS)
        self.num_classes = config.num_classes
        self.stems = nn.ModuleList(BaseConv(config.channels(c), width, 1) for c in NECK_CHANNELS)
        self.cls_convs = nn.ModuleList(conv_pair(width) for _ in STRIDES)
        self.reg_convs = nn.ModuleList(conv_pair(width) for _ in STRIDES)
        self.cls_preds = nn.ModuleList(nn.Conv2d(width, config.num_classes, 1) for _ in STRIDES)
        self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in STRIDES)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in STRIDES)

    def level(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """(N, 4 + 1 + classes, h, w): raw box offsets, objectness and class probabilities."""
        x = self.stems[k](x)
        reg_feat = self.reg_convs[k](x)
        return torch.cat((self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat).sigmoid(),
                          self.cls_preds[k](self.cls_convs[k](x)).sigmoid()), dim=1)

    def forward(self, features) -> torch.Tensor:
        levels = [self.level(k, x) for k, x in enumerate(features)]
        outputs = torch.cat([level.flatten(start_dim=2) for level in levels], dim=2).permute(0, 2, 1)
        return decode(outputs, [level.shape[-2:] for level in levels])


def decode(outputs: torch.Tensor, sizes) -> torch.Tensor:
    """Grid offsets to input pixels: centre = (offset + cell) * stride, size = exp(raw) * stride."""
    grids, strides = [], []
    for (height, width), cell in zip(sizes, STRIDES):
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        grids.append(torch.stack((xs, ys), dim=2).view(-1, 2))
        strides.append(torch.full((height * width, 1), cell))
    grid = torch.cat(grids).to(device=outputs.device, dtype=outputs.dtype)
    stride = torch.cat(strides).to(device=outputs.device, dtype=outputs.dtype)
    return torch.cat(((outputs[..., :2] + grid) * stride, torch.exp(outputs[..., 2:4]) * stride, outputs[..., 4:]), dim=-1)


class YOLOX(nn.Module):
    """(N, 3, H, W) images -> (N, anchors, 5 + classes) decoded predictions (the public model's
    eval-mode output); anchors = sum over strides s of (H / s) * (W / s)."""

    def __init__(self, config: YoloxConfig):
        super().__init__()
        self.config = config
        self.backbone = PAFPN(config)
        self.head = YOLOXHead(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


# --- building and loading ------------------------------------------------------------------


def build_yolox(config: YoloxConfig = PRESETS["x"], seed: int = 0) -> YOLOX:
    """Seeded dummy weights (PyTorch's default init); the same seed gives the same weights."""
    with seeded(seed):
        model = YOLOX(config)
    return model.eval()


STEM_KEY = "backbone.backbone.stem.conv.conv.weight"  # (base_channels, 12, 3, 3)
DARK2_BOTTLENECK = "backbone.backbone.dark2.1.m.{}.conv1.conv.weight"  # one per base_depth
CLASSES_KEY = "head.cls_preds.0.weight"  # (num_classes, head width, 1, 1)


def infer_config(state_dict: dict, source: str) -> YoloxConfig:
    """Depth, width and classes from the tensors' shapes: the stem's output channels are
    64 x width, dark2 holds round(3 x depth) bottlenecks, the class predictor has one output per
    class. A public size is named by its own multipliers (depth 1.33, not 4 / 3)."""
    for key in (STEM_KEY, DARK2_BOTTLENECK.format(0), CLASSES_KEY):
        if not isinstance(state_dict.get(key), torch.Tensor) or state_dict[key].dim() != 4:
            raise RejectedInput(f"{source} does not match the {LAYOUT} layout: no 4-d tensor {key}")
    base_channels, num_classes = state_dict[STEM_KEY].shape[0], state_dict[CLASSES_KEY].shape[0]
    base_depth = next(n for n in range(1, len(state_dict) + 2) if DARK2_BOTTLENECK.format(n) not in state_dict)
    for preset in PRESETS.values():
        if (preset.base_channels, preset.base_depth) == (base_channels, base_depth):
            return YoloxConfig(preset.depth, preset.width, num_classes)
    return YoloxConfig(base_depth / 3, base_channels / 64, num_classes)


def released_state_dict(path) -> tuple[dict, YoloxConfig]:
    """The ``['model']`` state dict of a released file and its config, keys and shapes checked."""
    checkpoint = read_state_dict(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
        raise RejectedInput(f"{path} has no '{CHECKPOINT_KEY}' state dict")
    state_dict = checkpoint[CHECKPOINT_KEY]
    config = infer_config(state_dict, str(path))
    check_layout(state_dict, meta_layout(lambda: YOLOX(config)), str(path), f"{LAYOUT} ({config})")
    return state_dict, config


def load_yolox(path) -> YOLOX:
    """The eval-mode model of a released YOLOX / ByteTrack checkpoint (``{'model': state_dict}``,
    read with ``torch.load(weights_only=True)``); its size and classes come from its shapes, every
    key must be present with its shape and no other key may be (strict). Anything else is one
    DataError line (an UnsafeCheckpoint for a pickle that needs code, a MissingFile)."""
    with checkpoint_errors(path, LAYOUT, EXPECTED_FILE):
        state_dict, config = released_state_dict(path)
        with torch.device("meta"):
            model = YOLOX(config)
        model.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()},
                              strict=True, assign=True)
    return model.eval()
