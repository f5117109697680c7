"""reconstruct's settings: which weights (``ReconstructSpec``) and how to run (``ReconstructSettings``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from motionfleet.core.options import scheduling
from motionfleet.socialmirror.pair_guidance import GuidanceWeights


@dataclass(frozen=True)
class ReconstructSpec:
    """Which weights: denoiser, backbone, estimator head, detector, body model, upstream estimates, text encoder."""

    preset: str = "released"
    checkpoint: Optional[str] = None
    dummy_seed: int = 0
    backbone_weights: Optional[str] = None
    estimator_weights: Optional[str] = None
    detector_weights: Optional[str] = None
    body_models: Optional[str] = None
    estimates: Optional[str] = None
    text_encoder: str = "minilm"
    text_encoder_weights: Optional[str] = None


@dataclass(frozen=True)
class ReconstructSettings:
    target_fps: float = 30.0
    stride: int = 16
    crop_size: int = 224
    max_frame_size: Optional[int] = 640
    clips_per_shard: int = 64
    steps: int = 5
    eta: float = 0.0
    sigma: float = 1.0
    guidance_scale: float = 0.0
    guidance_penetration: float = 1.0
    guidance_aux: float = 1.0
    joint_radius: float = 0.08
    seed: int = 0
    batch_size: int = scheduling(4)
    prefetch_clips: int = scheduling(4)
    detector_size: tuple[int, int] = (800, 1440)
    detector_confidence: float = 0.23
    detect_every: int = 1
    max_gap: int = 15
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"

    def guidance_weights(self) -> GuidanceWeights:
        return GuidanceWeights(self.guidance_scale, self.guidance_penetration, self.guidance_aux, self.joint_radius)


def model_name(spec: ReconstructSpec) -> str:
    """How results name the model: the preset for dummy weights, else the family."""
    return f"socialmirror/{spec.preset}" if spec.checkpoint is None else "socialmirror"
