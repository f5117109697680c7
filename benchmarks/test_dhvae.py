"""dhvae speed: one denoiser step and one whole sentence the engine's way at batch 1 / 8 / 64, and
the authors' loop (the release's own code path, re-created in ``benchmarks/authors_loop.py``) in
the same session.

    python -m pytest benchmarks/test_dhvae.py --benchmark-enable

Settings of the latency comparison (issue 12): fp32, the machine's threads, 50 DDIM steps,
guidance 3.5, 300-frame sentences, seeded dummy weights of the official size; the text encoder is
outside every timing (AITS). Each case records FLOPs of exactly what it times, the per-item
median, and the load average before and after.
"""

import pytest
import torch

from benchmarks import authors_loop
from benchmarks.conftest import record
from motionfleet.bench import count_flops
from motionfleet.core.runtime.batching import pad_rows
from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae.bench import generate_once
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec

FRAMES = 300
BATCHES = [1, 8, 64]


@pytest.fixture(scope="module")
def generator():
    return DHVAEGenerator(ModelSpec(preset="official", text_encoder="precomputed"),
                          GenerateSettings(default_frames=FRAMES, batch_size=max(BATCHES)))


@pytest.fixture(scope="module")
def release(generator):
    return authors_loop.load_engine_weights(authors_loop.ReleaseModel(generator.model.config), generator.model)


def test_fp32_matmul_rate(benchmark):
    """The machine's fp32 GEMM rate: the ceiling the denoising loop is measured against."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    benchmark.pedantic(torch.mm, (a, b), rounds=10, warmup_rounds=2)
    record(benchmark, 2 * 2048**3, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_lone_decode(benchmark, generator, threads):
    """One sample's 300-frame decode on ``threads`` torch threads, as ``DHVAEGenerator.decode`` runs
    it on the CPU (on ``DECODE_THREADS``); the thread count decides its bits and most of batch 1's AITS."""
    latent = torch.randn(1, *generator.model.latent_shape)
    run = lambda: generator.decoder(latent, FRAMES)
    flops = count_flops(run)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            benchmark.pedantic(run, rounds=9, warmup_rounds=2)
    finally:
        torch.set_num_threads(before)
    record(benchmark, flops, 1, threads=threads)


@pytest.mark.parametrize("batch", BATCHES)
def test_engine_denoiser_step(benchmark, generator, batch):
    """One CFG step as the engine's loop runs it: rows padded to the sampler's quantum, the AdaLN
    modulations computed before the loop (their cost is in the sentence case)."""
    x = pad_rows(torch.randn(batch, *generator.model.latent_shape), generator.sample_quantum)
    text = torch.randn(batch, generator.model.config.cond_dim)
    timesteps = [step.t for step in generator.steps]
    null_mods = generator.denoiser._null_modulations(timesteps, generator.null_text)[0]
    with torch.inference_mode():
        cond_mods = [pad_rows(m, len(x)) for m in next(dhvae.step_modulations(generator.model.denoiser, timesteps, text))]
    step = lambda: dhvae.guided_pair_modulated(generator.model.denoiser, x, null_mods, cond_mods)
    flops = count_flops(step)
    with torch.inference_mode():
        benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    record(benchmark, flops, batch, padded_rows=len(x))


@pytest.mark.parametrize("batch", BATCHES)
def test_engine_sentence(benchmark, generator, batch):
    """50 DDIM steps + decode of 300 frames for ``batch`` sentences, as a job shard runs them."""
    run = generate_once(generator, batch, FRAMES)
    flops = count_flops(run)
    with torch.inference_mode():
        benchmark.pedantic(run, rounds={1: 9, 8: 5}.get(batch, 3), warmup_rounds=1)
    record(benchmark, flops, batch, note="flops: denoising loop + decode, what is timed")


def test_authors_sentence(benchmark, generator, release):
    """The release's loop for one sentence: full denoiser on the CFG batch each step, diffusers'
    DDIMScheduler.step, the decoder over its 300-frame window (AITS of the authors' code)."""
    scheduler = authors_loop.release_scheduler()
    text = torch.randn(1, generator.model.config.cond_dim)
    run = lambda: authors_loop.generate(release, scheduler, text, generator.null_text, torch.tensor([FRAMES]))
    flops = count_flops(run)
    benchmark.pedantic(run, rounds=9, warmup_rounds=1)
    record(benchmark, flops, 1, note="authors' loop (benchmarks/authors_loop.py)")
