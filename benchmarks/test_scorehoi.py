"""ScoreHOI refinement speed: pytest-benchmark cases and the FPS table.

    python -m pytest benchmarks/test_scorehoi.py --benchmark-enable    # the cases
    python -m benchmarks.test_scorehoi                        # FPS table -> benchmarks/results/scorehoi_cpu.json

Cases: one guided DDIM step, one refinement round, the body model's forward + backward (the
431-point ``BodyPoints`` beside smplx's full mesh), and one round the public code's way beside the
engine's way at the public code's batch size (32) and settings (tau 50, step 5). The public code's
way (RammusLeo/ScoreHOI ``GaussianDiffusion.ddim_with_guidance`` and ``cond_fn``): per-step
timestep tensors and ``.item()`` reads, the unfolded denoiser, 6D -> axis-angle -> Rodrigues and a
full SMPL-H forward, losses as separate torch ops differentiated by autograd, DDIM in Python
arithmetic. The engine's way: the folded denoiser, 431 skinned points, the fused loss kernel and
the fused DDIM update. Timings use ``time.perf_counter``; on CPU nothing is asynchronous.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.conftest import record
from motionfleet.bench import count_flops
from motionfleet.common.bodies import load_body_model
from motionfleet.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rotation_6d_to_matrix
from motionfleet.core.io import provenance
from motionfleet.core.runtime.stopwatch import StageClock
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.demo.scenes import demo_scenes
from motionfleet.sampling.schedules import alphas_cumprod
from motionfleet.sampling.score_guidance import guided_sample
from motionfleet.scorehoi import model as scorehoi
from motionfleet.scorehoi.hoi import NUM_JOINTS, PhysicalGuidance, object_sdf, pose_scene, unpack_state
from motionfleet.scorehoi.runner import SCHEDULE, ScoreHOIRefiner, padded
from motionfleet.scorehoi.settings import SAMPLER_PRESETS as PRESETS
from motionfleet.scorehoi.settings import RefineModelSpec, RefineSettings
from motionfleet.scorehoi.source import EstimateRecord, RefineItem

RESULTS = Path(__file__).parent / "results" / "scorehoi_cpu.json"
PUBLIC_BATCH = 32


def make_body_dir() -> str:
    folder = tempfile.mkdtemp(prefix="scorehoi-bench-")
    write_synthetic_body_model(folder, "smplh")
    return folder


def scene_items(count: int, variant: str = "guided") -> tuple[RefineItem, ...]:
    """``count`` estimates cycling through the demo scenes, each with its own id."""
    records = demo_scenes(scorehoi.PRESETS["released"].condition_dim).records
    return tuple(RefineItem(EstimateRecord(f"{records[i % len(records)].sample_id}-{i}",
                                           records[i % len(records)].values), variant) for i in range(count))


def prepared_batch(refiner: ScoreHOIRefiner, batch: int):
    """(estimates, x0, objects, guidance) of a padded batch, contact masks from x0."""
    estimates = padded([refiner.check(item.record) for item in scene_items(batch)])
    objects = refiner.object_batch(estimates)
    x0 = torch.stack([e.x for e in estimates])
    masks = refiner.predictor(pose_scene(x0, refiner.points, objects), objects)
    return estimates, x0, objects, PhysicalGuidance(refiner.points, objects, masks, refiner.settings.weights)


# --- the public code's way -------------------------------------------------------------------


def public_losses(human, obj_points, rotation, translation, objects, contact, floor, weights):
    """L_ho and L_of in the public code's form (cdist, hinge, squared), plus our SDF penetration
    term as plain torch ops (the public penetration term has no gradient)."""
    dists_h = torch.cdist(human, obj_points).min(dim=2).values
    loss_ho = F.relu(dists_h * contact - weights.contact_margin).pow(2).sum(1)
    loss_of = F.relu(obj_points[..., 1].abs() * floor - weights.contact_margin).pow(2).sum(1)
    sdf = object_sdf(human, rotation, translation, objects)
    loss_pt = F.relu(-torch.where(torch.isinf(sdf), torch.zeros_like(sdf), sdf) - weights.penetration_margin).sum(1)
    return weights.contact * loss_ho + weights.floor * loss_of + weights.penetration * loss_pt


def public_cond_fn(body, ids, x, sqrt_recip, sqrt_recipm1, t, eps, objects, masks, weights):
    """dL/dx_t as ``cond_fn`` computes it: autograd from x_t through x0_hat, eps held fixed."""
    with torch.enable_grad():
        x_t = x.detach().requires_grad_(True)
        x_start = sqrt_recip[t][:, None] * x_t - sqrt_recipm1[t][:, None] * eps
        batch = len(x)
        state = unpack_state(x_start)
        pose_aa = matrix_to_axis_angle(rotation_6d_to_matrix(state.pose_6d.reshape(-1, 6))).reshape(batch, -1, 3)
        out = body.forward_rotmats(axis_angle_to_matrix(pose_aa), state.betas)
        human = out.vertices[:, ids]
        rotation = rotation_6d_to_matrix(state.object_rotation_6d).reshape(batch, 3, 3)
        obj_points = torch.matmul(objects.points, rotation.transpose(1, 2)) + state.object_translation[:, None]
        loss = public_losses(human, obj_points, rotation, state.object_translation, objects, masks.human,
                             masks.floor, weights)
        return torch.autograd.grad(loss.sum(), x_t)[0]


def public_code_round(model, body, ids, x, conditions, objects, masks, weights, rho, tau=50, stride=5):
    """One inversion + guided sampling round with the public code's loop structure."""
    abar = alphas_cumprod(SCHEDULE)
    sqrt_recip, sqrt_recipm1 = torch.sqrt(1.0 / abar), torch.sqrt(1.0 / abar - 1)
    times = list(range(0, tau + 1, stride))
    times_next = [-1] + times[:-1]
    pairs = list(reversed(list(zip(times[1:], times_next[1:]))))
    pairs_inv = list(zip(times_next[1:], times[1:]))
    batch = len(x)
    with torch.no_grad():
        for time_, time_next in pairs_inv:
            t = torch.full((batch,), time_, dtype=torch.long)
            eps = model(x, t, *conditions)
            x_start = sqrt_recip[t][:, None] * x - sqrt_recipm1[t][:, None] * eps
            alpha_next = abar[time_next]
            x = x_start * alpha_next.sqrt() + eps * (1 - alpha_next).sqrt()
        for time_, time_next in pairs:
            t = torch.full((batch,), time_, dtype=torch.long)
            eps = model(x, t, *conditions)
            grad = rho * public_cond_fn(body, ids, x, sqrt_recip, sqrt_recipm1, t, eps, objects, masks, weights)
            eps = eps + torch.sqrt(1.0 - abar[t[0]]).item() * grad
            x_start = sqrt_recip[t][:, None] * x - sqrt_recipm1[t][:, None] * eps
            alpha_next = abar[time_next]
            x = x_start * alpha_next.sqrt() + (1 - alpha_next).sqrt() * eps
    return x_start


# --- pytest-benchmark cases ------------------------------------------------------------------


@pytest.fixture(scope="module")
def body_dir() -> str:
    return make_body_dir()


@pytest.fixture(scope="module")
def refiner(body_dir) -> ScoreHOIRefiner:
    spec = RefineModelSpec(body_models=body_dir, synthetic_body=True)
    refiner = ScoreHOIRefiner(spec, RefineSettings.from_preset("paper", batch_size=64))
    refiner.warm_up()
    return refiner


def test_guided_step(benchmark, refiner):
    estimates, x0, objects, guidance = prepared_batch(refiner, 64)
    denoise = refiner.denoise_fn(refiner.conditions(estimates), StageClock())
    step = refiner.steps[:1]
    benchmark.group = "scorehoi guided step, batch 64"
    run_step = lambda: guided_sample(denoise, x0, step, guidance, refiner.settings.guidance_scale)  # noqa: E731
    benchmark(run_step)
    record(benchmark, count_flops(run_step), len(x0))


def test_refinement_round(benchmark, refiner):
    estimates = [item.record for item in scene_items(64)]
    one_round = replace(refiner.settings, rounds=1)
    benchmark.group = "scorehoi round (paper: 25 inversion + 25 guided steps), batch 64"
    runner = ScoreHOIRefiner(refiner.spec, one_round)
    benchmark.pedantic(runner.refine_batch, args=([runner.check(r) for r in estimates], 0.5, StageClock()),
                       rounds=3, iterations=1)
    record(benchmark, 0, len(estimates))


@pytest.mark.parametrize("model", ["body_points_431", "smplx_full_mesh"])
def test_body_model_forward_backward(benchmark, refiner, model):
    g = torch.Generator().manual_seed(0)
    rotations = axis_angle_to_matrix(0.3 * torch.randn(64, NUM_JOINTS, 3, generator=g)).requires_grad_(True)
    betas = torch.zeros(64, 10, requires_grad=True)
    body = load_body_model("smplh", refiner.spec.body_models)
    ids = refiner.points.vertex_ids
    forward = {"body_points_431": lambda: refiner.points(rotations, betas),
               "smplx_full_mesh": lambda: body.forward_rotmats(rotations, betas).vertices[:, ids]}[model]

    def forward_backward():
        points = forward()
        return torch.autograd.grad(points.sum(), (rotations, betas))

    benchmark.group = "SMPL-H forward + backward at 431 points, batch 64"
    benchmark(forward_backward)
    record(benchmark, 0, len(rotations))


@pytest.mark.parametrize("way", ["public_code", "engine"])
def test_public_code_way_beside_engine_way(benchmark, body_dir, way):
    spec = RefineModelSpec(body_models=body_dir, synthetic_body=True)
    settings = RefineSettings.from_preset("public", rounds=1, batch_size=PUBLIC_BATCH, folded=way == "engine")
    runner = ScoreHOIRefiner(spec, settings)
    runner.warm_up()
    benchmark.group = f"scorehoi round, public settings (tau 50, step 5), batch {PUBLIC_BATCH}"
    benchmark.pedantic(one_round(runner, way, PUBLIC_BATCH), rounds=3, iterations=1)
    record(benchmark, 0, PUBLIC_BATCH)


def one_round(runner: ScoreHOIRefiner, way: str, batch: int):
    """A callable running one round the public code's way or the engine's way."""
    estimates, x0, objects, guidance = prepared_batch(runner, batch)
    if way == "engine":
        return lambda: runner.refine_batch(estimates, runner.settings.guidance_scale, StageClock())
    body = load_body_model("smplh", runner.spec.body_models)
    conditions = runner.conditions(estimates)
    return lambda: public_code_round(runner.model, body, runner.points.vertex_ids, x0, conditions, objects,
                                     guidance.masks, runner.settings.weights, runner.settings.guidance_scale)


# --- the FPS table ---------------------------------------------------------------------------


def measure(spec: RefineModelSpec, settings: RefineSettings, batch: int) -> dict:
    """Images per second end to end over one batch (warm-up excluded) and its time split."""
    refiner = ScoreHOIRefiner(spec, settings)
    refiner.warm_up()
    _, _, timings = refiner.run(scene_items(batch))
    measured = timings.batches[0]
    seconds = measured["seconds"]
    stages = {s: measured.get(f"{s}_s", 0.0) for s in ("denoiser", "body", "loss")}
    stages["other"] = seconds - sum(stages.values())
    return {"seconds": seconds, "fps": batch / seconds, "split": {s: v / seconds for s, v in stages.items()}}


def fps_table(body_dir: str) -> list[dict]:
    """Paper and fast presets at batch 1 and 64, folded (measured whole) and unfolded (one round
    measured, the FPS of N rounds extrapolated from it: rounds cost the same)."""
    spec = RefineModelSpec(body_models=body_dir, synthetic_body=True)
    rows = []
    for preset in ("paper", "fast"):
        for batch in (1, 64):
            for folded in (True, False):
                rounds = PRESETS[preset].rounds if folded else 1
                settings = RefineSettings.from_preset(preset, rounds=rounds, batch_size=batch, folded=folded)
                result = measure(spec, settings, batch)
                scale = PRESETS[preset].rounds / rounds
                rows.append({"preset": preset, "batch": batch, "denoiser": "folded" if folded else "unfolded",
                             "rounds_measured": rounds, "fps": result["fps"] / scale,
                             "seconds_per_image": result["seconds"] * scale / batch, "split": result["split"]})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def public_vs_engine(body_dir: str, repeats: int = 3) -> dict:
    """Median seconds of one round each way, public settings, batch 32."""
    spec = RefineModelSpec(body_models=body_dir, synthetic_body=True)
    out = {}
    for way in ("public_code", "engine"):
        settings = RefineSettings.from_preset("public", rounds=1, batch_size=PUBLIC_BATCH, folded=way == "engine")
        runner = ScoreHOIRefiner(spec, settings)
        runner.warm_up()
        run_round = one_round(runner, way, PUBLIC_BATCH)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run_round()
            seconds.append(time.perf_counter() - start)
        out[way] = {"round_s_median": sorted(seconds)[len(seconds) // 2], "round_s_all": seconds,
                    "fps_public_preset": PUBLIC_BATCH / (sorted(seconds)[len(seconds) // 2] * PRESETS["public"].rounds)}
        print(way, json.dumps(out[way]), flush=True)
    out["speedup"] = out["public_code"]["round_s_median"] / out["engine"]["round_s_median"]
    return out


def denoiser_flops() -> dict:
    """FLOPs of one released-size denoiser call per sample, unfolded and folded (meta device)."""
    config = scorehoi.PRESETS["released"]
    with torch.device("meta"):
        unfolded = scorehoi.ScoreHOIDenoiser(config).eval()
        folded = scorehoi.fold_scorehoi(unfolded)
    return {name: scorehoi.parameter_and_flop_count(model, config)[1]
            for name, model in (("unfolded", unfolded), ("folded", folded))}


def main() -> None:
    threads = int(os.environ.get("MOTIONFLEET_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    body_dir = make_body_dir()
    body = {
        "what": "ScoreHOI refinement on CPU, released-size denoiser with dummy weights, synthetic SMPL-H; "
                "FPS = images per second end to end (estimate rows to result rows, metrics excluded, warm-up "
                "excluded); split = share of those seconds in the denoiser, the body model (forward + backward), "
                "the fused loss, and the rest (Python, DDIM updates, contact masks)",
        "torch_threads": threads, "load_average_at_start": os.getloadavg(),
        "machine": provenance.host(), "versions": provenance.software_versions(),
        "python": platform.python_version(),
        "flops_per_sample_per_call": denoiser_flops(),
        "fps": fps_table(body_dir),
        "public_code_vs_engine_round": public_vs_engine(body_dir),
    }
    body["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(body, indent=2))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
