"""generate's settings: how to sample (``GenerateSettings``) and which weights and text encoder
(``ModelSpec``). Each setting of the command is written once, on its field (``core.options.setting``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from motionfleet.core.options import MAX_SEED, existing_file, file_setting, scheduling, setting
from motionfleet.dhvae.motion_space import SPACES

MAX_FRAMES = 300


@dataclass(frozen=True)
class GenerateSettings:
    steps: int = setting(50, "DDIM steps", low=1, high=1000)
    guidance_scale: float = setting(3.5, "classifier-free guidance scale w", low=0.0)
    eta: float = setting(0.0, "DDIM eta (0: deterministic)", low=0.0, high=1.0)
    seed: int = setting(0, "job seed; each sample's noise comes from (seed, id, repeat)", low=0, high=MAX_SEED)
    batch_size: int = scheduling(64)
    default_frames: int = setting(120, f"frames for prompts that give none (max {MAX_FRAMES})", flag="num_frames", low=1,
                                  high=MAX_FRAMES)
    repeats: int = setting(1, "samples per prompt", low=1)
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"
    motion_space: str = setting("normalized", "space of the motion column (denormalized and both need --motion-stats)",
                                choices=SPACES)


@dataclass(frozen=True)
class ModelSpec:
    family: str = "dhvae"
    preset: str = "official"
    checkpoint: Optional[str] = None
    dummy_seed: int = 0
    text_encoder: str = setting("minilm", "the prompt encoder (clip: the DHVAE release's, CLIP ViT-L/14@336px + the "
                                "checkpoint's clipTrans; precomputed: the prompts' text_features)",
                                choices=("minilm", "clip", "precomputed"))
    text_encoder_weights: Optional[str] = file_setting("OpenAI's CLIP weights as a state dict (clip) or a saved MiniLM "
                                                       "projection", existing_file)
    vae_hparams: Optional[str] = file_setting("the release VAE's hparams.yaml (default: found beside the checkpoint)",
                                              existing_file)
    null_text_feature: Optional[str] = file_setting(".npy of the text encoder's feature of \"\" (the CFG null condition) "
                                                    "for --text-encoder precomputed", existing_file)
    motion_stats: Optional[str] = file_setting("folder with InterHuman's global_mean.npy and global_std.npy")
