"""dhvae's registration: text prompts -> two-person motion (``motionfleet generate``)."""

from __future__ import annotations

from dataclasses import asdict, fields
from functools import partial
from typing import Any, Callable

from motionfleet.common.weights import weights_description
from motionfleet.core.io.digests import weights_digest
from motionfleet.core.options import Option, UsageError, build_from, existing_file, file_option, int_option, options_of, output_settings
from motionfleet.core.registry import Evaluation, Family, Plan
from motionfleet.core.shards import plan_ranges, shard_size_for
from motionfleet.dhvae import bench, evaluate, graphs, motion_space, render, report
from motionfleet.dhvae.model import PRESETS, load
from motionfleet.dhvae.runner import DHVAEGenerator, check_options, release_input_digests
from motionfleet.dhvae.settings import GenerateSettings, ModelSpec
from motionfleet.dhvae.source import load_prompts, prompt_items, prompt_rows, scan_prompt_file

DEFAULT_SHARD_SIZE = 256
# The order --help lists generate's settings in (the rest follow in field order).
HELP_ORDER = ("steps", "guidance_scale", "eta", "seed", "repeats", "num_frames", "text_encoder", "text_encoder_weights",
              "null_text_feature", "vae_hparams", "motion_stats")
OPTIONS = options_of(GenerateSettings, ModelSpec, order=HELP_ORDER)


def plan(prompts, spec: ModelSpec, settings: GenerateSettings, shard_size, out_dir) -> Plan:
    """A prompt file is streamed: its shards are descriptors (``shards.RangeItems``) their workers
    read; the built-in set and a Python list are small and travel as items."""
    check_options(spec, settings)
    name, digest, count, shard_items = prompt_source(prompts, settings.repeats)
    if count == 0:
        raise UsageError(f"--prompts {name}: holds no prompt; give one prompt per line (.txt), one JSON object with "
                         "'text' per line (.jsonl) or rows with a 'text' column (.parquet)")
    total = count * settings.repeats
    size = shard_size or shard_size_for(total, DEFAULT_SHARD_SIZE)
    job = {
        "model": asdict(spec), "model_name": f"dhvae/{spec.preset}" if spec.checkpoint is None else "dhvae",
        "weights": weights_description(spec.checkpoint, spec.dummy_seed),
        "text_encoder_weights_sha256": weights_digest(spec.text_encoder_weights),
        **release_input_digests(spec), "motion_space": motion_space.motion_space_report(spec, settings),
        "settings": output_settings(settings),
        "inputs": {"source": name, "sha256": digest, "count": count},
        "shard_size": size,
    }
    return Plan(plan_ranges(total, size, shard_items), job)


def prompt_source(prompts, repeats: int) -> tuple[str, str, int, Callable[[int, int], Any]]:
    """(name, sha256, prompt count, ``items(start, stop)`` of a shard) of the job's prompts."""
    if prompts is None or isinstance(prompts, (list, tuple)):
        prompt_set = load_prompts(prompts)
        items = prompt_items(prompt_set.records, repeats)
        return prompt_set.name, prompt_set.digest, len(prompt_set.records), lambda a, b: tuple(items[a:b])
    source = scan_prompt_file(prompts)
    return source.name, source.digest, source.count, partial(prompt_rows, source)


# --- its evaluation: the InterHuman protocol (``motionfleet evaluate --family dhvae``) -------


def evaluation_options() -> tuple[Option, ...]:
    """generate's settings but those the protocol decides (--repeats, --num-frames), the --protocol
    preset and the sizes it sets, and the evaluator's."""
    from motionfleet.core import jobs
    from motionfleet.evaluation import protocols

    generation = tuple(o for o in jobs.engine_options(FAMILY) + FAMILY.options if o.name not in ("repeats", "num_frames"))
    default = evaluate.PROTOCOL
    preset = protocols.load("dhvae", default)

    def size(option: str, text: str, low: int) -> Option:  # a flag that overrides the --protocol preset's value
        return int_option(option, None, f"{text} (default: the --protocol preset's; {default}: {preset.settings[option]})",
                          low=low)

    protocol = (
        Option("protocol", default, "published protocol whose settings are the defaults below (dhvae/protocols/"
               "<name>.toml: each with the public file and line it follows)", choices=protocols.names("dhvae")),
        size("replications", "replications", 1),
        size("match_batch", "R-precision matching batch", 1),
        size("diversity_pairs", "Diversity pairs", 1),
        size("mm_texts", "MModality texts (0: no MModality)", 0),
        size("mm_repeats", "MModality generations per text", 1),
        size("mm_pairs", "MModality pairs per text", 1),
        file_option("evaluator_checkpoint", "the protocol's released evaluator: InterCLIP's interclip.ckpt (interhuman), "
                    "Inter-X's text_mot_match/model/finest.tar (interx); none: seeded dummy weights"),
        Option("evaluator_preset", None, f"InterCLIP size for dummy weights (default: the --protocol preset's; "
               f"{default}: {preset.evaluator['preset']})", choices=("official", "tiny")),
        file_option("evaluator_vocab", "another CLIP merges file (default: OpenAI's bpe_simple_vocab_16e6.txt.gz, shipped)"),
    )
    return generation + protocol


def evaluation_keywords() -> set[str]:
    """Every field of the generate job's and the protocol's settings (the API may set those the flags
    leave, e.g. ``embed_batches_per_shard``), and the evaluator's under their flags' names."""
    names = {f.name for cls in (ModelSpec, GenerateSettings, evaluate.InterHumanProtocol) for f in fields(cls)}
    return names - {"family"} | {"protocol", "evaluator_checkpoint", "evaluator_preset", "evaluator_dummy_seed",
                                 "evaluator_vocab", "shard_size"}


def picked(cls, options: dict, **renamed):
    """``cls(**...)`` from the options that are its fields (``renamed``: field -> option name)."""
    names = {f.name: renamed.get(f.name, f.name) for f in fields(cls)}
    return cls(**{field: options[name] for field, name in names.items() if options.get(name) is not None})


def run_evaluation(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.evaluation import protocols

    preset = protocols.load("dhvae", options.get("protocol") or evaluate.PROTOCOL)
    evaluator = picked(evaluate.EvaluatorSpec, options, checkpoint="evaluator_checkpoint", preset="evaluator_preset",
                       dummy_seed="evaluator_dummy_seed", vocab="evaluator_vocab")
    given = {f.name: options[f.name] for f in fields(evaluate.InterHumanProtocol) if options.get(f.name) is not None}
    return evaluate.evaluate(out, picked(ModelSpec, options), picked(GenerateSettings, options), evaluator, preset, given,
                             dataset, options.get("shard_size") or DEFAULT_SHARD_SIZE, workers, address)


EVALUATION = Evaluation(
    protocol=evaluate.PROTOCOL, options=evaluation_options, run=run_evaluation, keywords=evaluation_keywords,
    lower_is_better=evaluate.LOWER_IS_BETTER, dataset="an InterHuman-layout folder (--protocol interx: Inter-X's processed_data)",
    dataset_is_folder=True,
)


FAMILY = Family(
    name="dhvae", command="generate", summary="text prompts -> two-person motion (dhvae)",
    example="motionfleet generate --prompts prompts.txt --out runs/gen --workers 2 --steps 50 --guidance-scale 3.5",
    unit="sample", id_column="sample_id", presets=tuple(PRESETS), default_preset=ModelSpec.preset,
    inputs=file_option("prompts", ".txt (one per line), .jsonl or .parquet; default: the built-in set",
                       existing_file),
    options=OPTIONS, build=build_from(ModelSpec, GenerateSettings), plan=plan, runner=DHVAEGenerator, summarise=report.summarise,
    report_lines=report.report_lines, load_model=load, graphs=graphs.family_graphs, evaluation=EVALUATION,
    bench=bench.BENCH, render=render.RENDER,
)
