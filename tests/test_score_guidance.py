"""DDIM inversion, score-guided DDIM and the refinement loop, against ScoreHOI's Algorithm A
written out literally with autograd."""

import math

import pytest
import torch

from motionfleet.sampling.ddim import plan_strided
from motionfleet.sampling.ddim_invert import invert, plan_inversion
from motionfleet.sampling.schedules import NoiseSchedule, alphas_cumprod
from motionfleet.sampling.score_guidance import guided_sample, refine

COSINE = NoiseSchedule(beta_schedule="squaredcos_cap_v2")
ABAR = alphas_cumprod(COSINE).double()


def linear_denoiser(seed=0, dim=6):
    """eps(x, t) = W x + b + 0.01 t: depends on x and t, like a network."""
    g = torch.Generator().manual_seed(seed)
    weight = 0.3 * torch.randn(dim, dim, generator=g, dtype=torch.float64)
    bias = torch.randn(dim, generator=g, dtype=torch.float64)
    return lambda x, t: x @ weight.T + bias + 0.01 * t


def quadratic_loss(target):
    """L = sum (x0 - target)^2 per row, with its gradient."""
    return lambda x0: (((x0 - target) ** 2).sum(1), 2 * (x0 - target))


def algorithm_a(denoise, x, tau, stride, loss, rho):
    """ScoreHOI Algorithm A lines 4-13 as the public loop runs them, literally: autograd through
    x0_hat with eps held fixed, the last step to alphas_cumprod[0]; returns (state, last x0_hat)."""
    for t in range(tau, 0, -stride):
        abar_t = float(ABAR[t])
        abar_next = float(ABAR[t - stride])
        eps = denoise(x, t).detach()
        x_t = x.detach().requires_grad_(True)
        x0 = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
        (grad,) = torch.autograd.grad(loss(x0)[0].sum(), x_t)
        eps = eps + rho * math.sqrt(1 - abar_t) * grad
        x0 = (x_t.detach() - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
        x = math.sqrt(abar_next) * x0 + math.sqrt(1 - abar_next) * eps
    return x, x0


@pytest.mark.parametrize("tau, stride", [(50, 2), (50, 5)])
def test_plans_follow_the_public_code_grid(tau, stride):
    steps = plan_strided(COSINE, tau, stride)
    inversion = plan_inversion(COSINE, tau, stride)
    assert [s.t for s in steps] == list(range(tau, 0, -stride))
    assert [s.t for s in inversion] == list(range(0, tau, stride))
    assert steps[-1].abar_prev == float(ABAR[0]) and steps[0].abar_prev == pytest.approx(float(ABAR[tau - stride]))
    assert all(s.sigma == 0 for s in steps)


@pytest.mark.parametrize("tau, stride", [(50, 3), (0, 2), (1000, 5)])
def test_plans_refuse_grids_that_do_not_fit(tau, stride):
    with pytest.raises(ValueError):
        plan_strided(COSINE, tau, stride)


def test_inversion_then_unguided_sampling_returns_x0_hat_for_a_constant_noise_prediction():
    """With eps constant the DDIM ODE is exactly reversible: the state comes back to x0 at t = 0,
    and the last x0_hat is x0_hat(x0, t = 0) = (x0 - sqrt(1 - abar_0) c) / sqrt(abar_0)."""
    c = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 0.5, -0.25]], dtype=torch.float64)

    def denoise(x, t):
        return c.expand_as(x)

    x_tau = invert(denoise, x0, plan_inversion(COSINE, 50, 2))
    assert not torch.allclose(x_tau, x0)
    state, out = guided_sample(denoise, x_tau, plan_strided(COSINE, 50, 2), quadratic_loss(x0), rho=0.0)
    expected = (x0 - math.sqrt(1 - ABAR[0]) * c) / math.sqrt(ABAR[0])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, x0, rtol=0, atol=1e-12)


def test_rounds_carry_the_state_at_timestep_0_and_return_x0_hat_once():
    """eps = 0: inversion scales x by sqrt(abar_tau / abar_0) and sampling back to abar_0 undoes
    it, so the carried state stays the estimate and every round's x0_hat is x / sqrt(abar_0).
    Carrying x0_hat (stepping to abar = 1) would compound it: x / abar_0^(N/2) after N rounds."""
    x = torch.full((1, 4), 100.0, dtype=torch.float64)
    inversion, steps = plan_inversion(COSINE, 50, 5), plan_strided(COSINE, 50, 5)
    seen = []

    def guidance_for_round(n, x0_hat):
        seen.append(x0_hat.clone())
        return quadratic_loss(x0_hat)

    out = refine(lambda y, t: torch.zeros_like(y), x, inversion, steps, guidance_for_round, rounds=3, rho=0.0)
    expected = x / math.sqrt(ABAR[0])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(seen[0], x)
    for given in seen[1:]:
        torch.testing.assert_close(given, expected, rtol=1e-12, atol=0)


def test_inversion_matches_eq_3_step_by_step():
    denoise = linear_denoiser()
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = x
    for t, t_next in zip(range(0, 10, 5), range(5, 15, 5)):
        eps = denoise(expected, t)
        x0_hat = (expected - math.sqrt(1 - ABAR[t]) * eps) / math.sqrt(ABAR[t])
        expected = math.sqrt(ABAR[t_next]) * x0_hat + math.sqrt(1 - ABAR[t_next]) * eps
    torch.testing.assert_close(invert(denoise, x, plan_inversion(COSINE, 10, 5)), expected)


@pytest.mark.parametrize("rho", [0.0, 0.7, 3.0])
def test_guided_sampling_matches_algorithm_a_with_autograd(rho):
    denoise = linear_denoiser(seed=2)
    g = torch.Generator().manual_seed(3)
    x_tau = torch.randn(4, 6, dtype=torch.float64, generator=g)
    loss = quadratic_loss(torch.randn(4, 6, dtype=torch.float64, generator=g))
    ours = guided_sample(denoise, x_tau, plan_strided(COSINE, 50, 5), loss, rho)
    torch.testing.assert_close(ours, algorithm_a(denoise, x_tau, 50, 5, loss, rho))


def test_guidance_lowers_the_loss_and_never_differentiates_the_denoiser():
    calls = []
    base = linear_denoiser(seed=4)

    def denoise(x, t):
        calls.append(x.requires_grad)  # an input that is part of an autograd graph
        return base(x, t)

    x0 = torch.zeros(2, 6, dtype=torch.float64)
    target = torch.ones(2, 6, dtype=torch.float64)
    loss = quadratic_loss(target)
    inversion, steps = plan_inversion(COSINE, 50, 2), plan_strided(COSINE, 50, 2)
    _, unguided = guided_sample(denoise, invert(denoise, x0, inversion), steps, loss, rho=0.0)
    _, guided = guided_sample(denoise, invert(denoise, x0, inversion), steps, loss, rho=20.0)
    assert (loss(guided)[0] < loss(unguided)[0]).all()
    assert calls and not any(calls)


def test_refine_rebuilds_the_guidance_from_each_rounds_output():
    denoise = linear_denoiser(seed=5)
    seen = []

    def guidance_for_round(n, x):
        seen.append((n, x.clone()))
        return quadratic_loss(torch.full_like(x, float(n)))

    x0 = torch.zeros(1, 6, dtype=torch.float64)
    inversion, steps = plan_inversion(COSINE, 10, 5), plan_strided(COSINE, 10, 5)
    out = refine(denoise, x0, inversion, steps, guidance_for_round, rounds=3, rho=1.0)
    assert [n for n, _ in seen] == [0, 1, 2]
    state, x0_hat = x0, x0
    for n, given in seen:
        torch.testing.assert_close(given, x0_hat)
        loss = quadratic_loss(torch.full_like(x0, float(n)))
        state, x0_hat = guided_sample(denoise, invert(denoise, state, inversion), steps, loss, 1.0)
    torch.testing.assert_close(out, x0_hat)
