"""``motionfleet bench``: dhvae AITS per backend and batch size -> JSON, a PNG plot and a table.

One timed run generates a batch as a job does (``DHVAEGenerator.sample_latents`` then ``decode``:
the CFG DDIM loop and the decoder, text encoder excluded as AITS excludes it); AITS is the median
run's seconds divided by the batch size. Every (backend, batch) gets one discarded warm-up run,
then the repeats go round robin over the backends, so a busy neighbour slows every backend alike;
the load average before and after is recorded.

Also measured in the same process, so the numbers can be compared:
- achieved GFLOP/s of each backend's run and of one denoiser step (FLOPs counted by torch's
  FlopCounterMode on the math that backend runs: the torch backend's ``guided_pair``, the others'
  full CFG batch) against a plain fp32 matmul, what this machine's fp32 units give;
- the GEMM floor: the run's matrix products (attention's included) replayed as bare matmuls, the
  time no backend can beat without changing the math or the precision;
- the hoisting measurements: one guided denoiser step with and without each hoist;
- optionally the whole-loop graph (DDIM unrolled in ONNX) against the per-step graph.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from motionfleet.core import provenance
from motionfleet.core.seeding import SampleNoise
from motionfleet.core.stopwatch import synchronize
from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec
from motionfleet.sampling import ddim

MATMUL_SIZE = 2048


@dataclass(frozen=True)
class BenchSettings:
    backends: tuple[str, ...] = ("torch", "torch-compile", "onnxruntime")
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    preset: str = "official"
    steps: int = 50
    frames: int = 120
    guidance: float = 3.5
    repeats: int = 3
    device: str = "cpu"
    precision: str = "fp32"
    hoist_batch: int = 64
    whole_loop_batches: tuple[int, ...] = ()  # empty: do not measure the whole-loop graph


# --- timing helpers ------------------------------------------------------------------------


def timed(fn: Callable, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def round_robin(cases: dict[str, Callable], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each case, ``repeats`` times, interleaved; one untimed call of each first."""
    for fn in cases.values():
        fn()
    seconds = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            seconds[name].append(timed(fn, device))
    return seconds


def matmul_gflops(device: torch.device, repeats: int = 10) -> float:
    """Median GFLOP/s of a plain fp32 (MATMUL_SIZE)^2 matmul."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    seconds = round_robin({"matmul": lambda: a @ b}, repeats, device)["matmul"]
    return 2 * MATMUL_SIZE**3 / statistics.median(seconds) / 1e9


def count_flops(fn: Callable) -> int:
    return traced(fn, FlopCounterMode(display=False)).get_total_flops()


# --- GEMM floor ----------------------------------------------------------------------------

GEMM_OPERANDS = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}


def attention_products(q: torch.Tensor, k: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The two batched products of attention, q k^T and p v, as (A, B) shapes."""
    *lead, length, dim = q.shape
    span = k.shape[-2]
    batch = math.prod(lead)
    return [((batch, length, dim), (batch, dim, span)), ((batch, length, span), (batch, span, dim))]


class GemmShapes(TorchDispatchMode):
    """Records the (A, B) operand shapes of every matrix product a call runs, attention included."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in GEMM_OPERANDS:
            self.shapes.append(tuple(tuple(args[i].shape) for i in GEMM_OPERANDS[name]))
        elif name.startswith("_scaled_dot_product"):
            self.shapes += attention_products(args[0], args[1])
        return func(*args, **(kwargs or {}))


def traced(fn: Callable, mode: TorchDispatchMode):
    """Run ``fn`` under ``mode`` with autograd on, so PyTorch's fused inference-only layers
    (whose FLOPs no counter sees) are not taken; the math is the same."""
    with torch.inference_mode(False), torch.enable_grad(), mode:
        fn()
    return mode


def gemm_floor_s(fn: Callable, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of the matrix products ``fn`` runs, replayed as bare fp32 matmuls: what
    the call would cost if everything but its GEMMs (attention, norms, elementwise, framework
    overhead) took no time."""
    recorder = traced(fn, GemmShapes())
    operands = [(torch.randn(a, device=device), torch.randn(b, device=device)) for a, b in recorder.shapes]

    def replay():
        for a, b in operands:
            torch.matmul(a, b)

    return statistics.median(round_robin({"gemms": replay}, repeats, device)["gemms"])


# --- one batch -----------------------------------------------------------------------------


def batch_inputs(generator: DHVAEGenerator, batch: int) -> tuple[torch.Tensor, list[int]]:
    """Seeded text features (the text encoder is outside AITS) and per-sample noise seeds."""
    cond_dim = generator.model.config.cond_dim
    text = torch.randn(batch, cond_dim, generator=torch.Generator().manual_seed(batch)).to(generator.device)
    return text, list(range(batch))


def generate_batch(generator: DHVAEGenerator, batch: int, frames: int) -> Callable[[], None]:
    """A callable that samples and decodes one batch, as a generate job does."""
    text, seeds = batch_inputs(generator, batch)

    @torch.inference_mode()
    def run() -> None:
        latents = generator.sample_latents(text, SampleNoise(seeds, generator.device))
        generator.decode(latents, [frames] * batch)

    return run


def run_math(generator: DHVAEGenerator, batch: int, frames: int) -> tuple[str, Callable, Callable]:
    """(name, one denoiser step, one decode) as eager calls doing the math the backend runs: the
    torch backend's ``guided_pair``, or the other backends' single CFG batch."""
    model = generator.model
    x = torch.zeros(batch, *model.latent_shape, device=generator.device)
    text, _ = batch_inputs(generator, batch)
    null = generator.null_text

    def decode():
        model.decoder(x, frames)

    if hasattr(generator.denoiser, "guided_pair"):
        return "guided_pair", lambda: dhvae.guided_pair(model.denoiser, x, 981, text, null), decode
    both = torch.cat([null.expand(batch, -1), text])
    return "cfg_batch", lambda: model.denoiser(torch.cat([x, x]), 981, both), decode


def math_cost(generator: DHVAEGenerator, batch: int, settings: BenchSettings) -> dict:
    """FLOPs of one generated batch and its GEMM floor (seconds of its matrix products alone)."""
    name, step, decode = run_math(generator, batch, settings.frames)
    device = torch.device(settings.device)
    return {
        "math": name,
        "gflop_per_run": (settings.steps * count_flops(step) + count_flops(decode)) / 1e9,
        "gemm_floor_s": settings.steps * gemm_floor_s(step, device) + gemm_floor_s(decode, device),
    }


def make_generator(backend: str, settings: BenchSettings) -> DHVAEGenerator:
    spec = ModelSpec(preset=settings.preset, text_encoder="precomputed")
    run = GenerateSettings(steps=settings.steps, guidance_scale=settings.guidance, batch_size=max(settings.batch_sizes),
                           default_frames=settings.frames, device=settings.device, backend=backend,
                           precision=settings.precision)
    return DHVAEGenerator(spec, run)


# --- the sweep -----------------------------------------------------------------------------


def sweep(generators: dict[str, DHVAEGenerator], settings: BenchSettings) -> dict:
    """{backend: {batch: row}}: AITS and run medians, achieved GFLOP/s, and the GEMM floor."""
    device = torch.device(settings.device)
    results = {name: {} for name in generators}
    for batch in settings.batch_sizes:
        cases = {name: generate_batch(g, batch, settings.frames) for name, g in generators.items()}
        seconds = round_robin(cases, settings.repeats, device)
        costs = {}
        for name, runs in seconds.items():
            median = statistics.median(runs)
            math_name = run_math(generators[name], batch, settings.frames)[0]
            if math_name not in costs:
                costs[math_name] = math_cost(generators[name], batch, settings)
            cost = costs[math_name]
            results[name][batch] = {
                "aits_ms": median / batch * 1e3, "median_s": median, "runs_s": runs, "samples_per_s": batch / median,
                **cost, "gflops": cost["gflop_per_run"] / median,
                "gemm_floor_aits_ms": cost["gemm_floor_s"] / batch * 1e3,
            }
    return results


# --- hoisting ------------------------------------------------------------------------------


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


def hoisting(denoiser: dhvae.DHVAEDenoiser, null_text: torch.Tensor, settings: BenchSettings) -> dict:
    """Median ms of each of ``hoisting_cases`` at ``hoist_batch``."""
    cases = hoisting_cases(denoiser, null_text, settings.hoist_batch, settings.steps)
    seconds = round_robin(cases, max(settings.repeats, 10), torch.device(settings.device))
    medians = {name: statistics.median(s) * 1e3 for name, s in seconds.items()}
    return {"batch": settings.hoist_batch, "median_ms": medians}


def denoiser_steps(generators: dict[str, DHVAEGenerator], settings: BenchSettings) -> dict:
    """One guided denoiser step at ``hoist_batch`` through each backend, as the sampler calls it:
    median ms, achieved GFLOP/s and the GEMM floor of the math it runs."""
    device = torch.device(settings.device)
    batch = settings.hoist_batch
    x = torch.randn(batch, *next(iter(generators.values())).model.latent_shape, device=device)
    cases = {}
    for name, generator in generators.items():
        denoise = generator.guided_denoiser(batch_inputs(generator, batch)[0])
        cases[name] = torch.inference_mode()(lambda denoise=denoise: denoise(x, 981))
    seconds = round_robin(cases, max(settings.repeats, 10), device)
    steps = {}
    for name, generator in generators.items():
        math_name, step, _ = run_math(generator, batch, settings.frames)
        median = statistics.median(seconds[name])
        steps[name] = {"math": math_name, "median_ms": median * 1e3, "gflops": count_flops(step) / median / 1e9,
                       "gemm_floor_ms": gemm_floor_s(step, device) * 1e3}
    return {"batch": batch, "steps": steps}


# --- whole loop ----------------------------------------------------------------------------


def whole_loop(generator: DHVAEGenerator, settings: BenchSettings) -> dict:
    """Median seconds of the DDIM loop at each of ``whole_loop_batches``: per-step ONNX Runtime
    calls (the onnxruntime backend's ``sample_latents``) against one call of the unrolled graph."""
    import onnxruntime

    from motionfleet.core.backends import graph_path, ort_session
    from motionfleet.dhvae.graphs import dhvae_loop_graph

    device = torch.device(settings.device)
    spec = dhvae_loop_graph(generator.model.denoiser, settings.steps, settings.guidance)
    path = graph_path(spec, "fp32", None, generator.weights)  # exported once into the cache
    session = ort_session(path, "onnxruntime", "fp32", device)
    medians = {}
    for batch in settings.whole_loop_batches:
        text, seeds = batch_inputs(generator, batch)
        x = SampleNoise(seeds, device).draw(generator.model.latent_shape)
        feeds = {"x": x.cpu().numpy(), "text": text.cpu().numpy(), "null_text": generator.null_text.cpu().numpy()}
        cases = {
            "per_step_graph": lambda: generator.sample_latents(text, SampleNoise(seeds, device)),
            "whole_loop_graph": lambda: session.run(None, feeds),
        }
        with torch.inference_mode():
            seconds = round_robin(cases, settings.repeats, device)
        medians[batch] = {name: statistics.median(s) for name, s in seconds.items()}
    return {"steps": settings.steps, "graph": str(path), "graph_mb": path.stat().st_size / 1e6,
            "onnxruntime": onnxruntime.__version__, "median_s": medians}


# --- report --------------------------------------------------------------------------------


def table(results: dict, batch_sizes) -> list[str]:
    """AITS, achieved GFLOP/s and GEMM-floor AITS per backend (rows) and batch size (columns)."""
    header = f"{'backend':<16}" + "".join(f"{'B=' + str(b):>12}" for b in batch_sizes)
    lines = []
    for title, key, fmt in (("AITS ms (median)", "aits_ms", ".2f"), ("achieved GFLOP/s", "gflops", ".1f"),
                            ("GEMM-floor AITS ms", "gemm_floor_aits_ms", ".2f")):
        lines += [f"{header}   {title}"]
        lines += [f"{name:<16}" + "".join(f"{rows[b][key]:>12{fmt}}" for b in batch_sizes)
                  for name, rows in results.items()]
    return lines


def speedup_lines(body: dict, batch: int = 64) -> list[str]:
    """The best backend against eager torch at ``batch``, and the bound the GEMM floor sets."""
    results = body["results"]
    if "torch" not in results or batch not in results["torch"]:
        return []
    eager = results["torch"][batch]
    best = min(results, key=lambda name: results[name][batch]["aits_ms"])
    floor = min(rows[batch]["gemm_floor_aits_ms"] for rows in results.values())
    return [f"batch {batch}: best {best} {results[best][batch]['aits_ms']:.2f} ms = "
            f"{eager['aits_ms'] / results[best][batch]['aits_ms']:.2f}x eager torch ({eager['aits_ms']:.2f} ms); "
            f"if only the GEMMs took time ({floor:.2f} ms) the most any backend could gain is "
            f"{eager['aits_ms'] / floor:.2f}x"]


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, rows in results.items():
        batches = sorted(rows)
        ax.plot(batches, [rows[b]["samples_per_s"] for b in batches], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (prompts)")
    ax.set_ylabel("throughput (samples / s) = 1 / AITS")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench(settings: BenchSettings, out_dir: str | Path) -> dict:
    """Measure, write ``dhvae_backends_<device>.json`` and ``.png`` into ``out_dir``, return the body."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device)
    load_before = os.getloadavg()
    generators = {name: make_generator(name, settings) for name in settings.backends}
    first = next(iter(generators.values()))
    body = {
        "bench": "dhvae backends", "settings": asdict(settings), "weights": first.weights,
        "machine": provenance.host(), "versions": provenance.software_versions(),
        "torch_threads": torch.get_num_threads(), "load_average_before": load_before,
        "matmul_fp32_gflops": {"before": matmul_gflops(device)},
        "results": sweep(generators, settings),
    }
    body["matmul_fp32_gflops"]["after"] = matmul_gflops(device)
    body["hoisting"] = hoisting(first.model.denoiser, first.null_text, settings)
    body["denoiser_step"] = denoiser_steps(generators, settings)
    if settings.whole_loop_batches:
        body["whole_loop"] = whole_loop(generators.get("onnxruntime") or make_generator("onnxruntime", settings),
                                        settings)
    body["load_average_after"] = os.getloadavg()
    stem = out_dir / f"dhvae_backends_{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(body, indent=2, default=str))
    title = (f"dhvae/{settings.preset}, {settings.steps} DDIM steps + decode {settings.frames} frames, "
             f"{settings.precision}, {body['machine']['cpu_model']} x{body['torch_threads']} threads")
    plot(body["results"], stem.with_suffix(".png"), title)
    return body


def summary(body: dict) -> list[str]:
    lines = table(body["results"], body["settings"]["batch_sizes"]) + speedup_lines(body)
    mm = body["matmul_fp32_gflops"]
    lines.append(f"fp32 matmul {MATMUL_SIZE}^2: {mm['before']:.1f} GFLOP/s before the sweep, {mm['after']:.1f} after")
    step = body["denoiser_step"]
    lines.append(f"one guided denoiser step at batch {step['batch']}: " + "; ".join(
        f"{name} ({s['math']}) {s['median_ms']:.2f} ms, {s['gflops']:.1f} GFLOP/s, "
        f"GEMM floor {s['gemm_floor_ms']:.2f} ms"
        for name, s in step["steps"].items()))
    hoist = body["hoisting"]["median_ms"]
    lines.append(f"hoisting, one step at batch {body['hoisting']['batch']} (ms): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in hoist.items()))
    if "whole_loop" in body:
        loop = body["whole_loop"]
        lines += [f"DDIM loop ({loop['steps']} steps) at batch {batch} (s): " + ", ".join(
            f"{k} {v:.3f}" for k, v in medians.items()) for batch, medians in loop["median_s"].items()]
    lines.append(f"load average before {body['load_average_before']}, after {body['load_average_after']}")
    return lines
