"""HMR 2.0 per person crop as CloseInt's demo runs it, and its outputs as SocialMirror's inputs.

:func:`demo_estimates` gives, per (frame, person) box, what boycehbz/HumanInteraction's
``demo.py`` takes from ``Human4D_Predictor.closeint_data`` (``demo_module/hmr2/hmr2_core.py``):

* the crop (``prepare_human4d_data``, as 4D-Humans' ``ViTDetDataset``): centre = the box centre,
  side ``box_size = max(w * 256/192, h)`` (``expand_to_aspect_ratio(wh, BBOX_SHAPE=[192, 256])``,
  no further expansion), the frame blurred first by a Gaussian of sigma ``(d - 1) / 2`` when
  ``d = box_size / 256 / 2 > 1.1`` (skimage ``gaussian``: truncate 4, edge pixels repeated), then
  a 256 x 256 bilinear warp (``cv2.warpAffine``, zeros outside the frame) whose pixel (i, j)
  samples the frame at ``centre + ((j, i) - 128) * box_size / 256``; an unblurred uint8 frame gives
  a uint8 patch (rounded), a blurred one a float patch; normalised by ImageNet's mean/std x 255.
  Deviation: cv2 quantises sample positions to 1/32 pixel, we sample at the exact position (the
  fidelity test compares against the exact warp).
* ``feature`` (the decoder's last token, 1024-d), ``rotations`` (global orient + body pose),
  ``betas``, ``camera`` (HMR 2.0's crop camera s, tx, ty, for the crop above) and ``translation``
  (4D-Humans' ``cam_crop_to_full`` with its focal length ``5000 / 256 * max(W, H)``).
* CloseInt's crop geometry (``bbox_from_detector``): the same centre, side
  ``1.1 * max(w * 256/192, h)`` (``scale = side / 200``), focal length ``sqrt(W^2 + H^2)``.

``demo.py`` feeds CloseInt ``features``, ``init_pose`` (the rotations as axis-angle, which
``CloseInt_Predictor.prepare_data`` turns back into matrices and then 6D rows), ``center``,
``scale``, ``img_h/img_w`` and ``focal_length``; not the betas or the camera (CloseInt's diffusion
centre has zero betas and the camera (0.9, 0, 0)).

:class:`HMR2Estimator` maps that to the runner's (F_img, x_init) per (person, frame), in place of
the ResNet-50 + ``InitialEstimator`` pair: F_img = feature, x_init = 6D pose (through axis-angle,
as the demo), betas, and HMR 2.0's translation re-expressed as CloseInt's crop camera (s, tx, ty)
of CloseInt's square (``initial_estimate.cam_full_to_crop``): only the pose enters the diffusion
centre (``initial_estimate.diffusion_centre``). It also returns those squares (side 1.1 x the
HMR 2.0 crop, centred on the box, NOT shifted inside the frame), which are what CloseInt's
``bbox_info`` and ``cam_crop2full`` use: the runner's current ``square_boxes`` (side = the box's
longer side, shifted inside the frame) differ from them, so with this estimator the runner should
take the squares from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from motionfleet.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d
from motionfleet.core.errors import RejectedInput
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.batching import ROW_QUANTUM, pad_rows
from motionfleet.core.runtime.graphs import GraphInput, GraphSpec
from motionfleet.socialmirror.hmr2 import HMR2, REGRESSION_DIMS, HMR2Output
from motionfleet.socialmirror.initial_estimate import cam_crop_to_full, cam_full_to_crop, focal_length

CROP_SIZE = 256  # MODEL.IMAGE_SIZE
BBOX_ASPECT = 256 / 192  # BBOX_SHAPE [192, 256]: height / width of the ViT's input
CLOSEINT_RESCALE = 1.1  # bbox_from_detector(rescale=1.1)
HMR2_FOCAL = 5000  # EXTRA.FOCAL_LENGTH, for a CROP_SIZE image
IMAGE_MEAN = (0.485, 0.456, 0.406)  # MODEL.IMAGE_MEAN, x 255 on uint8 pixels
IMAGE_STD = (0.229, 0.224, 0.225)
BLUR_ABOVE = 1.1  # blur when half the downsampling factor exceeds this
BLUR_TRUNCATE = 4.0  # skimage/scipy gaussian's default
CHUNK = 8  # crops per model call: a multiple of ROW_QUANTUM
# The largest batch the graph is built for (TensorRT sizes its engine for it). 64 crops of the
# released ViT-H are 16 TFLOP a call (251 GFLOP a crop, docs/benchmarks.md), over 16 ms even at an
# H100's dense fp16 peak: a call is compute-bound well before this, and a larger batch would only
# grow the activations the engine reserves (the widest, the MLP's 192 tokens x 5120, is 3.9 MB a crop in fp32).
MAX_BATCH = 64


def crop_boxes(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) boxes x0, y0, x1, y1 -> (N, 2) centres and (N,) crop sides ``max(w * 256/192, h)``
    (at least 1 pixel). Non-finite boxes raise RejectedInput."""
    boxes = boxes.double()
    if not torch.isfinite(boxes).all():
        raise RejectedInput("a person box is NaN or infinite")
    size = boxes[:, 2:] - boxes[:, :2]
    return (boxes[:, :2] + boxes[:, 2:]) / 2, torch.maximum(size[:, 0] * BBOX_ASPECT, size[:, 1]).clamp(min=1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """scipy.ndimage's 1D Gaussian: radius ``int(4 sigma + 0.5)``, weights summing to 1."""
    radius = int(BLUR_TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * x * x / sigma ** 2)
    return weights / weights.sum()


def blur(region: torch.Tensor, sigma: float) -> torch.Tensor:
    """(3, h, w) blurred along y then x, edges repeated (mode 'nearest'); same size. A sum of
    shifted copies: a one-channel conv2d of the same kernel took 0.2 s on a 480 x 300 region."""
    kernel = gaussian_kernel(sigma).tolist()
    radius = len(kernel) // 2
    for dim in (1, 2):
        n = region.shape[dim]
        edges = region.narrow(dim, 0, 1), region.narrow(dim, n - 1, 1)
        padded = torch.cat([edges[0].repeat_interleave(radius, dim), region, edges[1].repeat_interleave(radius, dim)], dim)
        region = sum(weight * padded.narrow(dim, shift, n) for shift, weight in enumerate(kernel))
    return region


def sample_positions(centre: float, side: float) -> torch.Tensor:
    """Frame coordinates (pixel centres at integers) that the crop's CROP_SIZE pixels sample."""
    return centre + (torch.arange(CROP_SIZE, dtype=torch.float64) - CROP_SIZE / 2) * side / CROP_SIZE


def needed_span(positions: torch.Tensor, extent: int, margin: int) -> Optional[tuple[int, int]]:
    """[first, last] pixel of the frame that bilinear taps at ``positions`` reach, widened by
    ``margin`` and clipped to the frame; None when no tap is inside it."""
    first, last = math.floor(positions[0]), math.floor(positions[-1]) + 1
    if last < 0 or first > extent - 1:
        return None
    return max(first - margin, 0), min(last + margin, extent - 1)


def crop_person(frame: torch.Tensor, centre: torch.Tensor, side: float) -> torch.Tensor:
    """(H, W, 3) uint8 RGB frame -> (3, 256, 256) normalised crop (see the module doc)."""
    height, width = frame.shape[:2]
    factor = side / CROP_SIZE / 2
    sigma = (factor - 1) / 2 if factor > BLUR_ABOVE else 0.0
    margin = len(gaussian_kernel(sigma)) // 2 if sigma else 0
    xs, ys = sample_positions(float(centre[0]), side), sample_positions(float(centre[1]), side)
    x_span, y_span = needed_span(xs, width, margin), needed_span(ys, height, margin)
    patch = torch.zeros(3, CROP_SIZE, CROP_SIZE, device=frame.device)
    if x_span is not None and y_span is not None:
        (x0, x1), (y0, y1) = x_span, y_span
        region = frame[y0:y1 + 1, x0:x1 + 1].permute(2, 0, 1).float()
        region = blur(region, sigma) if sigma else region
        h, w = region.shape[1:]
        grid_x = ((2 * (xs - x0) + 1) / w - 1).to(frame.device)
        grid_y = ((2 * (ys - y0) + 1) / h - 1).to(frame.device)
        grid = torch.stack(torch.broadcast_tensors(grid_x[None, :], grid_y[:, None]), dim=-1).float()
        patch = F.grid_sample(region[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        patch = patch if sigma else patch.round()  # cv2 warps a uint8 frame into a uint8 patch
    mean = torch.tensor(IMAGE_MEAN, device=frame.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGE_STD, device=frame.device).view(3, 1, 1) * 255
    return (patch - mean) / std


@dataclass
class DemoEstimates:
    """Per box (N rows, frame-major): HMR 2.0's outputs and the crop geometry of CloseInt's demo."""

    features: torch.Tensor  # (N, D) pred_smpl_params['feature']
    rotations: torch.Tensor  # (N, 24, 3, 3) global_orient + body_pose
    init_pose: torch.Tensor  # (N, 72) the rotations as axis-angle (demo's 'pose' -> 'init_pose')
    betas: torch.Tensor  # (N, 10)
    camera: torch.Tensor  # (N, 3) pred_cam (s, tx, ty) of HMR 2.0's crop
    translation: torch.Tensor  # (N, 3) demo's 'trans' (pred_cam_t_full)
    box_center: torch.Tensor  # (N, 2) HMR 2.0's crop centre (= CloseInt's 'center')
    box_size: torch.Tensor  # (N,) HMR 2.0's crop side
    scale: torch.Tensor  # (N,) CloseInt's 'scale': 1.1 x box_size / 200
    focal_length: torch.Tensor  # (N,) CloseInt's: sqrt(W^2 + H^2)

    def closeint_squares(self) -> torch.Tensor:
        """(N, 4) CloseInt's crop squares x0, y0, x1, y1 (centre, side = scale x 200)."""
        half = (self.scale * 100)[:, None]
        return torch.cat([self.box_center - half, self.box_center + half], dim=-1)


@dataclass
class DemoCrops:
    """The demo's crops of L x P boxes (frame-major) of one frame size, made on the CPU stage."""

    crops: torch.Tensor  # (N, 3, 256, 256) normalised
    centres: torch.Tensor  # (N, 2) box centres
    sides: torch.Tensor  # (N,) HMR 2.0's crop sides
    width: int
    height: int


def demo_crops(frames, boxes) -> DemoCrops:
    """``frames`` (L, H, W, 3) uint8 RGB, ``boxes`` (L, P, 4) x0, y0, x1, y1 pixels -> the crops
    HMR 2.0 sees (module doc), frame-major."""
    frames = torch.as_tensor(np.asarray(frames))
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    if frames.ndim != 4 or frames.shape[-1] != 3 or boxes.shape[:1] != frames.shape[:1] or boxes.shape[-1] != 4:
        raise RejectedInput(f"frames {tuple(frames.shape)} and boxes {tuple(boxes.shape)} are not (L, H, W, 3) and (L, P, 4)")
    people = boxes.shape[1]
    centres, sides = crop_boxes(boxes.reshape(-1, 4))
    crops = torch.stack([crop_person(frames[i // people], centres[i], float(sides[i])) for i in range(len(sides))])
    return DemoCrops(crops, centres, sides, frames.shape[2], frames.shape[1])


def demo_geometry(outputs: HMR2Output, crops: DemoCrops) -> DemoEstimates:
    """HMR 2.0's outputs on ``crops`` with the demo's crop geometry (module doc)."""
    camera = outputs.camera
    centres, sides = crops.centres.to(camera), crops.sides.to(camera)
    hmr2_squares = torch.cat([centres - sides[:, None] / 2, centres + sides[:, None] / 2], dim=-1)
    width, height = crops.width, crops.height
    return DemoEstimates(
        features=outputs.feature, rotations=outputs.rotations, init_pose=matrix_to_axis_angle(outputs.rotations).flatten(-2),
        betas=outputs.betas, camera=camera,
        translation=cam_crop_to_full(camera, hmr2_squares, width, height, HMR2_FOCAL / CROP_SIZE * max(width, height)),
        box_center=centres, box_size=sides, scale=CLOSEINT_RESCALE * sides / 200,
        focal_length=torch.full_like(sides, focal_length(width, height)))


def demo_estimates(model: HMR2, frames, boxes, chunk: int = CHUNK) -> DemoEstimates:
    """``frames`` (L, H, W, 3) uint8 RGB, ``boxes`` (L, P, 4) x0, y0, x1, y1 pixels -> estimates of
    the L x P boxes (frame-major), with ``model`` in eager torch: ``demo_crops`` then
    ``HMR2Estimator.estimates``."""
    return HMR2Estimator(model, chunk).estimates(demo_crops(frames, boxes))


class HMR2Graph(nn.Module):
    """What a backend runs: (N, 3, 256, 256) normalised crops -> (N, decoder_dim + 157) feature,
    6D pose, betas and camera (``HMR2.regress_joined``); declares its graph (batch dynamic)."""

    def __init__(self, model: HMR2):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model.regress_joined(crops)

    def graph_spec(self) -> GraphSpec:
        width = self.model.config.decoder_dim + sum(REGRESSION_DIMS)
        inputs = (GraphInput("crops", ("batch", 3, CROP_SIZE, CROP_SIZE)),)
        return GraphSpec("hmr2", "estimator", self, inputs, "regression", asdict(self.model.config), lambda crops: (crops,),
                         lambda crops: (crops.shape[0], width), max_batch=MAX_BATCH,
                         export_flags="--family socialmirror --estimator-weights FILE")


@dataclass
class EstimatorOutput:
    """Per (person, frame): F_img (P, L, D), x_init (P, L, 157), CloseInt's squares (P, L, 4)."""

    image_features: torch.Tensor
    x_init: torch.Tensor
    squares: torch.Tensor


class HMR2Estimator:
    """HMR 2.0 in the role of the runner's ResNet-50 + ``InitialEstimator``: frames and per-person
    boxes in, (F_img, x_init) and CloseInt's crop squares out (see the module doc); the model runs on
    ``backend`` (``core.runtime.backends``: torch, onnxruntime, tensorrt, ...) at ``precision``.

    ``weights`` (the weights description) is recorded in the graphs a graph backend exports;
    ``onnx_dir`` gives them ready-made (``core.runtime.backends.make_backend``).
    """

    def __init__(self, model: HMR2, chunk: int = CHUNK, backend: str = "torch", device: torch.device | str = "cpu",
                 precision: str = "fp32", weights: Optional[str] = None, onnx_dir: Optional[str] = None):
        if chunk % ROW_QUANTUM or not 0 < chunk <= MAX_BATCH:
            raise ValueError(f"chunk {chunk} must be a multiple of {ROW_QUANTUM} (batch-invariant bits) in [1, {MAX_BATCH}]")
        self.chunk, self.device = chunk, torch.device(device)
        self.graph = HMR2Graph(model.to(self.device).eval())
        self.run = backends.make_backend(backend, self.graph, precision, self.device, onnx_dir=onnx_dir, weights=weights)

    def outputs(self, crops: torch.Tensor) -> HMR2Output:
        """(N, 3, 256, 256) crops -> HMR 2.0's outputs, one call per ``chunk`` crops, padded to it:
        a crop's outputs do not depend on the crops beside it (``tests/test_hmr2.py``)."""
        images = crops.to(self.device)
        joined = torch.cat([self.run(pad_rows(images[i:i + self.chunk], self.chunk)) for i in range(0, len(images), self.chunk)])
        return HMR2Output.of_joined(joined[:len(images)])

    @torch.no_grad()
    def estimates(self, crops: DemoCrops) -> DemoEstimates:
        return demo_geometry(self.outputs(crops.crops), crops)

    def __call__(self, frames, boxes) -> EstimatorOutput:
        """``frames`` (L, H, W, 3) uint8 RGB, ``boxes`` (L, P, 4) -> per (person, frame) outputs."""
        return self.of_crops(demo_crops(frames, boxes), *np.shape(boxes)[:2])

    def of_crops(self, crops: DemoCrops, frames_count: int, people: int) -> EstimatorOutput:
        """The outputs of ``demo_crops`` of ``frames_count`` x ``people`` boxes (the model's half)."""
        estimates = self.estimates(crops)
        width, height = crops.width, crops.height
        squares = estimates.closeint_squares()
        pose_6d = matrix_to_rotation_6d(axis_angle_to_matrix(estimates.init_pose.unflatten(-1, (-1, 3)))).flatten(-2)
        camera = cam_full_to_crop(estimates.translation, squares, width, height)
        x_init = torch.cat([pose_6d, estimates.betas, camera], dim=-1)
        per_person = lambda t: t.reshape(frames_count, people, -1).transpose(0, 1)
        return EstimatorOutput(per_person(estimates.features), per_person(x_init), per_person(squares))
