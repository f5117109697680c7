"""The families the engine runs, and what a family is.

A family is one package (``motionfleet.<name>``) with its models, its source (inputs -> work
items, bad inputs kept as records the runner rejects), its runner (items -> result rows), its
result schema, its metrics and one ``Family`` object, registered below by one line. The engine
core (jobs, shards, execution, the job folder, the runtime) knows families only through this object;
the command line and the Python API are built from it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from motionfleet.core.execution.stages import Stage
from motionfleet.core.options import Option, UsageError
from motionfleet.core.shards import Shard

# name -> (its job command, "module:attribute" of its Family object). The object is imported on
# first use, so the command line starts without importing every family's models. Adding a family
# is one folder and one line here.
FAMILIES: dict[str, tuple[str, str]] = {
    "dhvae": ("generate", "motionfleet.dhvae.family:FAMILY"),
    "socialmirror": ("reconstruct", "motionfleet.socialmirror.family:FAMILY"),
    "scorehoi": ("refine", "motionfleet.scorehoi.family:FAMILY"),
}


@dataclass(frozen=True)
class Plan:
    """A job before any work: its shards, the description that decides the output bytes
    (model, weights, settings, inputs; not batch size, workers or scheduling) and the stages its
    shards read, run before them (``execution.stages``)."""

    shards: list[Shard]
    job: dict
    stages: tuple[Stage, ...] = ()


@dataclass(frozen=True)
class Summary:
    """A family's account of a finished run: ``timing`` (its own keys), the headline figure
    (``{"name": "aits_s", "value": ..., "unit": "s", "meaning": ...}``) and anything else for
    report.json (e.g. refine's quality means)."""

    timing: dict
    headline: dict
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """One family's registration: the engine and the command line need nothing else.

    - ``options``: its settings beyond the engine's (each a CLI flag and an API keyword);
    - ``inputs``: the option naming its input (``prompts``, ``videos``, ``estimates``);
      ``demo``: whether ``--demo`` gives built-in inputs instead;
    - ``build(values) -> (spec, settings)``: the checked values as the family's own objects
      (picklable: they travel to every worker);
    - ``plan(inputs, spec, settings, shard_size, out_dir) -> Plan``; ``shard_size`` None: the
      family's default, ``shards.shard_size_for`` its items (it is not given the workers: shard ids
      never depend on them);
    - ``runner``: ``runner(spec, settings)`` builds one worker's models; its ``run(items)`` returns
      (results table, rejected table, ``stopwatch.Timings``) and ``warm_up()`` runs outside timing;
    - ``summarise(done, wall_s, out_dir) -> Summary`` and ``report_lines(report) -> lines``;
    - ``load_model(checkpoint, preset, seed) -> (model, weights description)``: the one loader the
      runner, ``export`` and ``bench`` use; ``graphs(model, loop_steps, guidance)``: what
      ``export`` writes.
    """

    name: str
    command: str
    summary: str
    example: str
    unit: str
    id_column: str
    presets: tuple[str, ...]
    default_preset: str
    inputs: Option
    options: tuple[Option, ...]
    build: Callable[[dict], tuple[Any, Any]]
    plan: Callable[..., Plan]
    runner: type
    summarise: Callable[..., Summary]
    report_lines: Callable[[dict], list[str]]
    load_model: Callable[..., tuple[Any, str]]
    graphs: Optional[Callable[..., list]] = None
    demo: bool = False
    defaults: dict = field(default_factory=dict)  # engine option defaults this family changes


def commands() -> dict[str, str]:
    """job command -> family name."""
    return {command: name for name, (command, _) in FAMILIES.items()}


def get(name: str) -> Family:
    """The family called ``name``, or the family whose job command is ``name``."""
    name = commands().get(name, name)
    if name not in FAMILIES:
        raise UsageError(f"unknown family {name!r}; families: {', '.join(FAMILIES)}")
    module, attribute = FAMILIES[name][1].split(":")
    return getattr(importlib.import_module(module), attribute)
