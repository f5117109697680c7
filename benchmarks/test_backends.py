"""pytest-benchmark cases matching ``motionfleet bench``: dhvae/official, 50 DDIM steps with CFG
and decoding 120 frames, per backend and batch size; and one guided denoiser step with and without
each hoist (``motionfleet.engine.bench.hoisting_cases``).

    pytest benchmarks/test_backends.py --benchmark-enable

(the repo's addopts disable benchmark timing by default). The CLI interleaves backends and writes
the JSON and plot; this suite gives pytest-benchmark's statistics per case.
"""

import pytest

from motionfleet.engine import bench

SETTINGS = bench.BenchSettings()
HOIST_CASES = ["no_hoist_per_sample_t", "cfg_batch", "guided_pair", "guided_pair_null_precomputed",
               "null_modulation", "schedule_plan"]


@pytest.fixture(scope="module")
def generators():
    """Backend name -> generator, built on first use (torch.compile and the ONNX export are slow)."""
    return {}


def generator_for(generators: dict, backend: str):
    if backend not in generators:
        generators[backend] = bench.make_generator(backend, SETTINGS)
    return generators[backend]


@pytest.mark.parametrize("batch", SETTINGS.batch_sizes)
@pytest.mark.parametrize("backend", SETTINGS.backends)
def test_generate_batch(benchmark, generators, backend, batch):
    run = bench.generate_batch(generator_for(generators, backend), batch, SETTINGS.frames)
    benchmark.extra_info.update({"backend": backend, "batch": batch, "steps": SETTINGS.steps,
                                 "frames": SETTINGS.frames, "aits": "mean / batch"})
    benchmark.pedantic(run, rounds=SETTINGS.repeats, warmup_rounds=1)


@pytest.mark.parametrize("case", HOIST_CASES)
def test_hoisting(benchmark, generators, case):
    generator = generator_for(generators, "torch")
    cases = bench.hoisting_cases(generator.model.denoiser, generator.null_text, SETTINGS.hoist_batch, SETTINGS.steps)
    benchmark.extra_info.update({"batch": SETTINGS.hoist_batch})
    benchmark.pedantic(cases[case], rounds=10, warmup_rounds=1)
