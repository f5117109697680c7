"""reconstruct's settings: which weights (``ReconstructSpec``) and how to run (``ReconstructSettings``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from motionfleet.core.options import MAX_SEED, existing_file, existing_folder, file_setting, positive, scheduling, setting

MAX_FPS = 240.0  # a phone's slow motion; above it every frame repeats, and --fps 1e20 ran the planner out of memory


def height_by_width(text: str) -> tuple[int, int]:
    """``"800x1440"`` -> (800, 1440)."""
    height, width = text.lower().split("x")
    return int(height), int(width)


height_by_width.kind = "HEIGHTxWIDTH (e.g. 800x1440)"  # type: ignore[attr-defined]  # what --detector-size takes


def multiples_of_32(size) -> str | None:
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(n, int) and n > 0 and n % 32 == 0 for n in size):
        return f"{size} must be two positive multiples of 32 (height x width, e.g. 800x1440)"
    return None


@dataclass(frozen=True)
class ReconstructSpec:
    """Which weights: denoiser, backbone, estimator head, detector, body model, upstream estimates, text encoder."""

    preset: str = "released"
    checkpoint: Optional[str] = None
    dummy_seed: int = 0
    backbone_weights: Optional[str] = file_setting("torchvision-format ResNet-50 weights file", existing_file)
    estimator_weights: Optional[str] = file_setting(
        "4D-Humans' HMR 2.0 checkpoint (epoch=35-step=1000000.ckpt): its features and initial pose start the diffusion; "
        "or our feature projection + regression head weights file", existing_file)
    detector_weights: Optional[str] = file_setting(
        "YOLOX / ByteTrack person detector ({'model': state_dict}, e.g. ByteTrack's bytetrack_x_mot17.pth.tar): videos "
        "without a track file are detected, tracked and paired", existing_file)
    body_models: Optional[str] = file_setting("folder with smpl/SMPL_NEUTRAL.pkl (default: a cached synthetic SMPL)")
    estimates: Optional[str] = file_setting("upstream Parquet of per-frame image features / initial estimates / aux joints",
                                            existing_file)
    text_encoder: str = setting("minilm", "encoder of captions", choices=("minilm", "clip"))
    text_encoder_weights: Optional[str] = file_setting("OpenAI's CLIP weights as a state dict (clip) or a saved MiniLM "
                                                       "projection", existing_file)


@dataclass(frozen=True)
class ReconstructSettings:
    target_fps: float = setting(30.0, "frames per second the videos are resampled to", flag="fps", checks=(positive,),
                                high=MAX_FPS)
    stride: int = setting(16, "frames between clip starts (16: no overlap)", low=1)
    crop_size: int = setting(224, "person crop side for ResNet-50", low=32, high=1024)  # 1024: a clip's 32 crops 400 MB
    max_frame_size: Optional[int] = setting(640, "cap on the longer frame side before cropping", low=32)
    clips_per_shard: int = 64  # the default shard size (--shard-size sets it)
    steps: int = setting(5, "DDIM steps over CloseInt's 100 train steps", low=1, high=100)
    eta: float = setting(0.0, "DDIM eta", low=0.0, high=1.0)
    sigma: float = setting(1.0, "noise scale of the start x_T ~ N(x_init, sigma^2)", low=0.0)
    guidance_scale: float = setting(0.0, "geometric guidance rho (0: off; try 0.05)", low=0.0)
    guidance_penetration: float = setting(1.0, "weight of the joint penetration term", low=0.0)
    guidance_aux: float = setting(1.0, "weight of the auxiliary 3D joint term", low=0.0)
    joint_radius: float = setting(0.08, "joint sphere radius (m) of the penetration term", above=0.0)
    seed: int = setting(0, "job seed; each clip's noise comes from (seed, video id, clip index)", low=0, high=MAX_SEED)
    batch_size: int = scheduling(4)
    prefetch_clips: int = setting(4, "decoded clips queued ahead of the models", low=1, scheduling=True)
    detector_size: tuple[int, int] = setting((800, 1440), "detector input HEIGHTxWIDTH, multiples of 32 (CloseInt's "
                                             "demo: 800x1440)", type=height_by_width, checks=(multiples_of_32,),
                                             metavar="HxW")
    detector_confidence: float = setting(0.23, "objectness x class score a detection needs (CloseInt's demo: 0.23)",
                                         low=0.0, high=1.0)
    detect_every: int = setting(1, "detect every k-th frame; the tracker bridges the frames between", low=1)
    max_gap: int = setting(15, "frames one of the pair may be missing and still be interpolated; a clip holding a "
                           "longer gap is rejected (pair_lost)", low=0)
    onnx_dir: Optional[str] = setting(None, "folder of graphs written by motionfleet export --family socialmirror (with the "
                                      "job's weights flags): the onnxruntime and tensorrt backends run the detector's, "
                                      "HMR 2.0's and the denoiser's graphs from it, checked against the weights, instead "
                                      "of exporting them into the cache", type=str, checks=(existing_folder,),
                                      metavar="DIR")
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"


def model_name(spec: ReconstructSpec) -> str:
    """How results name the model: the preset for dummy weights, else the family."""
    return f"socialmirror/{spec.preset}" if spec.checkpoint is None else "socialmirror"
