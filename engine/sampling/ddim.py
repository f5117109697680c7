"""DDIM (Song et al. 2021) over any denoiser callable; knows nothing of networks or backends.

One step, eq. 12:
    x_{t-1} = sqrt(abar_prev) * x0_hat + sqrt(1 - abar_prev - sigma_t^2) * eps_hat + sigma_t * z
    sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)   (eq. 16)
Whatever the model predicts (eps, v, or x0), x0_hat and eps_hat are linear in (x_t, prediction),
so every step is ``x_prev = a * x_t + b * prediction + sigma * z``; the per-step scalars
(a, b, sigma) are computed once per sampling run and the update is one fused elementwise pass
(``motionfleet.kernels.ddim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from motionfleet.kernels.ddim import ddim_update
from motionfleet.sampling.schedules import NoiseSchedule, alphas_cumprod

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class DDIMConfig:
    """Sampler settings with diffusers' ``DDIMScheduler`` names and defaults of the DHVAE release."""

    schedule: NoiseSchedule = NoiseSchedule()
    steps: int = 50
    eta: float = 0.0
    prediction_type: str = "epsilon"
    steps_offset: int = 1
    set_alpha_to_one: bool = False
    timestep_spacing: str = "leading"


@dataclass(frozen=True)
class DDIMStep:
    t: int
    abar_t: float
    abar_prev: float
    a: float  # coefficient of x_t
    b: float  # coefficient of the model prediction
    sigma: float  # coefficient of fresh noise
    b_eps: float  # coefficient of an additive correction to eps_hat (score guidance)


def timesteps(config: DDIMConfig) -> list[int]:
    """Descending timesteps as ``DDIMScheduler.set_timesteps`` makes them."""
    n_train, n = config.schedule.num_train_timesteps, config.steps
    if config.timestep_spacing == "leading":
        ratio = n_train // n
        ts = [i * ratio + config.steps_offset for i in range(n)]
    elif config.timestep_spacing == "trailing":
        spacing = n_train / n
        ts = [round(n_train - i * spacing) - 1 for i in range(n)][::-1]
    elif config.timestep_spacing == "linspace":
        ts = [round(x) for x in torch.linspace(0, n_train - 1, n, dtype=torch.float64).tolist()]
    else:
        raise ValueError(f"unknown timestep_spacing {config.timestep_spacing!r}")
    if not 1 <= n <= n_train or ts[-1] >= n_train:
        raise ValueError(f"{n} steps: the schedule of {n_train} training timesteps ({config.timestep_spacing} spacing, "
                         f"steps_offset {config.steps_offset}) has timesteps for 1 to {max_steps(config)} steps")
    return ts[::-1]


def max_steps(config: DDIMConfig) -> int:
    """The most steps whose timesteps all lie in the schedule (``leading`` spacing with
    ``steps_offset`` 1 over 1000 timesteps: 999, as diffusers' DDIMScheduler would index past its
    end at 1000)."""
    n_train = config.schedule.num_train_timesteps
    fits = (n for n in range(n_train, 0, -1)
            if config.timestep_spacing != "leading" or (n - 1) * (n_train // n) + config.steps_offset < n_train)
    return next(fits, 0)


def plan(config: DDIMConfig) -> list[DDIMStep]:
    """Per-step scalars for a whole DDIM run (hoisted out of the sampling loop)."""
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}")
    abar = alphas_cumprod(config.schedule).double()
    final = 1.0 if config.set_alpha_to_one else float(abar[0])
    ratio = config.schedule.num_train_timesteps // config.steps
    steps = []
    for t in timesteps(config):
        prev = t - ratio
        abar_t = float(abar[t])
        abar_prev = float(abar[prev]) if prev >= 0 else final
        steps.append(_step(t, abar_t, abar_prev, config.eta, config.prediction_type))
    return steps


def strided_timesteps(start: int, stride: int, num_train_timesteps: int) -> list[int]:
    """``[0, stride, ..., start]``, the grid of ScoreHOI's public code (``range(0, start + 1, stride)``)."""
    if stride < 1 or start < stride or start % stride or start >= num_train_timesteps:
        raise ValueError(f"need 0 < stride <= start < {num_train_timesteps} with start a multiple of stride, "
                         f"got start {start}, stride {stride}")
    return list(range(0, start + 1, stride))


def plan_strided(schedule: NoiseSchedule, start: int, stride: int) -> list[DDIMStep]:
    """eta-0 epsilon steps from t = start down by ``stride`` (ScoreHOI Algorithm A, line 4).

    Step t goes to abar[t - stride], the last one (t = stride) to abar[0] < 1 as the public loop
    does (``time_next`` 0 is ``alphas_cumprod[0]``), so its output is a state at timestep 0, not
    x0_hat; the sampler returns both.
    """
    abar = alphas_cumprod(schedule).double()
    ts = strided_timesteps(start, stride, schedule.num_train_timesteps)[1:]
    return [_step(t, float(abar[t]), float(abar[t - stride]), 0.0, "epsilon") for t in reversed(ts)]


def _step(t: int, abar_t: float, abar_prev: float, eta: float, prediction_type: str) -> DDIMStep:
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t)) * math.sqrt(1 - abar_t / abar_prev)
    s0, s1 = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    c_x0, c_eps = math.sqrt(abar_prev), math.sqrt(max(1 - abar_prev - sigma**2, 0.0))
    if prediction_type == "epsilon":  # x0 = (x - s1 eps) / s0
        a, b = c_x0 / s0, c_eps - c_x0 * s1 / s0
    elif prediction_type == "v_prediction":  # x0 = s0 x - s1 v,  eps = s1 x + s0 v
        a, b = c_x0 * s0 + c_eps * s1, c_eps * s0 - c_x0 * s1
    else:  # "sample": x0 = m,  eps = (x - s0 m) / s1
        a, b = c_eps / s1, c_x0 - c_eps * s0 / s1
    # An additive correction to eps_hat (score guidance) enters x_prev with the factor of eps_hat
    # in eq. 12 once x0_hat is re-derived from the corrected eps: c_eps - c_x0 * s1 / s0.
    return DDIMStep(t, abar_t, abar_prev, a, b, sigma, c_eps - c_x0 * s1 / s0)


Denoise = Callable[[torch.Tensor, int], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def check_step_noise(steps: list[DDIMStep], step_noise: Optional[Callable[[int], torch.Tensor]]) -> None:
    """eta > 0 gives steps a sigma, whose fresh noise (eq. 12's sigma_t epsilon_t) must be drawn."""
    if step_noise is None and any(step.sigma > 0 for step in steps):
        raise ValueError("a schedule with eta > 0 draws fresh noise at each step: pass step_noise")


def sample(
    denoise: Denoise,
    x: torch.Tensor,
    steps: list[DDIMStep],
    guidance_scale: float = 1.0,
    step_noise: Optional[Callable[[int], torch.Tensor]] = None,
) -> torch.Tensor:
    """Run DDIM from x_T. ``denoise(x, t)`` returns the prediction, or an (uncond, cond) pair
    that is combined by classifier-free guidance inside the fused update. ``step_noise(i)`` gives
    the fresh noise of step i (needed only when eta > 0)."""
    check_step_noise(steps, step_noise)
    for i, step in enumerate(steps):
        prediction = denoise(x, step.t)
        uncond, cond = prediction if isinstance(prediction, tuple) else (None, prediction)
        noise = step_noise(i) if step.sigma > 0 and step_noise is not None else None
        x = ddim_update(x, cond, step.a, step.b, uncond=uncond, guidance_scale=guidance_scale,
                        sigma=step.sigma, noise=noise)
    return x
