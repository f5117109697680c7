"""scorehoi's registration: initial human-object estimates -> score-guided refinement
(``motionfleet refine``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from motionfleet.common.weights import weights_description
from motionfleet.core.errors import checkpoint_errors
from motionfleet.core.io.digests import weights_digest
from motionfleet.core.options import Option, UsageError, existing_file, field_values, file_option, int_option, options_of, output_settings
from motionfleet.core.registry import Evaluation, Family, Plan
from motionfleet.core.shards import plan_ranges, shard_size_for
from motionfleet.demo.scenes import demo_scenes
from motionfleet.sampling.ddim import strided_timesteps
from motionfleet.scorehoi import bench, evaluate, graphs, render, report
from motionfleet.scorehoi.model import PRESETS, load_model, probe_released_checkpoint
from motionfleet.scorehoi.runner import SCHEDULE, ScoreHOIRefiner
from motionfleet.scorehoi.settings import SAMPLER_PRESETS, RefineModelSpec, RefineSettings, model_spec
from motionfleet.scorehoi.source import VARIANTS, estimate_rows, referenced_files_sha256, refine_items, scan_estimates

DEFAULT_SHARD_SIZE = 256
_presets = ", ".join(f"{name} (N {p.rounds}, tau {p.tau}, stride {p.stride})" for name, p in SAMPLER_PRESETS.items())
SAMPLER_PRESET = Option("sampler_preset", "paper", f"refinement sampler: {_presets}", choices=tuple(SAMPLER_PRESETS))
# The order --help lists refine's settings in (the rest follow in field order).
HELP_ORDER = ("rounds", "tau", "ddim_stride", "guidance_scale", "control", "unfolded", "body_models", "contact_distance",
              "image_encoder_weights")
OPTIONS = (SAMPLER_PRESET, *options_of(RefineSettings, RefineModelSpec, order=HELP_ORDER))


def build(v: dict) -> tuple[RefineModelSpec, RefineSettings]:
    """The declared settings, with those left unset (--rounds, --tau, --ddim-stride) from the
    --sampler-preset and the control rows on with --demo; the body model folder resolved."""
    given = field_values(RefineSettings, {**v, "control": v["control"] or v["demo"]})
    settings = RefineSettings.from_preset(v["sampler_preset"], **given)
    if settings.stride > settings.tau:
        raise UsageError(f"--ddim-stride {settings.stride} is larger than --tau {settings.tau}; give a stride <= tau")
    try:
        strided_timesteps(settings.tau, settings.stride, SCHEDULE.num_train_timesteps)
    except ValueError as err:
        raise UsageError(f"--tau {settings.tau} --ddim-stride {settings.stride}: {err}") from None
    return model_spec(**field_values(RefineModelSpec, v)), settings


def plan(estimates, spec, settings: RefineSettings, shard_size, out_dir: Path) -> Plan:
    """``estimates`` None: the demo scenes (in memory, travelling as items); a file is streamed, its
    shards are descriptors (``shards.RangeItems``) their workers read."""
    with checkpoint_errors(spec.checkpoint, "scorehoi"):
        probe_released_checkpoint(spec.checkpoint, PRESETS[spec.preset])
    name, digest, count, referenced, shard_items = estimate_source(estimates, spec, settings.control)
    if count == 0:
        raise UsageError(f"--estimates {name}: holds no row; give one row of initial estimates per image "
                         "(docs/refine.md), or --demo")
    total = count * (len(VARIANTS) if settings.control else 1)
    size = shard_size or shard_size_for(total, DEFAULT_SHARD_SIZE)
    job = {
        "model": {"preset": spec.preset, "checkpoint": spec.checkpoint, "dummy_seed": spec.dummy_seed,
                  "image_encoder_weights": spec.image_encoder_weights},
        "model_name": f"scorehoi/{spec.preset}",
        "weights": weights_description(spec.checkpoint, spec.dummy_seed), "body_model": spec.body_description(),
        "settings": output_settings(settings),
        "inputs": {"source": name, "sha256": digest, "count": count, "referenced_files_sha256": referenced},
        "image_encoder_weights_sha256": weights_digest(spec.image_encoder_weights),
        "variants": list(VARIANTS if settings.control else VARIANTS[:1]), "shard_size": size,
    }
    return Plan(plan_ranges(total, size, shard_items), job)


def estimate_source(estimates, spec, control: bool) -> tuple[str, str, int, str, Callable[[int, int], Any]]:
    """(name, sha256, row count, referenced files' sha256, ``items(start, stop)`` of a shard)."""
    if estimates is None:
        demo = demo_scenes(PRESETS[spec.preset].condition_dim)
        items = refine_items(demo.records, control)
        referenced = referenced_files_sha256(None, [r.get("object") for r in demo.records],
                                             [r.get("image_path") for r in demo.records])
        return demo.name, demo.digest, len(demo.records), referenced, lambda a, b: tuple(items[a:b])
    source = scan_estimates(estimates)
    return source.path, source.digest, source.count, source.referenced_files_sha256, partial(estimate_rows, source)


# --- its evaluation (``motionfleet evaluate --family scorehoi``) ---------------------------------


def evaluation_options() -> tuple[Option, ...]:
    """refine's settings but --control (the protocol scores the guided rows), and the replications."""
    from motionfleet.core import jobs

    job = tuple(o for o in jobs.engine_options(FAMILY) + FAMILY.options if o.name != "control")
    return job + (int_option("replications", 1, "one: the sampler draws no noise", low=1),)


def run_evaluation(out, dataset, workers, address, options: dict) -> dict:
    settings = {k: v for k, v in options.items() if k not in ("replications", "seed")}  # no noise is drawn
    return evaluate.evaluate(out, settings, dataset, options.get("replications") or 1, workers, address)


EVALUATION = Evaluation(
    protocol=evaluate.PROTOCOL, options=evaluation_options, run=run_evaluation,
    keywords=lambda: {"seed"},  # the leaderboard gives every entry a seed; refinement draws no noise
    lower_is_better=evaluate.LOWER_IS_BETTER, dataset="a refine Parquet with gt_* columns", dataset_is_folder=False,
)


FAMILY = Family(
    name="scorehoi", command="refine",
    summary="initial human-object estimates -> score-guided refinement (scorehoi)",
    example="motionfleet refine --estimates estimates.parquet --out runs/ref --sampler-preset fast",
    unit="estimate", id_column="sample_id", presets=tuple(PRESETS), default_preset=RefineModelSpec.preset,
    inputs=file_option("estimates", "Parquet of initial estimates, one row per image (docs/refine.md)", existing_file),
    options=OPTIONS, build=build, plan=plan, runner=ScoreHOIRefiner, summarise=report.summarise,
    report_lines=report.report_lines, load_model=load_model, graphs=graphs.family_graphs, demo=True, evaluation=EVALUATION,
    bench=bench.BENCH, render=render.RENDER,
)
