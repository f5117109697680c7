"""DDIM inversion (Song et al. 2021; ScoreHOI eq. 3): run the eta-0 ODE from x0 up to a noise level.

    x0_hat(x_t) = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)                    (eq. 2)
    x_t'        = sqrt(abar_t') x0_hat(x_t) + sqrt(1 - abar_t') eps(x_t, t),   t' > t     (eq. 3)
so each step is ``x_t' = a x_t + b eps`` with a = sqrt(abar_t' / abar_t) and
b = sqrt(1 - abar_t') - a sqrt(1 - abar_t): the same fused update as a DDIM step. The estimate
itself is taken as x at t = 0 (abar[0] < 1), as ScoreHOI's public code does. Knows nothing of
networks: ``denoise(x, t) -> eps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from motionfleet.kernels.ddim import ddim_update
from motionfleet.sampling.ddim import strided_timesteps
from motionfleet.sampling.schedules import NoiseSchedule, alphas_cumprod


@dataclass(frozen=True)
class InversionStep:
    t: int  # the timestep the denoiser is evaluated at (the lower noise level)
    a: float  # coefficient of x_t
    b: float  # coefficient of eps


def plan_inversion(schedule: NoiseSchedule, stop: int, stride: int) -> list[InversionStep]:
    """Steps 0 -> stride -> ... -> stop (ScoreHOI Algorithm A, line 3)."""
    abar = alphas_cumprod(schedule).double()
    ts = strided_timesteps(stop, stride, schedule.num_train_timesteps)
    steps = []
    for t, t_next in zip(ts[:-1], ts[1:]):
        a = math.sqrt(float(abar[t_next]) / float(abar[t]))
        steps.append(InversionStep(t, a, math.sqrt(1 - float(abar[t_next])) - a * math.sqrt(1 - float(abar[t]))))
    return steps


def invert(denoise: Callable[[torch.Tensor, int], torch.Tensor], x0: torch.Tensor,
           steps: list[InversionStep]) -> torch.Tensor:
    """x_tau from x0 by eq. 3, one denoiser call per step."""
    x = x0
    for step in steps:
        x = ddim_update(x, denoise(x, step.t), step.a, step.b)
    return x
