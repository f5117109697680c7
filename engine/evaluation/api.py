"""``evaluate``: one family's protocol into one folder; the CLI, the Python API and the
leaderboard all call this with the same option names."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

from motionfleet.core.options import Option, UsageError, file_option, int_option


def _pick(cls, options: dict, **renamed):
    """``cls(**...)`` from the options that are its fields (``renamed``: field -> option name)."""
    names = {f.name: renamed.get(f.name, f.name) for f in fields(cls)}
    return cls(**{field: options[name] for field, name in names.items() if options.get(name) is not None})


def unknown_options(family: str, options: dict) -> list[str]:
    return sorted(set(options) - OPTION_NAMES[family]())


def evaluate(family: str, out: str | Path, dataset: Optional[str] = None, workers: int | str = "auto",
             address: Optional[str] = None, **options) -> dict:
    """Run (or resume) ``family``'s evaluation protocol into ``out``; returns metrics.json's body.
    ``options``: the model's (checkpoint, preset, steps, ..., seed, batch_size, device) and the
    protocol's (replications, ...) settings, as the CLI names them with ``_`` for ``-``."""
    if family not in RUNNERS:
        raise UsageError(f"no evaluation protocol for family {family!r}: use {', '.join(RUNNERS)}")
    bad = unknown_options(family, options)
    if bad:
        known = ", ".join(sorted(OPTION_NAMES[family]()))
        raise UsageError(f"unknown {family} evaluation settings: {', '.join(bad)} (known: {known})")
    values = checked_options(family, {**options, "workers": workers, "address": address})
    workers, address = values.pop("workers", "auto"), values.pop("address", None)
    return RUNNERS[family](out, dataset, workers, address, values)


def checked_options(family: str, given: dict) -> dict:
    """The set values of ``given`` parsed and checked as the command line's flags are (a bad one
    raises UsageError naming its flag), the device resolved as ``--device`` resolves it."""
    from motionfleet.core.jobs import resolve_device

    options = {o.name: o for o in protocol_options(family)}
    values = {name: options[name].parse(v) if name in options else v for name, v in given.items() if v is not None}
    values["device"] = resolve_device(values.get("device", "auto"))
    return values


def _dhvae(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.dhvae import evaluate as ev
    from motionfleet.dhvae.runner import GenerateSettings, ModelSpec
    from motionfleet.evaluation import protocols

    preset = protocols.load("dhvae", options.get("protocol") or ev.PROTOCOL)
    spec = _pick(ModelSpec, options)
    settings = _pick(GenerateSettings, options)
    evaluator = _pick(ev.EvaluatorSpec, options, checkpoint="evaluator_checkpoint", preset="evaluator_preset",
                      dummy_seed="evaluator_dummy_seed", vocab="evaluator_vocab")
    given = {f.name: options[f.name] for f in fields(ev.InterHumanProtocol) if options.get(f.name) is not None}
    shard_size = options.get("shard_size") or 256
    return ev.evaluate(out, spec, settings, evaluator, preset, given, dataset, shard_size, workers, address)


def _field_names(*classes) -> set[str]:
    return {f.name for cls in classes for f in fields(cls)}


def _dhvae_options() -> set[str]:
    from motionfleet.dhvae import evaluate as ev
    from motionfleet.dhvae.runner import GenerateSettings, ModelSpec

    own = _field_names(ModelSpec, GenerateSettings, ev.InterHumanProtocol) - {"family"}
    return own | {"protocol", "evaluator_checkpoint", "evaluator_preset", "evaluator_dummy_seed", "evaluator_vocab", "shard_size"}


def _scorehoi(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.scorehoi import evaluate as ev

    settings = {k: v for k, v in options.items() if k not in ("replications", "seed")}  # no noise is drawn
    return ev.evaluate(out, settings, dataset, options.get("replications") or 1, workers, address)


def _socialmirror(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.socialmirror import evaluate as ev

    settings = {k: v for k, v in options.items() if k != "replications"}
    return ev.evaluate(out, settings, dataset, options.get("replications") or 2, workers, address)


def job_option_names(family: str) -> set[str]:
    """The family's job settings (model, sampler, engine) and ``shard_size``: what its protocol
    passes to the job, plus ``replications``."""
    from motionfleet.core import jobs, registry

    fam = registry.get(family)
    return {o.name for o in jobs.engine_options(fam) + fam.options} | {"shard_size", "replications"}


RUNNERS = {"dhvae": _dhvae, "scorehoi": _scorehoi, "socialmirror": _socialmirror}
OPTION_NAMES = {"dhvae": _dhvae_options, "scorehoi": lambda: (job_option_names("scorehoi") - {"control"}) | {"seed"},
                "socialmirror": lambda: job_option_names("socialmirror")}


DATASET_OPTION = file_option("dataset", "dhvae: an InterHuman-layout folder (--protocol interx: Inter-X's "
                             "processed_data); scorehoi: a refine Parquet with gt_* columns; socialmirror: a folder with "
                             "videos/ and ground_truth.parquet (docs/evaluate.md); none: a synthetic or demo set")


def protocol_options(name: str) -> tuple[Option, ...]:
    """The protocol's job settings (model, sampler, engine), the run's, and the protocol's own."""
    from motionfleet.core import jobs, registry

    family = registry.get(name)
    run = tuple(o for o in jobs.RUN_OPTIONS if o.name in ("workers", "address", "shard_size"))
    if name != "dhvae":
        job = tuple(o for o in jobs.engine_options(family) + family.options if o.name != "control")
        replications = (int_option("replications", 1, "one: the sampler draws no noise", low=1) if name == "scorehoi"
                        else int_option("replications", 2, "seeded reconstructions of the whole set", low=1))
        return job + (replications,) + run
    from motionfleet.evaluation import protocols

    generation = tuple(o for o in jobs.engine_options(family) + family.options if o.name not in ("repeats", "num_frames"))
    default = protocols.DEFAULT[name]
    preset = protocols.load(name, default)

    def size(option: str, text: str, low: int) -> Option:  # a flag that overrides the --protocol preset's value
        return int_option(option, None, f"{text} (default: the --protocol preset's; {default}: {preset.settings[option]})",
                          low=low)

    protocol = (
        Option("protocol", default, f"published protocol whose settings are the defaults below ({name}/protocols/"
               "<name>.toml: each with the public file and line it follows)", choices=protocols.names(name)),
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
    return generation + protocol + run
