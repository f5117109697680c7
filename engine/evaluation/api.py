"""``evaluate``: one family's protocol into one folder; the CLI, the Python API and the
leaderboard all call this with the same option names. A protocol is what its family registers
(``registry.Evaluation``): this module adds the run's settings and checks every value as its flag."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from motionfleet.core.options import Option, UsageError, file_option
from motionfleet.core.registry import Evaluation

RUN_NAMES = ("workers", "address", "shard_size")  # the run's settings every protocol takes


def protocols() -> dict[str, Evaluation]:
    """family name -> its protocol, for the families that register one (by name)."""
    from motionfleet.core import registry

    return {family.name: family.evaluation for family in registry.registering("evaluation") if family.evaluation}


def protocol(family: str) -> Evaluation:
    known = protocols()
    if family not in known:
        raise UsageError(f"no evaluation protocol for family {family!r}: use {', '.join(known)}")
    return known[family]


def keywords(family: str) -> set[str]:
    """The API keywords ``family``'s protocol takes: its flags but the run's own ``workers`` and
    ``address`` (``evaluate``'s parameters), and what it takes from code only."""
    own = protocol(family).keywords
    flags = {o.name for o in protocol_options(family)} - {"workers", "address"}
    return flags | (own() if own else set())


def unknown_options(family: str, options: dict) -> list[str]:
    return sorted(set(options) - keywords(family))


def evaluate(family: str, out: str | Path, dataset: Optional[str] = None, workers: int | str = "auto",
             address: Optional[str] = None, **options) -> dict:
    """Run (or resume) ``family``'s evaluation protocol into ``out``; returns metrics.json's body.
    ``options``: the model's (checkpoint, preset, steps, ..., seed, batch_size, device) and the
    protocol's (replications, ...) settings, as the CLI names them with ``_`` for ``-``."""
    run = protocol(family).run
    bad = unknown_options(family, options)
    if bad:
        known = ", ".join(sorted(keywords(family)))
        raise UsageError(f"unknown {family} evaluation settings: {', '.join(bad)} (known: {known})")
    values = checked_options(family, {**options, "workers": workers, "address": address})
    workers, address = values.pop("workers", "auto"), values.pop("address", None)
    return run(out, dataset, workers, address, values)


def checked_options(family: str, given: dict) -> dict:
    """The set values of ``given`` parsed and checked as the command line's flags are (a bad one
    raises UsageError naming its flag), the device resolved as ``--device`` resolves it."""
    from motionfleet.core.jobs import resolve_device

    options = {o.name: o for o in protocol_options(family)}
    values = {name: options[name].parse(v) if name in options else v for name, v in given.items() if v is not None}
    values["device"] = resolve_device(values.get("device", "auto"))
    return values


def protocol_options(family: str) -> tuple[Option, ...]:
    """The protocol's settings (model, sampler, its own), then the run's."""
    from motionfleet.core import jobs

    return protocol(family).options() + tuple(o for o in jobs.RUN_OPTIONS if o.name in RUN_NAMES)


def dataset_option() -> Option:
    """``--dataset``: what it names for each protocol."""
    each = "; ".join(f"{name}: {evaluation.dataset}" for name, evaluation in protocols().items())
    return file_option("dataset", f"{each}; none: a synthetic or demo set (docs/evaluate.md)")
