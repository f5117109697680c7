"""pytest-benchmark cases matching ``motionfleet bench``: dhvae/official, 50 DDIM steps with CFG
and decoding 120 frames, per backend and batch size; and one guided denoiser step with and without
each hoist (``motionfleet.dhvae.bench.hoisting_cases``).

    pytest benchmarks/test_backends.py --benchmark-enable

(the repo's addopts disable benchmark timing by default). The CLI interleaves backends and writes
the JSON and plot; this suite gives pytest-benchmark's statistics per case.
"""

import copy

import pytest
import torch

from motionfleet.bench import BenchSettings
from motionfleet.core.runtime import backends
from motionfleet.dhvae import bench
from motionfleet.sampling.cfg import cfg_denoiser

SETTINGS = BenchSettings(families=("dhvae",), batch_sizes=(1, 8, 64, 256), repeats=3)
OWN = bench.GenerateBench()  # dhvae/official, 50 steps, 120 frames
STEP_BATCH = 64
HOIST_CASES = ["no_hoist_per_sample_t", "cfg_batch", "guided_pair", "guided_pair_null_precomputed",
               "null_modulation", "schedule_plan"]


@pytest.fixture(scope="module")
def generators():
    """Backend name -> generator, built on first use (torch.compile and the ONNX export are slow)."""
    return {}


def generator_for(generators: dict, backend: str):
    if backend not in generators:
        generators[backend] = bench.make_generator(backend, OWN, SETTINGS)
    return generators[backend]


@pytest.mark.parametrize("batch", SETTINGS.batch_sizes)
@pytest.mark.parametrize("backend", SETTINGS.backends)
def test_generate_batch(benchmark, generators, backend, batch):
    run = bench.generate_batch(generator_for(generators, backend), batch, OWN.frames)
    benchmark.extra_info.update({"backend": backend, "batch": batch, "steps": OWN.steps,
                                 "frames": OWN.frames, "aits": "mean / batch"})
    benchmark.pedantic(run, rounds=SETTINGS.repeats, warmup_rounds=1)


@pytest.mark.parametrize("case", HOIST_CASES)
def test_hoisting(benchmark, generators, case):
    generator = generator_for(generators, "torch")
    cases = bench.hoisting_cases(generator.model.denoiser, generator.null_text, STEP_BATCH, OWN.steps)
    benchmark.extra_info.update({"batch": STEP_BATCH})
    benchmark.pedantic(cases[case], rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("spin", [True, False], ids=["ort-spinning", "ort-not-spinning"])
def test_eager_step_after_an_onnxruntime_call(benchmark, generators, spin):
    """One eager guided step at batch 64 timed right after an ONNX Runtime denoiser call, with
    ORT's idle threads spinning (its default) or not (the engine's setting)."""
    eager, ort = generator_for(generators, "torch"), generator_for(generators, "onnxruntime")
    ort_denoiser = copy.copy(ort.denoiser)
    ort_denoiser.session = backends.ort_session(ort.denoiser.path, "onnxruntime", "fp32", ort.device, spin=spin)
    batch = STEP_BATCH
    x = torch.randn(batch, *eager.model.latent_shape)
    text = bench.batch_inputs(eager, batch)[0]
    eager_step = lambda x, t: eager.denoiser.guided_pair(x, t, text, eager.null_text)
    ort_step = cfg_denoiser(ort_denoiser, text, ort.null_text.expand(batch, -1))
    benchmark.extra_info.update({"batch": batch, "ort_allow_spinning": spin})

    def ort_call_first() -> None:  # pedantic's setup: untimed, and must return None
        ort_step(x, 981)

    with torch.inference_mode():
        benchmark.pedantic(lambda: eager_step(x, 981), setup=ort_call_first, rounds=10, warmup_rounds=1)
