"""dhvae speed: one denoiser step, one whole sentence, at batch 1 / 8 / 64, and the paper's protocol.

- engine way: ``DHVAEGenerator`` as the job runs it (batched CFG in one call, the null text's
  AdaLN modulation once per step, planned DDIM scalars, fused update, decode of num_frames frames).
- protocol way: the public release's evaluation loop, one sentence at a time: diffusers'
  ``DDIMScheduler.step`` each step, cond + uncond through the full denoiser, and the VAE decoder
  run over its full 300-frame window (the release masks the frames past the length).
AITS = median seconds per call / sentences per call; the text encoder is outside every timing.
"""

import pytest
import torch
from diffusers import DDIMScheduler

from benchmarks.conftest import record
from motionfleet.bench import count_flops
from motionfleet.core.seeding import SampleNoise
from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec

FRAMES = 120
BATCHES = [1, 8, 64]


@pytest.fixture(scope="module")
def generator():
    return DHVAEGenerator(ModelSpec(preset="official"), GenerateSettings(default_frames=FRAMES))


@pytest.fixture(scope="module")
def text(generator):
    prompts = ["two people greet each other by shaking hands", "one person pushes the other away"]
    return generator._encode(prompts)


def batch_text(text, n):
    return text[torch.arange(n) % len(text)]


def test_fp32_matmul_rate(benchmark):
    """The machine's fp32 GEMM rate: the ceiling the denoising loop is measured against."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    benchmark.pedantic(torch.mm, (a, b), rounds=10, warmup_rounds=2)
    record(benchmark, 2 * 2048**3, 1)


@pytest.mark.parametrize("batch", BATCHES)
def test_engine_denoiser_step(benchmark, generator, text, batch):
    """One CFG step (cond + uncond, batch 2B through the transformer), the engine's way."""
    x = torch.randn(batch, 3, 256)
    cond = batch_text(text, batch)
    step = lambda: dhvae.guided_pair(generator.model.denoiser, x, 501, cond, generator.null_text)
    with torch.inference_mode():
        flops = count_flops(step)
        benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    record(benchmark, flops, batch)


@pytest.mark.parametrize("batch", BATCHES)
def test_engine_sentence(benchmark, generator, text, batch):
    """50 DDIM steps + decode for ``batch`` sentences, as a job shard runs them."""
    cond = batch_text(text, batch)
    seeds = list(range(batch))

    def sentences():
        latents = generator.sample_latents(cond, SampleNoise(seeds))
        return generator.decode(latents, [FRAMES] * batch)

    with torch.inference_mode():
        denoise_flops = count_flops(lambda: generator.sample_latents(cond, SampleNoise(seeds)))
        benchmark.pedantic(sentences, rounds=3 if batch < 64 else 2, warmup_rounds=1)
    record(benchmark, denoise_flops, batch, note="flops: denoising loop only")


def protocol_sentence(model, scheduler, text, null_text):
    """The release's CHMLD.denoise + forward_test for one sentence (guidance 3.5, 50 steps)."""
    latents = torch.randn(1, 3, 256)
    scheduler.set_timesteps(50)
    cond = torch.cat([null_text, text])
    for t in scheduler.timesteps:
        eps = model.denoiser(torch.cat([latents] * 2), t.unsqueeze(0), cond)
        uncond, c = eps.chunk(2)
        latents = scheduler.step(uncond + 3.5 * (c - uncond), t, latents, eta=0.0).prev_sample
    return model.decoder(latents, 300)[:, :, :FRAMES]


def test_protocol_sentence(benchmark, generator, text):
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type="epsilon")
    run = lambda: protocol_sentence(generator.model, scheduler, text[:1], generator.null_text)
    with torch.inference_mode():
        benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    record(benchmark, 0, 1)
