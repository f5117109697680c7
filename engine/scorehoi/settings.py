"""refine's settings: the sampler presets, how to run (``RefineSettings``) and which weights and
body model (``RefineModelSpec``). Each setting of the command is written once, on its field
(``core.options.setting``); ``--sampler-preset`` alone is no field: its values fill the rounds, tau
and stride not given."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from motionfleet.common.bodies import find_model_file
from motionfleet.core.io.digests import content_sha256
from motionfleet.core.options import existing_file, file_setting, scheduling, setting
from motionfleet.demo.body_models import cached_synthetic_body_models
from motionfleet.scorehoi.hoi import GuidanceWeights


@dataclass(frozen=True)
class RefinePreset:
    rounds: int  # N, contact-driven refinement rounds (Algorithm 1)
    tau: int  # noise level the estimate is inverted to (timesteps of 1000)
    stride: int  # DDIM step size (Delta t)


TRAIN_STEPS = 1000
SAMPLER_PRESETS = {
    "paper": RefinePreset(rounds=10, tau=50, stride=2),  # Sec. 3.6 and Table 4
    "public": RefinePreset(rounds=20, tau=50, stride=5),  # lib/core/config.py of the public code
    "fast": RefinePreset(rounds=2, tau=50, stride=2),  # Table 4 row 4, 'ScoreHOI-F'
}


@dataclass(frozen=True)
class RefineSettings:
    """Sampler, guidance and runtime settings (the defaults are the paper preset)."""

    rounds: int = setting(SAMPLER_PRESETS["paper"].rounds, "refinement rounds N (overrides the sampler preset)", low=1,
                          flag_default=None)
    tau: int = setting(SAMPLER_PRESETS["paper"].tau, f"inversion noise level, of {TRAIN_STEPS} steps (overrides the "
                       "sampler preset)", low=1, high=TRAIN_STEPS - 1, flag_default=None)
    stride: int = setting(SAMPLER_PRESETS["paper"].stride, "DDIM step size Delta t (overrides the sampler preset)",
                          flag="ddim_stride", low=1, flag_default=None)
    guidance_scale: float = setting(0.5, "rho of eq. 6; 0: off", low=0.0)  # the public code's gradient_scale is 1 for its own losses
    weights: GuidanceWeights = GuidanceWeights()
    contact_distance: float = setting(0.10, "the default contact predictor marks human points this close to the object (m)",
                                      above=0.0)
    floor_distance: float = 0.05  # m
    folded: bool = setting(True, "run the unfolded reference denoiser (same function, about 12x the FLOPs)",
                           flag="unfolded", inverted=True)
    control: bool = setting(False, "also refine every row with guidance off (rho 0); on with --demo")
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
    (``smplh/SMPLH_NEUTRAL.npz``), the synthetic stand-in's where none is given (``model_spec``);
    ``synthetic_body`` says it holds that stand-in."""

    preset: str = "released"
    checkpoint: Optional[str] = None
    dummy_seed: int = 0
    body_models: str = file_setting("folder with the licensed smplh/SMPLH_NEUTRAL.npz (default: a synthetic stand-in "
                                    "written once to $MOTIONFLEET_CACHE/body_models)")
    image_encoder_weights: Optional[str] = file_setting("torchvision-format ResNet-50 weights for image_path rows",
                                                        existing_file)
    synthetic_body: bool = False

    def body_description(self) -> str:
        if self.synthetic_body:
            return "synthetic SMPL-H stand-in (motionfleet, seed 0), not the licensed model"
        return f"SMPL-H sha256:{content_sha256(find_model_file('smplh', self.body_models))}"


def model_spec(preset: str = "released", checkpoint: Optional[str] = None, dummy_seed: int = 0,
               body_models: Optional[str] = None, image_encoder_weights: Optional[str] = None) -> RefineModelSpec:
    """The spec with the body model folder resolved: ``body_models``, or the synthetic cache."""
    folder = str(cached_synthetic_body_models("smplh")) if body_models is None else body_models
    return RefineModelSpec(preset, checkpoint, dummy_seed, folder, image_encoder_weights, body_models is None)
