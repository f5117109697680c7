"""dhvae's ``motionfleet bench`` case ``generate``: the CFG DDIM loop and the decoder
(``DHVAEGenerator.sample_latents`` then ``decode``; the text encoder is outside AITS, as DHVAE
states); items are sentences. Each batch also records its FLOPs and GEMM floor (``bench.gemm_floor_s``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from motionfleet.core.registry import BenchCase, bench_setting
from motionfleet.core.runtime.seeding import SampleNoise
from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae.model import PRESETS
from motionfleet.dhvae.runner import DHVAEGenerator
from motionfleet.dhvae.settings import MAX_FRAMES, GenerateSettings, ModelSpec
from motionfleet.sampling import ddim

if TYPE_CHECKING:  # motionfleet.bench is imported when a bench runs, not with the family
    from motionfleet.bench import BenchSettings, SetupClock


@dataclass(frozen=True)
class GenerateBench:
    preset: str = bench_setting("official", "dhvae model size of the dummy weights", choices=tuple(PRESETS))
    steps: int = bench_setting(50, "dhvae DDIM steps", type=int, low=1, high=ddim.max_steps(ddim.DDIMConfig()))
    frames: int = bench_setting(120, "dhvae frames decoded per sentence", flag="--num-frames", type=int, low=1,
                                high=MAX_FRAMES)
    guidance: float = 3.5


def batch_inputs(generator: DHVAEGenerator, batch: int) -> tuple[torch.Tensor, list[int]]:
    """Seeded text features (the text encoder is outside AITS) and per-sample noise seeds."""
    cond_dim = generator.model.config.cond_dim
    text = torch.randn(batch, cond_dim, generator=torch.Generator().manual_seed(batch)).to(generator.device)
    return text, list(range(batch))


def generate_once(generator: DHVAEGenerator, batch: int, frames: int) -> Callable[[], None]:
    """A callable that samples and decodes one batch as a generate job does (no inference mode of
    its own, so FLOP counting sees every layer)."""
    text, seeds = batch_inputs(generator, batch)

    def run() -> None:
        latents = generator.sample_latents(text, SampleNoise(seeds, generator.device))
        generator.decode(latents, [frames] * batch)

    return run


def generate_batch(generator: DHVAEGenerator, batch: int, frames: int) -> Callable[[], None]:
    return torch.inference_mode()(generate_once(generator, batch, frames))


def make_generator(backend: str, own: GenerateBench, settings: BenchSettings) -> DHVAEGenerator:
    spec = ModelSpec(preset=own.preset, text_encoder="precomputed")
    run = GenerateSettings(steps=own.steps, guidance_scale=own.guidance, batch_size=max(settings.batch_sizes),
                           default_frames=own.frames, device=settings.device, backend=backend,
                           precision=settings.precision)
    return DHVAEGenerator(spec, run)


def cases(own: GenerateBench, settings: BenchSettings, clock: SetupClock) -> Callable[[int], dict[str, Callable[[], None]]]:
    generators = {name: clock.build(name, lambda: make_generator(name, own, settings)) for name in settings.backends}
    return lambda batch: {name: generate_batch(g, batch, own.frames) for name, g in generators.items()}


def cost(own: GenerateBench, settings: BenchSettings) -> Callable[[int], dict]:
    """FLOPs and GEMM floor of one batch of the eager torch backend's math (the other backends run
    the same network with the AdaLN modulations inside each step: the same FLOPs to within the
    null text's one row per step)."""
    from motionfleet.bench import count_flops, gemm_floor_s

    eager = make_generator("torch", own, settings)
    device = torch.device(settings.device)

    def of_batch(batch: int) -> dict:
        run = generate_once(eager, batch, own.frames)
        return {"gflop_per_batch": count_flops(run) / 1e9, "gemm_floor_ms": gemm_floor_s(run, device, repeats=3) * 1e3}

    return of_batch


BENCH = BenchCase(case="generate", unit="sentences", settings=GenerateBench, preset="preset", cases=cases,
                  loop_settings=("steps", "frames", "guidance"), cost=cost)


# --- hoisting (benchmarks/test_backends.py) -------------------------------------------------


def hoisting_cases(denoiser: dhvae.DHVAEDenoiser, null_text: torch.Tensor, batch: int,
                   steps: int) -> dict[str, Callable]:
    """One guided denoiser step at ``batch`` with and without each hoist:

    - ``no_hoist_per_sample_t``: cond and uncond as one batch, timestep embedded per row
    - ``cfg_batch``: as above with the timestep embedded once per call (t of shape (1,))
    - ``guided_pair``: also the null text's AdaLN modulation once per step (batch 1)
    - ``guided_pair_null_precomputed``: that modulation for every step computed before the loop
    - ``null_modulation``: what the last hoist removes from each step
    - ``schedule_plan``: computing all steps' DDIM constants (done once per run, not per step)
    """
    device = null_text.device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dhvae.NUM_TOKENS, denoiser.config.latent_dim, generator=generator).to(device)
    text = torch.randn(batch, denoiser.config.cond_dim, generator=generator).to(device)
    x2, both = torch.cat([x, x]), torch.cat([null_text.expand(batch, -1), text])
    t = 981
    t_rows = torch.full((2 * batch,), t, device=device)
    with torch.inference_mode():
        null_mods = denoiser.modulation(t, null_text)

    def precomputed_null():
        mods = [torch.cat([m_null.expand_as(m), m]) for m_null, m in zip(null_mods, denoiser.modulation(t, text))]
        return denoiser.forward_modulated(x2, mods)

    cases = {
        "no_hoist_per_sample_t": lambda: denoiser(x2, t_rows, both),
        "cfg_batch": lambda: denoiser(x2, t, both),
        "guided_pair": lambda: dhvae.guided_pair(denoiser, x, t, text, null_text),
        "guided_pair_null_precomputed": precomputed_null,
        "null_modulation": lambda: denoiser.modulation(t, null_text),
        "schedule_plan": lambda: ddim.plan(ddim.DDIMConfig(steps=steps)),
    }
    return {name: torch.inference_mode()(fn) for name, fn in cases.items()}
