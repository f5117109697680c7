"""DDIM centred on an initial estimate (SocialMirror supp. eqs. 2-3; CloseInt's sampler).

Eq. 2 diffuses the offset from the initial estimate x instead of the motion itself:
    x_t = x + sqrt(abar_t) (x0 - x) + sqrt(1 - abar_t) eps,   eps ~ N(0, sigma^2 I)        (eq. 2)
so y_t = x_t - x is an ordinary DDPM state of y0 = x0 - x with noise of scale sigma, and the reverse
process (eq. 3) starts at x_T ~ N(x, sigma^2 I), i.e. y_T = sigma z. The denoiser works on y
(CloseInt feeds x_t - mean and adds the mean back to its output) and predicts y0 (x0 prediction),
so each step is DDIM eq. 12 in its linear form (``ddim.py``), the fresh noise scaled by sigma:
    y_prev = a y_t + b y0_hat + sigma_t sigma z + b_eps g
and the result is x + y_0.

CloseInt's settings (``interhuman_diffusion.py``): 100 train steps, cosine betas, x0 prediction,
'ddim5' respacing, i.e. timesteps 80, 60, 40, 20, 0 and the last step to abar = 1 (diffusers'
'leading' spacing with steps_offset 0 and set_alpha_to_one), sigma = 1.

Guidance (optional) is ScoreHOI's score guidance (``sampling.score_guidance``, same interface
``loss_grad(x0_hat) -> (L, dL/dx0_hat)``, same fused update): with the predicted noise held fixed,
    dL/dy_t = dL/dx0_hat / sqrt(abar_t),   eps' = eps_hat + rho sqrt(1 - abar_t) dL/dy_t
For an x0-prediction model the algebra is the eps model's: eps_hat = (y_t - sqrt(abar_t) y0_hat) /
sqrt(1 - abar_t); adding g to eps_hat and re-deriving y0_hat from it moves y0_hat by
-sqrt(1 - abar_t) / sqrt(abar_t) g, so y_prev moves by (c_eps - c_x0 sqrt(1 - abar_t) / sqrt(abar_t)) g
= b_eps g, the coefficient ``ddim.plan`` gives every step whatever the prediction type.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from motionfleet.kernels.ddim import ddim_update
from motionfleet.sampling import ddim
from motionfleet.sampling.schedules import NoiseSchedule
from motionfleet.sampling.score_guidance import LossGradient

SCHEDULE = NoiseSchedule(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")


def closeint_config(steps: int = 5, eta: float = 0.0) -> ddim.DDIMConfig:
    """CloseInt's respaced DDIM (5 steps: t = 80, 60, 40, 20, 0)."""
    return ddim.DDIMConfig(schedule=SCHEDULE, steps=steps, eta=eta, prediction_type="sample",
                           steps_offset=0, set_alpha_to_one=True, timestep_spacing="leading")


def sample_around(denoise: Callable[[torch.Tensor, int], torch.Tensor], x_init: torch.Tensor,
                  z_start: torch.Tensor, steps: list[ddim.DDIMStep], sigma: float = 1.0,
                  step_noise: Optional[Callable[[int], torch.Tensor]] = None,
                  loss_grad: Optional[LossGradient] = None, rho: float = 0.0) -> torch.Tensor:
    """x0 from x_T = x_init + sigma z_start. ``denoise(y_t, t)`` predicts the offset y0 from x_init;
    ``step_noise(i)`` gives step i's standard-normal noise (only when eta > 0); ``loss_grad``
    takes the absolute x0_hat = x_init + y0_hat."""
    ddim.check_step_noise(steps, step_noise)
    y = sigma * z_start
    for i, step in enumerate(steps):
        y0_hat = denoise(y, step.t)
        noise = sigma * step_noise(i) if step.sigma > 0 and step_noise is not None else None
        correction, scale = None, 0.0
        if loss_grad is not None and rho:
            _, grad_x0 = loss_grad(x_init + y0_hat)
            correction = grad_x0 / math.sqrt(step.abar_t)  # dL/dy_t
            scale = step.b_eps * rho * math.sqrt(1 - step.abar_t)
        y = ddim_update(y, y0_hat, step.a, step.b, sigma=step.sigma, noise=noise,
                        correction=correction, correction_scale=scale)
    return x_init + y
