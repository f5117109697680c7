"""DDIM sampler: agreement with diffusers, and recovery of an analytic Gaussian."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import DDIMScheduler

from motionfleet.kernels.ddim import ddim_update
from motionfleet.sampling import ddim
from motionfleet.sampling.schedules import NoiseSchedule


def diffusers_scheduler(config: ddim.DDIMConfig) -> DDIMScheduler:
    s = config.schedule
    scheduler = DDIMScheduler(
        num_train_timesteps=s.num_train_timesteps, beta_start=s.beta_start, beta_end=s.beta_end,
        beta_schedule=s.beta_schedule, clip_sample=False, set_alpha_to_one=config.set_alpha_to_one,
        steps_offset=config.steps_offset, prediction_type=config.prediction_type,
        timestep_spacing=config.timestep_spacing,
    )
    scheduler.set_timesteps(config.steps)
    return scheduler


CONFIGS = [
    ddim.DDIMConfig(prediction_type=p, eta=eta)
    for p in ddim.PREDICTION_TYPES for eta in (0.0, 0.7)
] + [
    ddim.DDIMConfig(schedule=NoiseSchedule(beta_schedule="squaredcos_cap_v2"), steps=20,
                    steps_offset=0, timestep_spacing="trailing", set_alpha_to_one=True),
    ddim.DDIMConfig(schedule=NoiseSchedule(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
                    steps=25, timestep_spacing="linspace", steps_offset=0),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.prediction_type}-eta{c.eta}-{c.schedule.beta_schedule}-{c.timestep_spacing}")
def test_steps_agree_with_diffusers(config):
    scheduler = diffusers_scheduler(config)
    steps = ddim.plan(config)
    assert [s.t for s in steps] == scheduler.timesteps.tolist()
    gen = torch.Generator().manual_seed(0)
    # float64 on both sides: diffusers' float32 arithmetic cancels badly where 1 - abar_t is small
    x = torch.randn(4, 3, 256, generator=gen, dtype=torch.float64)
    for step in steps:
        out = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        expected = scheduler.step(out, step.t, x, eta=config.eta, variance_noise=noise).prev_sample
        ours = ddim_update(x, out, step.a, step.b, sigma=step.sigma, noise=noise)
        # diffusers takes abar as float32 scalars even for float64 samples; compare norms
        assert (ours - expected).norm() <= 1e-5 * expected.norm()
        x = expected


def gaussian_epsilon(mu: torch.Tensor, cov: torch.Tensor, abar: torch.Tensor):
    """Exact E[eps | x_t] for data ~ N(mu, cov): x_t ~ N(sqrt(abar) mu, abar cov + (1 - abar) I),
    so eps_hat = sqrt(1 - abar) * (abar cov + (1 - abar) I)^-1 (x_t - sqrt(abar) mu)."""
    eye = torch.eye(len(mu), dtype=mu.dtype)

    def model(x, t):
        a = abar[t]
        precision = torch.linalg.inv(a * cov + (1 - a) * eye)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) @ precision.T

    return model


# eta = 1 drops Var[x0 | x_t] from the posterior, exact only as steps -> all 1000 (DDPM ancestral).
@pytest.mark.parametrize("eta,steps", [(0.0, 50), (1.0, 1000)])
def test_ddim_recovers_gaussian(eta, steps):
    torch.manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    root = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.2, 0.4]], dtype=torch.float64)
    cov = root @ root.T
    config = ddim.DDIMConfig(eta=eta, steps=steps, steps_offset=0 if steps == 1000 else 1)
    abar = ddim.alphas_cumprod(config.schedule).double()
    n = 40_000
    gen = torch.Generator().manual_seed(1)
    steps = ddim.plan(config)
    # "leading" spacing starts at t = 981 where abar is 0.006, not 0: start from that marginal.
    a_T = abar[steps[0].t]
    start_cov = a_T * cov + (1 - a_T) * torch.eye(3, dtype=torch.float64)
    x = a_T.sqrt() * mu + torch.randn(n, 3, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(start_cov).T
    samples = ddim.sample(gaussian_epsilon(mu, cov, abar), x, steps,
                          step_noise=lambda i: torch.randn(n, 3, generator=gen, dtype=torch.float64))
    # The last DDIM step lands on abar_0 = 1 - beta_0 (set_alpha_to_one=False), not on clean data:
    # the target is N(sqrt(abar_0) mu, abar_0 cov + (1 - abar_0) I).
    a0 = abar[0]
    target_mu, target_cov = a0.sqrt() * mu, a0 * cov + (1 - a0) * torch.eye(3, dtype=torch.float64)
    stderr = (target_cov.diagonal() / n).sqrt()
    assert ((samples.mean(0) - target_mu).abs() < 5 * stderr).all()
    torch.testing.assert_close(samples.T.cov(), target_cov, rtol=0.05, atol=0.02)


def test_cfg_combine_matches_formula():
    gen = torch.Generator().manual_seed(0)
    x, u, c = (torch.randn(8, 3, 16, generator=gen) for _ in range(3))
    out = ddim_update(x, c, 0.9, -0.2, uncond=u, guidance_scale=3.5)
    torch.testing.assert_close(out, 0.9 * x - 0.2 * (u + 3.5 * (c - u)))


TRITON_CHECK = textwrap.dedent("""
    import torch
    from motionfleet.kernels.ddim import ddim_update_reference, ddim_update_triton
    gen = torch.Generator().manual_seed(0)
    for n in (1, 1000, 3 * 256 * 5 + 7):
        x, c, u, z, g = (torch.randn(n, generator=gen) for _ in range(5))
        for kw in ({}, {"uncond": u, "guidance_scale": 3.5}, {"sigma": 0.3, "noise": z},
                   {"uncond": u, "guidance_scale": 2.0, "sigma": 0.1, "noise": z,
                    "correction": g, "correction_scale": -0.05}):
            ref = ddim_update_reference(x, c, 1.01, -0.12, **kw)
            out = ddim_update_triton(x, c, 1.01, -0.12, block=256, **kw)
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    print("triton-ok")
""")


def test_triton_kernel_matches_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "triton-ok" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA, where no kernel can run")
def test_triton_is_imported_only_where_a_kernel_can_run():
    """Without CUDA the kernels' modules leave Triton unimported (0.24 s of a CPU job's start), and
    the kernel says why it cannot run; under TRITON_INTERPRET=1 Triton is there for the tests."""
    check = textwrap.dedent("""
        import sys, torch
        from motionfleet.kernels import ddim, guidance
        print("triton" in sys.modules, ddim.triton is not None, guidance.triton is not None)
        try:
            ddim.ddim_update_triton(torch.zeros(3), torch.zeros(3), 1.0, 0.0)
        except ImportError as err:
            print(err)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cpu = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert cpu.stdout.splitlines()[0] == "False False False", cpu.stderr
    assert "a CUDA device, or TRITON_INTERPRET=1" in cpu.stdout
    pytest.importorskip("triton")
    interpreted = subprocess.run([sys.executable, "-c", check], env={**env, "TRITON_INTERPRET": "1"}, capture_output=True,
                                 text=True, timeout=300)
    assert interpreted.stdout.splitlines()[0] == "True True True", interpreted.stderr


def test_a_schedule_with_eta_needs_its_step_noise():
    """eta > 0 steps add fresh noise: without a way to draw it the sampler refuses, never drops it."""
    from motionfleet.sampling import initial_ddim

    steps = ddim.plan(ddim.DDIMConfig(steps=4, eta=1.0))
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="step_noise"):
        ddim.sample(lambda x, t: torch.zeros_like(x), x, steps)
    with pytest.raises(ValueError, match="step_noise"):
        initial_ddim.sample_around(lambda y, t: torch.zeros_like(y), x, x, steps, sigma=0.1)
    deterministic = ddim.plan(ddim.DDIMConfig(steps=4, eta=0.0))
    assert ddim.sample(lambda x, t: torch.zeros_like(x), x, deterministic).shape == x.shape
