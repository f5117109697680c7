"""Noise schedules: betas -> cumulative alphas, with diffusers' conventions and names.

``abar_t = prod_{s<=t} (1 - beta_s)`` (DDPM, Ho et al. 2020, eq. 4). Computed in float32 as
diffusers does, so that our DDIM steps agree with ``DDIMScheduler`` to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """A trained model's forward process; ``beta_schedule`` uses diffusers' names."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012


def betas(schedule: NoiseSchedule) -> torch.Tensor:
    n = schedule.num_train_timesteps
    if schedule.beta_schedule == "linear":
        return torch.linspace(schedule.beta_start, schedule.beta_end, n, dtype=torch.float32)
    if schedule.beta_schedule == "scaled_linear":
        # Latent-diffusion schedule: linear in sqrt(beta).
        return torch.linspace(schedule.beta_start**0.5, schedule.beta_end**0.5, n, dtype=torch.float32) ** 2
    if schedule.beta_schedule == "squaredcos_cap_v2":
        return _cosine_betas(n)
    raise ValueError(f"unknown beta_schedule {schedule.beta_schedule!r}")


def _cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: abar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), s = 0.008."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    values = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return torch.tensor(values, dtype=torch.float32)


def alphas_cumprod(schedule: NoiseSchedule) -> torch.Tensor:
    return torch.cumprod(1.0 - betas(schedule), dim=0)
