"""The families the engine runs, and what a family is.

A family is one package (``motionfleet.<name>``) with its models, its source (inputs -> work
items, bad inputs kept as records the runner rejects), its runner (items -> result rows), its
result schema, its metrics and one ``Family`` object, registered below by one line. The engine
core (jobs, shards, execution, the job folder, the runtime) knows families only through this object;
the command line and the Python API are built from it, and so are ``evaluate``, ``leaderboard``,
``bench`` and ``render`` from the ``Evaluation``, ``BenchCase`` and ``Render`` a family may register.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

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
class Evaluation:
    """A family's evaluation protocol: what ``motionfleet evaluate --family NAME``, ``motionfleet.evaluate``
    and the leaderboard know of it.

    - ``protocol``: its name in a leaderboard config (``protocol = "interhuman"``);
    - ``options() -> tuple[Option, ...]``: its settings (the model's, the sampler's and its own such as
      ``replications``), each a flag of ``evaluate`` and an API keyword; the engine adds ``workers``,
      ``address`` and ``shard_size``;
    - ``keywords() -> set[str]``: optional, the API keywords it takes besides its flags (values given
      from code, passed on unchecked);
    - ``run(out, dataset, workers, address, values) -> dict``: run or resume it into ``out`` with the
      checked values of the settings given; returns metrics.json's body (``evaluation.results``);
    - ``lower_is_better``: its metrics, each -> whether lower is better (None: neither; the keys a
      leaderboard's ``[published]`` table may give);
    - ``dataset``: what ``--dataset`` names for it; ``dataset_is_folder``: a folder, or else a file.
    """

    protocol: str
    options: Callable[[], tuple[Option, ...]]
    run: Callable[..., dict]
    lower_is_better: Mapping[str, Optional[bool]]
    dataset: str
    dataset_is_folder: bool
    keywords: Optional[Callable[[], set[str]]] = None


@dataclass(frozen=True)
class BenchCase:
    """How ``motionfleet bench`` measures a family: one batch as its job runs it, warm-up excluded.

    - ``case``, ``unit``: the case's name and what its items are (``generate``, ``sentences``);
    - ``settings``: a frozen dataclass of its own settings with their defaults, a field written with
      ``bench_setting(default, help, ...)`` a flag of ``bench``; recorded in every record's ``settings``;
    - ``preset``: the field of ``settings`` holding the model size of the dummy weights;
    - ``loop_settings``: the fields besides it that make two records different cases (and are
      recorded in each);
    - ``cases(own, settings, clock) -> batch -> {backend: callable}``: ``own`` its settings, ``settings``
      the bench's (``bench.BenchSettings``), ``clock`` times each backend's construction
      (``bench.SetupClock.build``); each callable runs one batch;
    - ``cost(own, settings) -> batch -> {"gflop_per_batch", "gemm_floor_ms"}``: optional, the FLOPs
      and GEMM floor of a batch.
    """

    case: str
    unit: str
    settings: type
    preset: str
    cases: Callable[..., Callable[[int], dict[str, Callable[[], Any]]]]
    loop_settings: tuple[str, ...] = ()
    cost: Optional[Callable[..., Callable[[int], dict]]] = None


def bench_setting(default: Any, help: Optional[str] = None, *, flag: Optional[str] = None, type: Callable = str,
                  choices: Optional[tuple] = None, low: Optional[int] = None, high: Optional[int] = None,
                  metavar: Optional[str] = None) -> Any:
    """A field of a family's bench settings (``BenchCase.settings``): its default, and where ``help``
    is given the flag of ``bench`` that sets it (``--<name>`` unless ``flag``), parsed by ``type``,
    one of ``choices`` or within ``low`` and ``high``."""
    return field(default=default, metadata={"help": help, "flag": flag, "type": type, "choices": choices, "low": low,
                                            "high": high, "metavar": metavar})


@dataclass(frozen=True)
class Render:
    """How ``motionfleet render`` draws a family's results, one MP4 per id.

    - ``columns``: the result columns the drawing reads (the family's id column among them);
    - ``videos(job, values) -> draw``: ``job`` the job folder, ``values`` the render command's
      flags by name; ``draw(rows, path) -> frames written`` draws one id's rows into ``path``;
    - ``options``: its own flags of ``render`` (e.g. scorehoi's ``--body-models``);
    - ``contact_sheet(job, sheet, ids) -> tiles``: optional, ``render --contact-sheet``.
    """

    columns: tuple[str, ...]
    videos: Callable[..., Callable[[list[dict], Path], int]]
    options: tuple[Option, ...] = ()
    contact_sheet: Optional[Callable[..., int]] = None


@dataclass(frozen=True)
class Family:
    """One family's registration: the engine and the command line need nothing else.

    - ``options``: its settings beyond the engine's (each a CLI flag and an API keyword);
    - ``inputs``: the option naming its input (``prompts``, ``videos``, ``estimates``);
      ``demo``: whether ``--demo`` gives built-in inputs instead;
    - ``build(values) -> (spec, settings)``: the checked values as the family's own objects
      (picklable: they travel to every worker); ``options.options_of`` and ``options.build_from``
      derive ``options`` and ``build`` from the fields of those dataclasses, each setting written
      once on its field (``options.setting``);
    - ``plan(inputs, spec, settings, shard_size, out_dir) -> Plan``; ``shard_size`` None: the
      family's default, ``shards.shard_size_for`` its items (it is not given the workers: shard ids
      never depend on them);
    - ``runner``: ``runner(spec, settings)`` builds one worker's models; its ``run(items)`` returns
      (results table, rejected table, ``stopwatch.Timings``) and ``warm_up()`` runs outside timing;
    - ``summarise(done, wall_s, out_dir) -> Summary`` and ``report_lines(report) -> lines``;
    - ``load_model(checkpoint, preset, seed) -> (model, weights description)``: the one loader the
      runner, ``export`` and ``bench`` use; ``graphs(model, loop_steps, guidance, **values)``: what
      ``export`` writes, ``values`` the checked values of its ``export_options`` (flags of ``export``
      for this family only, e.g. socialmirror's front-end weights, as its job command takes them);
    - optional: ``evaluation`` (``evaluate``, ``leaderboard``), ``bench`` and ``render``.
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
    export_options: tuple[Option, ...] = ()
    demo: bool = False
    defaults: dict = field(default_factory=dict)  # engine option defaults this family changes
    evaluation: Optional[Evaluation] = None
    bench: Optional[BenchCase] = None
    render: Optional[Render] = None


def commands() -> dict[str, str]:
    """job command -> family name."""
    return {command: name for name, (command, _) in FAMILIES.items()}


def registering(part: str) -> list[Family]:
    """The families that register ``part`` (``evaluation``, ``bench``, ``render``), by name: the
    order every list of them (flags' help, defaults, errors) shows."""
    return [family for family in map(get, sorted(FAMILIES)) if getattr(family, part)]


def get(name: str) -> Family:
    """The family called ``name``, or the family whose job command is ``name``."""
    name = commands().get(name, name)
    if name not in FAMILIES:
        raise UsageError(f"unknown family {name!r}; families: {', '.join(FAMILIES)}")
    module, attribute = FAMILIES[name][1].split(":")
    return getattr(importlib.import_module(module), attribute)
