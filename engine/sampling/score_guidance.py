"""Score-guided DDIM and contact-driven iterative refinement (ScoreHOI, Sec. 3.3-3.4, Alg. 1 and A).

Equation numbers are those of the paper's text in order (1: eps = -sqrt(1 - abar_t) score,
2: x0_hat, 3: DDIM inversion, 4: p(P | c, x_t) ~ p(P | c, x0_hat), 5: L_P, 6: eps').
One guided step at t (Algorithm A, lines 5-11):
    eps     = eps_phi(x_t, t)                                     (line 5; no gradient)
    x0_hat  = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)         (eq. 2, line 7)
    dL/dx_t = dL/dx0_hat / sqrt(abar_t)                           (eps held fixed: the denoiser is
                                                                   never differentiated)
    eps'    = eps + rho sqrt(1 - abar_t) dL/dx_t                   (eq. 6, line 9)
    x_prev  = DDIM step with eps' (eta 0)                          (lines 10-11)
The last step goes to alpha_bar[0], not 1, and rounds carry that state (the public loop: it is
what the released weights were evaluated with; Algorithm A's text returns x0_hat instead).
A correction g to eps enters x_prev with the factor ``step.b_eps`` (``sampling.ddim``), so the
last two lines are one fused update. Knows nothing of networks: ``denoise(x, t) -> eps`` and
``loss_grad(x0_hat) -> (L (B,), dL/dx0_hat)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from motionfleet.kernels.ddim import ddim_update
from motionfleet.sampling.ddim import DDIMStep
from motionfleet.sampling.ddim_invert import InversionStep, invert

Denoise = Callable[[torch.Tensor, int], torch.Tensor]
LossGradient = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def guided_sample(denoise: Denoise, x: torch.Tensor, steps: list[DDIMStep], loss_grad: LossGradient,
                  rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x_tau -> (state after the last step, that step's x0_hat) by score-guided DDIM (Algorithm A,
    lines 4-13); rho = 0 is plain DDIM. x0_hat is re-derived from the corrected eps' (eq. 2), as
    the public code's ``x_start``."""
    x0_hat = x
    for i, step in enumerate(steps):
        eps = denoise(x, step.t)
        s0, s1 = math.sqrt(step.abar_t), math.sqrt(1 - step.abar_t)
        last = i == len(steps) - 1
        if rho == 0:
            if last:
                x0_hat = (x - s1 * eps) / s0  # eq. 2
            x = ddim_update(x, eps, step.a, step.b)
            continue
        _, grad_x0 = loss_grad((x - s1 * eps) / s0)  # eq. 2
        grad_xt = grad_x0 / s0  # dL/dx_t
        if last:
            x0_hat = (x - s1 * (eps + rho * s1 * grad_xt)) / s0  # eq. 2 with eq. 6's eps'
        x = ddim_update(x, eps, step.a, step.b, correction=grad_xt, correction_scale=step.b_eps * rho * s1)  # eq. 6
    return x, x0_hat


def refine(denoise: Denoise, x0: torch.Tensor, inversion: list[InversionStep], steps: list[DDIMStep],
           guidance_for_round: Callable[[int, torch.Tensor], LossGradient], rounds: int,
           rho: float) -> torch.Tensor:
    """Contact-driven iterative refinement (Algorithm 1) as the public loop runs it: the estimate
    is the state at timestep 0; each round inverts the state to tau (eq. 3) and samples back with
    guidance to timestep 0 (alpha_bar[0]), and that state, not x0_hat, starts the next round.
    ``guidance_for_round(n, x0^n)`` builds round n's loss from the previous round's x0_hat (the
    public ``x_0``, from which contacts are predicted, Algorithm 1 lines 4-5); the result is the
    last round's x0_hat."""
    state, x0_hat = x0, x0
    for n in range(rounds):
        loss_grad = guidance_for_round(n, x0_hat)
        state, x0_hat = guided_sample(denoise, invert(denoise, state, inversion), steps, loss_grad, rho)
    return x0_hat
