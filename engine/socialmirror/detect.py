"""Person detection with YOLOX, as CloseInt's demo runs ByteTrack's ``bytetrack_x_mot17.pth.tar``
(boycehbz/HumanInteraction, ``demo_module/yolox/yolox.py``): test size 800 x 1440, confidence
0.23, NMS 0.7, person class only.

    detector = Detector(load_yolox(path), DetectorSettings(), backend="torch", device="cpu")
    boxes = detector(frames)   # per frame an (N, 5) float32 array: x0, y0, x1, y1, score

``frames`` are (H, W, 3) uint8 RGB arrays (``video.iter_frames``), any sizes; a call runs one
forward per ``batch_size`` frames (a frame's boxes are the same bits in any batch) on the backend
(``core.runtime.backends``: torch, onnxruntime, tensorrt, ...). Boxes are in the pixels of the
frames given (a frame decoded at a reduced ``max_size`` gives boxes in its own pixels), best score
first, not clipped to the frame (as the public code leaves them); score = objectness x
person-class probability. The demo keeps every score >= 0.46 whatever its threshold (its two-way
split of the scores); ``confidence`` is the threshold itself.

Pre-processing, as ByteTrack's ``preproc`` (``yolox/data/data_augment.py``) with the ImageNet
mean and std its MOT checkpoints were trained with (``exps/example/mot/yolox_x_mix_det.py``;
YOLOX's later ``ValTransform`` feeds unnormalised BGR, which these checkpoints never saw):
ratio r = min(test_h / h, test_w / w); the frame resized to (int(h r), int(w r)) bilinearly
(half-pixel centres, rounded to whole grey levels like ``cv2.resize`` of uint8, which it matches
exactly at r = 1 and r = 1/2 and within one grey level elsewhere, from OpenCV's fixed-point
weights); placed top-left on a canvas of grey 114; RGB channel order; (v / 255 - mean) / std
computed in float64 as the public numpy code does, then float32.

Post-processing, as ``yolox/utils/boxes.py`` ``postprocess`` and the demo: box centre and size to
corners; score = objectness x the best class probability; the rows whose best class is person
(class 0) with score >= ``confidence``; greedy NMS (``torchvision.ops.nms``'s rule: by
descending score, equal scores in anchor order, a box is dropped when its IoU with a kept box
exceeds ``nms_threshold``); corners divided by r. The demo runs NMS at confidence 0.001 and keeps score
>= 0.23 afterwards: the same boxes, since a box below the threshold only ever suppresses boxes
below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from motionfleet.common.resnet import IMAGENET_MEAN, IMAGENET_STD
from motionfleet.common.yolox import STRIDES, YOLOX
from motionfleet.core.options import UsageError
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.batching import pad_rows
from motionfleet.core.runtime.graphs import GraphInput, GraphSpec

PAD_VALUE = 114.0
PERSON_CLASS = 0
# The largest batch a graph is built for: TensorRT sizes its engine for it, and one 800 x 1440
# frame of YOLOX-x holds ~1.5 GB of activations at the widest layer in fp32.
MAX_BATCH = 32
NMS_BLOCK = 1024  # boxes whose pairwise IoUs are held at once (4 MB of float32)


@dataclass(frozen=True)
class DetectorSettings:
    """``test_size`` (height, width): the network's input, multiples of 32; ``confidence``: the
    lowest score kept; ``nms_threshold``: the IoU above which a lower-scored box is dropped;
    ``batch_size``: frames per forward."""

    test_size: tuple[int, int] = (800, 1440)
    confidence: float = 0.23
    nms_threshold: float = 0.7
    batch_size: int = 8

    def __post_init__(self):
        size = tuple(self.test_size)
        if len(size) != 2 or not all(isinstance(n, int) and n > 0 and n % STRIDES[-1] == 0 for n in size):
            raise UsageError(f"detector test size {self.test_size} must be two positive multiples of {STRIDES[-1]} (height, width)")
        if not 0.0 <= self.confidence <= 1.0:
            raise UsageError(f"detector confidence {self.confidence} must lie in [0, 1] (CloseInt's demo uses 0.23)")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise UsageError(f"detector NMS threshold {self.nms_threshold} must lie in (0, 1] (the public code uses 0.7)")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"detector batch size {self.batch_size} must lie in [1, {MAX_BATCH}]")
        object.__setattr__(self, "test_size", size)


# --- pre-processing ------------------------------------------------------------------------


def letterbox(frames: list[np.ndarray], test_size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, list[float]]:
    """(N, 3, test_h, test_w) float32 network inputs and each frame's ratio r."""
    images = torch.empty((len(frames), 3, *test_size), dtype=torch.float32, device=device)
    ratios = []
    for index, frame in enumerate(frames):
        check_frame(frame, index)
        images[index], ratio = letterbox_one(frame, test_size, device)
        ratios.append(ratio)
    return images, ratios


def check_frame(frame: np.ndarray, index: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        what = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame {index} is a {what}; the detector takes (H, W, 3) uint8 RGB frames")


def letterbox_one(frame: np.ndarray, test_size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, float]:
    height, width = frame.shape[:2]
    ratio = min(test_size[0] / height, test_size[1] / width)
    new_height, new_width = int(height * ratio), int(width * ratio)
    if new_height < 1 or new_width < 1:
        raise ValueError(f"a {width} x {height} frame scales to nothing at the detector's test size {test_size}")
    image = torch.from_numpy(np.array(frame)).to(device).permute(2, 0, 1)[None].to(torch.float64)
    if (new_height, new_width) != (height, width):
        image = F.interpolate(image, size=(new_height, new_width), mode="bilinear", align_corners=False)
        image = torch.floor(image + 0.5).clamp_(0, 255)  # cv2.resize of a uint8 image returns uint8
    canvas = image.new_full((3, *test_size), PAD_VALUE)
    canvas[:, :new_height, :new_width] = image[0]
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64, device=device).view(3, 1, 1)
    return ((canvas / 255.0 - mean) / std).to(torch.float32), ratio


# --- what a backend runs -------------------------------------------------------------------


class DetectorGraph(nn.Module):
    """The network at one test size: (N, 3, H, W) letterboxed images -> (N, anchors, 5 + classes)
    decoded predictions; declares its graph for the backends (batch dynamic)."""

    def __init__(self, model: YOLOX, test_size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.test_size = tuple(test_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def anchors(self) -> int:
        return sum((self.test_size[0] // s) * (self.test_size[1] // s) for s in STRIDES)

    def graph_spec(self) -> GraphSpec:
        config = {**asdict(self.model.config), "test_size": list(self.test_size)}
        inputs = (GraphInput("images", ("batch", 3, *self.test_size)),)
        output_shape = lambda images: (images.shape[0], self.anchors(), 5 + self.model.config.num_classes)
        flags = f"--family socialmirror --detector-weights FILE --detector-size {self.test_size[0]}x{self.test_size[1]}"
        return GraphSpec("yolox", "detector", self, inputs, "predictions", config, lambda images: (images,), output_shape,
                         max_batch=MAX_BATCH, export_flags=flags)


# --- post-processing -----------------------------------------------------------------------


def person_boxes(predictions: torch.Tensor, ratio: float, settings: DetectorSettings) -> np.ndarray:
    """One frame's (anchors, 5 + classes) predictions -> (N, 5) float32 x0, y0, x1, y1, score
    in the frame's pixels, best score first."""
    class_conf, class_pred = predictions[:, 5:].max(dim=1)
    scores = predictions[:, 4] * class_conf
    chosen = (class_pred == PERSON_CLASS) & (scores >= settings.confidence)
    centre, size = predictions[chosen, :2], predictions[chosen, 2:4]
    corners = torch.cat((centre - size / 2, centre + size / 2), dim=1)
    keep = nms(corners, scores[chosen], settings.nms_threshold)
    boxes = corners[keep].cpu().numpy()
    boxes /= ratio  # in float32, as the demo divides its numpy boxes
    return np.concatenate((boxes, scores[chosen][keep].cpu().numpy()[:, None]), axis=1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, by descending score: a box is dropped when its IoU
    with a kept, higher-ranked box is > ``threshold``. Equal scores rank in index order
    (torchvision leaves them to an unstable sort, whose order differs between devices and sizes).
    The boxes are taken NMS_BLOCK at a time: each block is first cut by the boxes kept before it,
    then resolved inside itself."""
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    kept = torch.zeros(len(ranked), dtype=torch.bool, device=boxes.device)
    for start in range(0, len(ranked), NMS_BLOCK):
        block = ranked[start:start + NMS_BLOCK]
        alive = ~overlaps(ranked[:start][kept[:start]], block, threshold).any(dim=0)
        kept[start:start + NMS_BLOCK] = greedy_keep(overlaps(block, block, threshold).triu(diagonal=1), alive)
    return order[kept]


def overlaps(higher: torch.Tensor, lower: torch.Tensor, threshold: float) -> torch.Tensor:
    """(len(higher), len(lower)) IoU > threshold, computed as torchvision's CPU kernel does
    (float32, area_i + area_j - inter) and compared in float64 as it compares with a double."""
    area_high = (higher[:, 2] - higher[:, 0]) * (higher[:, 3] - higher[:, 1])
    area_low = (lower[:, 2] - lower[:, 0]) * (lower[:, 3] - lower[:, 1])
    top_left = torch.maximum(higher[:, None, :2], lower[None, :, :2])
    bottom_right = torch.minimum(higher[:, None, 2:], lower[None, :, 2:])
    extent = (bottom_right - top_left).clamp(min=0)
    inter = extent[..., 0] * extent[..., 1]
    iou = inter / (area_high[:, None] + area_low[None, :] - inter)
    return iou.to(torch.float64) > threshold


def greedy_keep(suppresses: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The greedy rule keep[j] = alive[j] and no kept i < j suppresses j, solved by fixed-point
    iteration (``suppresses`` is strictly upper triangular, so iteration t settles box t: at
    most len + 1 rounds, a few in practice)."""
    keep = alive
    while True:
        settled = alive & ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(settled, keep):
            return keep
        keep = settled


# --- the detector --------------------------------------------------------------------------


class Detector:
    """Frames -> person boxes with a YOLOX model on one backend (see the module docstring).

    ``weights`` (the weights description) is recorded in the graphs a graph backend exports;
    ``onnx_dir`` gives them ready-made (``core.runtime.backends.make_backend``).
    """

    def __init__(self, model: YOLOX, settings: DetectorSettings = DetectorSettings(), backend: str = "torch",
                 device: torch.device | str = "cpu", precision: str = "fp32", weights: Optional[str] = None,
                 onnx_dir: Optional[str] = None):
        self.settings, self.device = settings, torch.device(device)
        self.graph = DetectorGraph(model.to(self.device).eval(), settings.test_size)
        self.run = backends.make_backend(backend, self.graph, precision, self.device, onnx_dir=onnx_dir, weights=weights)

    def __call__(self, frames: Iterable[np.ndarray]) -> list[np.ndarray]:
        frames = list(frames)
        size = self.settings.batch_size
        return [boxes for start in range(0, len(frames), size) for boxes in self.detect_batch(frames[start:start + size])]

    def detect_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """One forward over ``frames`` (at most ``batch_size``), padded to a multiple of
        ROW_QUANTUM frames: oneDNN convolves a lone image with other bits than a batch (measured:
        1e-4 apart in the raw outputs, the same bits for any batch of 2 to 8), so a frame's boxes
        do not depend on the batch it came in."""
        if not frames:
            return []
        images, ratios = letterbox(frames, self.settings.test_size, self.device)
        with torch.inference_mode():
            predictions = self.run(pad_rows(images))[:len(frames)]
            return [person_boxes(frame_predictions, ratio, self.settings) for frame_predictions, ratio in zip(predictions, ratios)]
