"""``evaluate``: one family's protocol into one folder; the CLI, the Python API and the
leaderboard all call this with the same option names."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

from motionfleet.core.options import UsageError


def _pick(cls, options: dict, **renamed):
    """``cls(**...)`` from the options that are its fields (``renamed``: field -> option name)."""
    names = {f.name: renamed.get(f.name, f.name) for f in fields(cls)}
    return cls(**{field: options[name] for field, name in names.items() if options.get(name) is not None})


def unknown_options(family: str, options: dict) -> list[str]:
    return sorted(set(options) - OPTION_NAMES[family]())


def evaluate(family: str, out: str | Path, dataset: Optional[str] = None, workers: int = 1,
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
    return RUNNERS[family](out, dataset, workers, address, options)


def _dhvae(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.dhvae import evaluate as ev
    from motionfleet.dhvae.runner import GenerateSettings, ModelSpec

    spec = _pick(ModelSpec, options)
    settings = _pick(GenerateSettings, options)
    evaluator = _pick(ev.EvaluatorSpec, options, checkpoint="evaluator_checkpoint", preset="evaluator_preset",
                      dummy_seed="evaluator_dummy_seed", vocab="evaluator_vocab")
    protocol = _pick(ev.InterHumanProtocol, options)
    shard_size = options.get("shard_size") or 256
    return ev.evaluate(out, spec, settings, evaluator, protocol, dataset, shard_size, workers, address)


def _field_names(*classes) -> set[str]:
    return {f.name for cls in classes for f in fields(cls)}


def _dhvae_options() -> set[str]:
    from motionfleet.dhvae import evaluate as ev
    from motionfleet.dhvae.runner import GenerateSettings, ModelSpec

    own = _field_names(ModelSpec, GenerateSettings, ev.InterHumanProtocol) - {"family"}
    return own | {"evaluator_checkpoint", "evaluator_preset", "evaluator_dummy_seed", "evaluator_vocab", "shard_size"}


SCOREHOI_SETTINGS = ("rounds", "tau", "stride", "guidance_scale", "contact_distance", "folded", "batch_size", "device",
                     "backend", "precision")


def _scorehoi(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.scorehoi import evaluate as ev
    from motionfleet.scorehoi.runner import RefineSettings, model_spec

    settings = RefineSettings.from_preset(options.get("preset") or "paper",
                                          **{k: options[k] for k in SCOREHOI_SETTINGS if options.get(k) is not None})
    spec = model_spec(options.get("model") or "released", options.get("checkpoint"), options.get("dummy_seed") or 0,
                      options.get("body_models"), options.get("image_encoder_weights"))
    return ev.evaluate(out, spec, settings, dataset, options.get("replications") or 1, options.get("shard_size") or 256,
                       workers, address)


def _scorehoi_options() -> set[str]:
    # seed is accepted for a uniform leaderboard; refinement draws no noise
    return set(SCOREHOI_SETTINGS) | {"preset", "model", "checkpoint", "dummy_seed", "body_models", "image_encoder_weights",
                                     "replications", "shard_size", "seed"}


def _socialmirror(out, dataset, workers, address, options: dict) -> dict:
    from motionfleet.socialmirror import evaluate as ev
    from motionfleet.socialmirror.runner import ReconstructSettings, ReconstructSpec

    spec = _pick(ReconstructSpec, options)
    settings = _pick(ReconstructSettings, options, clips_per_shard="shard_size")
    return ev.evaluate(out, spec, settings, dataset, options.get("replications") or 2, workers, address)


def _socialmirror_options() -> set[str]:
    from motionfleet.socialmirror.runner import ReconstructSettings, ReconstructSpec

    return (_field_names(ReconstructSpec, ReconstructSettings) - {"clips_per_shard", "estimates"}) | {"shard_size",
                                                                                                       "replications"}


RUNNERS = {"dhvae": _dhvae, "scorehoi": _scorehoi, "socialmirror": _socialmirror}
OPTION_NAMES = {"dhvae": _dhvae_options, "scorehoi": _scorehoi_options, "socialmirror": _socialmirror_options}
