"""``motionfleet leaderboard CONFIG.toml``: several models through one protocol, one table.

Config::

    protocol = "interhuman"        # one protocol for every entry (PROTOCOL_FAMILY)
    dataset = "data/interhuman"    # optional; default: the synthetic set
    workers = 2                    # Ray workers every job's shards share (0: in process)
    address = "ray://head:10001"   # optional: an existing cluster
    [protocol_settings]            # the protocol's settings, the same for every entry
    replications = 20
    [[entry]]
    name = "dhvae-official"
    family = "dhvae"
    checkpoint = "ckpt/last.ckpt"  # optional: seeded dummy weights
    seeds = [0, 1]                 # one evaluation per seed
    [entry.settings]               # the family's evaluate options (docs/evaluate.md)
    steps = 50

Every (entry, seed) is an ordinary evaluation folder ``OUT/entries/<name>/seed-<s>`` whose
generation and embedding jobs run as shards on the same Ray cluster, so a killed leaderboard
run again with the same config computes only what was not committed. Output:
``OUT/leaderboard.parquet`` (one row per entry, seed, source, metric, replication) and
``OUT/leaderboard.md`` (mean +- 1.96 sigma / sqrt(n) over every seed's replications, sorted by the
protocol's main metric, with weights, settings and versions).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from motionfleet.common.weights import weights_description
from motionfleet.core.options import Option, UsageError, int_option, workers_count
from motionfleet.evaluation import api
from motionfleet.evaluation.statistics import mean_and_interval

PROTOCOL_FAMILY = {"interhuman": "dhvae", "hoi": "scorehoi", "pair-reconstruction": "socialmirror"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    checkpoint: Optional[str]
    seeds: tuple[int, ...]
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    protocol: str
    entries: tuple[Entry, ...]
    protocol_settings: dict
    dataset: Optional[str] = None
    workers: int | str = "auto"
    address: Optional[str] = None


TOP_LEVEL = ("protocol", "dataset", "workers", "address", "protocol_settings", "entry")
ENTRY_KEYS = ("name", "family", "checkpoint", "seeds", "settings")
OWN_SETTINGS = ("workers", "address", "checkpoint", "seed", "protocol")  # set by the config's own keys, not by [settings]
SEED = int_option("seed", 0, "one evaluation per seed", low=0)
DATASET_IS_FOLDER = {"interhuman": True, "hoi": False, "pair-reconstruction": True}


def read_config(path: str | Path) -> Config:
    """The config, every value checked as the command line checks its flag (type, range, that a
    path exists and is a file or folder as it should be); ValueError naming the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"leaderboard config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err
    unknown(raw, TOP_LEVEL, f"{path}:")
    protocol = raw.get("protocol")
    if protocol not in PROTOCOL_FAMILY:
        raise ValueError(f"{path}: protocol must be one of {', '.join(PROTOCOL_FAMILY)}, got {protocol!r}")
    family = PROTOCOL_FAMILY[protocol]
    entries_raw = raw.get("entry", [])
    if not isinstance(entries_raw, list) or not all(isinstance(e, dict) for e in entries_raw):
        raise ValueError(f"{path}: entries are [[entry]] tables")
    entries = tuple(_entry(path, protocol, i, e) for i, e in enumerate(entries_raw))
    if not entries:
        raise ValueError(f"{path} has no [[entry]]")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: entry names must be unique, got {names}")
    options = {o.name: o for o in evaluation_options(family)}
    dataset = checked_value(options["dataset"], raw.get("dataset"), f"{path}: dataset")
    if dataset is not None and Path(dataset).is_dir() != DATASET_IS_FOLDER[protocol]:
        raise ValueError(f"{path}: dataset {dataset} is not a {'folder' if DATASET_IS_FOLDER[protocol] else 'file'}; "
                         f"see docs/evaluate.md for protocol {protocol}'s dataset")
    return Config(protocol, entries, settings(path, family, raw.get("protocol_settings", {}), "[protocol_settings]"),
                  dataset, checked_value(options["workers"], raw.get("workers"), f"{path}: workers"),
                  checked_value(options["address"], raw.get("address"), f"{path}: address"))


def _entry(path: Path, protocol: str, i: int, raw: dict) -> Entry:
    name, family = raw.get("name"), raw.get("family", PROTOCOL_FAMILY[protocol])
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{path}: entry {i} needs a name of letters, digits, '.', '_' or '-', got {name!r}")
    unknown(raw, ENTRY_KEYS, f"{path}: entry {name!r}:")
    if family != PROTOCOL_FAMILY[protocol]:
        raise ValueError(f"{path}: entry {name!r} is family {family!r}; protocol {protocol} evaluates "
                         f"{PROTOCOL_FAMILY[protocol]}")
    options = {o.name: o for o in evaluation_options(family)}
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"{path}: entry {name!r} seeds must be a list of integers")
    seeds = [checked_value(SEED, seed, f"{path}: entry {name!r} seed") for seed in seeds]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"{path}: entry {name!r} lists seed {repeated[0]} twice; each seed is one evaluation, "
                         f"list it once")
    checkpoint = checked_value(options["checkpoint"], raw.get("checkpoint"), f"{path}: entry {name!r} checkpoint")
    return Entry(name, family, checkpoint, tuple(seeds),
                 settings(path, family, raw.get("settings", {}), f"entry {name!r} [entry.settings]"))


def evaluation_options(family: str) -> tuple:
    """The options ``motionfleet evaluate --family FAMILY`` takes, with its --dataset."""
    from motionfleet.evaluation.api import DATASET_OPTION, protocol_options

    return (*protocol_options(family), DATASET_OPTION)


def settings(path: Path, family: str, raw, where: str) -> dict:
    """A settings table, each value checked as its flag; the keys the config sets itself are refused."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: {where} is not a table")
    options = {o.name: o for o in evaluation_options(family) if o.name not in (*OWN_SETTINGS, "dataset")}
    unknown(raw, options, f"{path}: {where}:")
    return {key: checked_value(options[key], value, f"{path}: {where} {key}") for key, value in raw.items()}


def unknown(table: dict, known, where: str) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise ValueError(f"{where} unknown setting {extra[0]!r}; known: {', '.join(known)}")


TOML_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def checked_value(option: Option, value, where: str):
    """``value`` of the TOML type the option takes (no string for a number, no boolean for an
    integer), then checked as the option's flag is (range, choices, that a path exists)."""
    if value is None:
        return option.default
    kind = bool if option.switch else option.type if option.type in (int, float) else str
    if option.type is workers_count:  # a whole number, or the string "auto"
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"{where} = {value!r} is not an integer (or \"auto\")")
        kind = str if value == "auto" else int
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
        raise ValueError(f"{where} = {value!r} is not {TOML_KINDS[kind]}")
    try:
        return option.parse(value)
    except UsageError as err:
        raise ValueError(f"{where} = {value!r}: {str(err).split(': ', 1)[-1]}") from err


def run(config_path: str | Path, out_dir: str | Path) -> dict:
    """Run (or resume) every entry; write and return the table."""
    config = read_config(config_path)
    out = Path(out_dir)
    bodies = {}
    for entry in config.entries:
        for seed in entry.seeds:
            bodies[(entry.name, seed)] = api.evaluate(
                entry.family, out / "entries" / entry.name / f"seed-{seed}", config.dataset, config.workers,
                config.address, **{**config.protocol_settings, **entry.settings}, checkpoint=entry.checkpoint, seed=seed)
    rows = table_rows(config, bodies)
    pq.write_table(pa.Table.from_pylist(rows), out / "leaderboard.parquet")
    text = markdown(config, bodies, rows)
    (out / "leaderboard.md").write_text(text)
    return {"rows": rows, "markdown": text}


def _weights(entry: Entry) -> str:
    return weights_description(entry.checkpoint, entry.settings.get("dummy_seed", 0))


def table_rows(config: Config, bodies: dict) -> list[dict]:
    rows = []
    for entry in config.entries:
        for seed in entry.seeds:
            body = bodies[(entry.name, seed)]
            for source, metrics in body["metrics"].items():
                for metric, summary in metrics.items():
                    for replication, value in enumerate(summary["values"]):
                        rows.append({"entry": entry.name, "family": entry.family, "seed": seed, "source": source,
                                     "metric": metric, "replication": replication, "value": value,
                                     "weights": _weights(entry), "evaluator_weights": body["evaluator"]["weights"],
                                     "settings": json.dumps(entry.settings, sort_keys=True),
                                     "engine_version": body["engine_version"]})
    return rows


def markdown(config: Config, bodies: dict, rows: list[dict]) -> str:
    first = next(iter(bodies.values()))
    main, lower = first["main_metric"], first["lower_is_better"]
    metrics = list(first["metrics"]["generated"])
    lines_by_entry = []
    for entry in config.entries:
        values = {m: [r["value"] for r in rows if r["entry"] == entry.name and r["source"] == "generated" and r["metric"] == m]
                  for m in metrics}
        lines_by_entry.append((mean_and_interval(values[main])[0], entry, values))
    lines_by_entry.sort(key=lambda x: x[0] if lower.get(main, True) else -x[0])
    arrows = {m: " (lower better)" if lower.get(m) else " (higher better)" if lower.get(m) is False else "" for m in metrics}
    header = ["rank", "entry", *[f"{m}{arrows[m]}" for m in metrics], "seeds x replications", "weights", "settings"]
    out = [f"# Leaderboard: {config.protocol} ({first['family']})", "",
           f"Sorted by {main}. Each cell: mean +- 1.96 sigma / sqrt(n) over every seed's replications.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, (_, entry, values) in enumerate(lines_by_entry, 1):
        cells = [f"{m:.4f} +- {i:.4f}" for m, i in (mean_and_interval(values[k]) for k in metrics)]
        n = len(values[main])
        out.append(f"| {rank} | {entry.name} | " + " | ".join(cells)
                   + f" | {len(entry.seeds)} x {n // len(entry.seeds)} | {_weights(entry)} | `{json.dumps(entry.settings, sort_keys=True)}` |")
    real = first["metrics"].get("real")
    if real:
        out += ["", "Real data through the same metrics (first entry's first seed): "
                + ", ".join(f"{m} {s['mean']:.4f} +- {s['interval']:.4f}" for m, s in real.items())]
    out += ["", f"Protocol settings: `{json.dumps(first['protocol_settings'], sort_keys=True)}`",
            f"Dataset: {first['dataset']['root']} ({first['dataset']['motions']} motions, sha256 {first['dataset']['sha256'][:16]})",
            f"Evaluator weights: {first['evaluator']['weights']}",
            f"Versions: {', '.join(f'{k} {v}' for k, v in first['versions'].items())}", ""]
    return "\n".join(out)
