"""refine's settings: the sampler presets, how to run (``RefineSettings``) and which weights and
body model (``RefineModelSpec``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from motionfleet.common.bodies import find_model_file
from motionfleet.core.io.digests import content_sha256
from motionfleet.core.options import scheduling
from motionfleet.demo.body_models import cached_synthetic_body_models
from motionfleet.scorehoi.hoi import GuidanceWeights


@dataclass(frozen=True)
class RefinePreset:
    rounds: int  # N, contact-driven refinement rounds (Algorithm 1)
    tau: int  # noise level the estimate is inverted to (timesteps of 1000)
    stride: int  # DDIM step size (Delta t)


SAMPLER_PRESETS = {
    "paper": RefinePreset(rounds=10, tau=50, stride=2),  # Sec. 3.6 and Table 4
    "public": RefinePreset(rounds=20, tau=50, stride=5),  # lib/core/config.py of the public code
    "fast": RefinePreset(rounds=2, tau=50, stride=2),  # Table 4 row 4, 'ScoreHOI-F'
}


@dataclass(frozen=True)
class RefineSettings:
    """Sampler, guidance and runtime settings (the defaults are the paper preset)."""

    rounds: int = SAMPLER_PRESETS["paper"].rounds
    tau: int = SAMPLER_PRESETS["paper"].tau
    stride: int = SAMPLER_PRESETS["paper"].stride
    guidance_scale: float = 0.5  # rho of eq. 6 (the public code's gradient_scale is 1 for its own losses)
    weights: GuidanceWeights = GuidanceWeights()
    contact_distance: float = 0.10  # m, the default contact predictor's threshold
    floor_distance: float = 0.05  # m
    folded: bool = True
    control: bool = False  # also refine every row with guidance off
    batch_size: int = scheduling(64)
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "RefineSettings":
        if name not in SAMPLER_PRESETS:
            raise ValueError(f"unknown refine preset {name!r}; expected one of {sorted(SAMPLER_PRESETS)}")
        return cls(**{**asdict(SAMPLER_PRESETS[name]), **overrides})

    def sampler(self) -> dict:
        return {"sampler": "ddim-inversion + score-guided ddim (ScoreHOI Alg. 1, A)", "rounds": self.rounds,
                "tau": self.tau, "stride": self.stride, "eta": 0.0}


@dataclass(frozen=True)
class RefineModelSpec:
    """Which weights and which body model. ``body_models`` is a folder with SMPL-H
    (``smplh/SMPLH_NEUTRAL.npz``); ``synthetic_body`` says it holds our synthetic stand-in."""

    body_models: str
    synthetic_body: bool
    preset: str = "released"
    checkpoint: Optional[str] = None
    dummy_seed: int = 0
    image_encoder_weights: Optional[str] = None

    def body_description(self) -> str:
        if self.synthetic_body:
            return "synthetic SMPL-H stand-in (motionfleet, seed 0), not the licensed model"
        return f"SMPL-H sha256:{content_sha256(find_model_file('smplh', self.body_models))}"


def model_spec(preset: str = "released", checkpoint: Optional[str] = None, dummy_seed: int = 0,
               body_models: Optional[str] = None, image_encoder_weights: Optional[str] = None) -> RefineModelSpec:
    """The spec with the body model folder resolved: ``body_models``, or the synthetic cache."""
    folder = str(cached_synthetic_body_models("smplh")) if body_models is None else body_models
    return RefineModelSpec(folder, body_models is None, preset, checkpoint, dummy_seed, image_encoder_weights)
