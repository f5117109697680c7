"""``motionfleet leaderboard CONFIG.toml``: several models through one protocol, one table.

Config::

    protocol = "interhuman"        # one protocol for every entry (a family's registry.Evaluation)
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
    [entry.published]              # optional: the paper's numbers for this entry
    paper = "InterGen (Liang et al., IJCV 2024)"
    table = "Table 1"
    fid = 5.918
    r_precision_top1 = { value = 0.371, interval = 0.010 }
    [real.published]               # optional: the paper's numbers for the real data
    paper = "InterGen (Liang et al., IJCV 2024)"
    table = "Table 1, Real"
    r_precision_top1 = 0.452

Every (entry, seed) is an ordinary evaluation folder ``OUT/entries/<name>/seed-<s>`` whose
generation and embedding jobs run as shards on the same Ray cluster, so a killed leaderboard
run again with the same config computes only what was not committed. Output:
``OUT/leaderboard.parquet`` (one row per entry, seed, source, metric, replication) and
``OUT/leaderboard.md`` (mean +- 1.96 sigma / sqrt(n) over every seed's replications, sorted by the
protocol's main metric, with weights, settings and versions; then, per entry and for the real data,
every metric's published value, reproduced value and their difference) and ``OUT/leaderboard.json``
(the same board as data: ``motionfleet report OUT`` draws it as a sortable HTML page).
"""

from __future__ import annotations

import json
import math
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
from motionfleet.core.options import MAX_SEED, Option, UsageError, int_option, workers_count
from motionfleet.evaluation import api
from motionfleet.evaluation.statistics import mean_and_interval

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Published:
    """Numbers a paper reports: metric -> (value, its interval or None), and where they are printed."""
    paper: str
    table: str
    values: dict[str, tuple[float, Optional[float]]]


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    checkpoint: Optional[str]
    seeds: tuple[int, ...]
    settings: dict = field(default_factory=dict)
    published: Optional[Published] = None


@dataclass(frozen=True)
class Config:
    protocol: str
    entries: tuple[Entry, ...]
    protocol_settings: dict
    dataset: Optional[str] = None
    workers: int | str = "auto"
    address: Optional[str] = None
    real_published: Optional[Published] = None


TOP_LEVEL = ("protocol", "dataset", "workers", "address", "protocol_settings", "entry", "real")
ENTRY_KEYS = ("name", "family", "checkpoint", "seeds", "settings", "published")
SOURCE_KEYS = ("paper", "table")  # where a [published] table's numbers are printed
BOARD_JSON = "leaderboard.json"
OWN_SETTINGS = ("workers", "address", "checkpoint", "seed", "protocol")  # set by the config's own keys, not by [settings]
SEED = int_option("seed", 0, "one evaluation per seed", low=0, high=MAX_SEED)


def protocol_families() -> dict[str, str]:
    """protocol name -> the family whose evaluation it is."""
    return {evaluation.protocol: family for family, evaluation in api.protocols().items()}


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
    protocol, families = raw.get("protocol"), protocol_families()
    if protocol not in families:
        raise ValueError(f"{path}: protocol must be one of {', '.join(families)}, got {protocol!r}")
    family = families[protocol]
    entries_raw = raw.get("entry", [])
    if not isinstance(entries_raw, list) or not all(isinstance(e, dict) for e in entries_raw):
        raise ValueError(f"{path}: entries are [[entry]] tables")
    entries = tuple(_entry(path, protocol, family, i, e) for i, e in enumerate(entries_raw))
    if not entries:
        raise ValueError(f"{path} has no [[entry]]")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: entry names must be unique, got {names}")
    options = {o.name: o for o in evaluation_options(family)}
    dataset = checked_value(options["dataset"], raw.get("dataset"), f"{path}: dataset")
    folder = api.protocol(family).dataset_is_folder
    if dataset is not None and Path(dataset).is_dir() != folder:
        raise ValueError(f"{path}: dataset {dataset} is not a {'folder' if folder else 'file'}; "
                         f"see docs/evaluate.md for protocol {protocol}'s dataset")
    return Config(protocol, entries, settings(path, family, raw.get("protocol_settings", {}), "[protocol_settings]"),
                  dataset, checked_value(options["workers"], raw.get("workers"), f"{path}: workers"),
                  checked_value(options["address"], raw.get("address"), f"{path}: address"),
                  real_published(path, family, raw.get("real")))


def _entry(path: Path, protocol: str, evaluated: str, i: int, raw: dict) -> Entry:
    name, family = raw.get("name"), raw.get("family", evaluated)
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{path}: entry {i} needs a name of letters, digits, '.', '_' or '-', got {name!r}")
    unknown(raw, ENTRY_KEYS, f"{path}: entry {name!r}:")
    if family != evaluated:
        raise ValueError(f"{path}: entry {name!r} is family {family!r}; protocol {protocol} evaluates {evaluated}")
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
                 settings(path, family, raw.get("settings", {}), f"entry {name!r} [entry.settings]"),
                 published(path, family, raw.get("published"), f"entry {name!r} [entry.published]"))


def metric_names(family: str) -> tuple[str, ...]:
    """The metrics ``family``'s evaluation reports."""
    return tuple(api.protocol(family).lower_is_better)


def real_published(path: Path, family: str, raw) -> Optional[Published]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: real is not a table; write [real.published]")
    unknown(raw, ("published",), f"{path}: [real]:")
    return published(path, family, raw.get("published"), "[real.published]")


def published(path: Path, family: str, raw, where: str) -> Optional[Published]:
    """A ``[published]`` table: ``paper`` and ``table`` strings, then metric = value or
    metric = { value = X, interval = Y }, each a finite number (an interval >= 0)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: {where} is not a table")
    metrics = metric_names(family)
    unknown(raw, (*SOURCE_KEYS, *metrics), f"{path}: {where}:")
    for key in SOURCE_KEYS:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ValueError(f"{path}: {where} needs {key} = \"...\" naming where the numbers are printed, "
                             f"got {raw.get(key)!r}")
    values = {m: published_value(raw[m], f"{path}: {where} {m}") for m in metrics if m in raw}
    if not values:
        raise ValueError(f"{path}: {where} gives no metric; known: {', '.join(metrics)}")
    return Published(raw["paper"], raw["table"], values)


def published_value(raw, where: str) -> tuple[float, Optional[float]]:
    if isinstance(raw, dict):
        unknown(raw, ("value", "interval"), f"{where}:")
        if "value" not in raw:
            raise ValueError(f"{where} needs a value: {{ value = X, interval = Y }}")
        interval = None if raw.get("interval") is None else finite(raw["interval"], f"{where} interval")
        if interval is not None and interval < 0:
            raise ValueError(f"{where} interval = {interval!r}: must be >= 0")
        return finite(raw["value"], f"{where} value"), interval
    return finite(raw, where), None


def finite(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} = {value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{where} = {value!r} is not a finite number")
    return float(value)


def evaluation_options(family: str) -> tuple:
    """The options ``motionfleet evaluate --family FAMILY`` takes, with its --dataset."""
    return (*api.protocol_options(family), api.dataset_option())


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
    summary = board(config, bodies, rows)
    (out / BOARD_JSON).write_text(json.dumps(summary, indent=1))
    text = markdown(summary)
    (out / "leaderboard.md").write_text(text)
    return {"rows": rows, "markdown": text, "board": summary}


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


def board(config: Config, bodies: dict, rows: list[dict]) -> dict:
    """The board as data (``leaderboard.json``): one row per entry, ranked by the main metric, and
    the real data's row; each row's cells: metric -> reproduced mean and interval, and where the
    config gives them the published value, its interval and the difference reproduced - published."""
    first = next(iter(bodies.values()))
    main, lower = first["main_metric"], first["lower_is_better"]
    metrics = list(first["metrics"]["generated"])
    entries = []
    for entry in config.entries:
        values = {m: [r["value"] for r in rows if r["entry"] == entry.name and r["source"] == "generated" and r["metric"] == m]
                  for m in metrics}
        entries.append({**board_row(entry.name, metrics, values, entry.published),
                        "seeds": len(entry.seeds), "replications": len(values[main]) // len(entry.seeds),
                        "weights": _weights(entry), "settings": entry.settings})
    entries.sort(key=lambda e: e["cells"][main]["mean"] if lower.get(main, True) else -e["cells"][main]["mean"])
    for rank, row in enumerate(entries, 1):
        row["rank"] = rank
    real = first["metrics"].get("real")
    real_row = None if not real else {  # the same set for every entry: the first entry's first seed's
        **board_row("real data", metrics, {m: s["values"] for m, s in real.items()}, config.real_published),
        "seeds": 1, "replications": len(next(iter(real.values()))["values"])}
    return {"protocol": config.protocol, "family": first["family"], "main_metric": main, "lower_is_better": lower,
            "metrics": metrics, "entries": entries, "real": real_row, "protocol_settings": first["protocol_settings"],
            "dataset": first["dataset"], "evaluator_weights": first["evaluator"]["weights"], "versions": first["versions"]}


def board_row(name: str, metrics: list[str], values: dict[str, list[float]], published: Optional[Published]) -> dict:
    cells = {}
    for metric in metrics:
        cell: dict[str, Optional[float]] = {}
        if values.get(metric):
            cell["mean"], cell["interval"] = mean_and_interval(values[metric])
        if published is not None and metric in published.values:
            cell["published"], cell["published_interval"] = published.values[metric]
            mean, value = cell.get("mean"), cell["published"]
            if mean is not None and value is not None:
                cell["difference"] = mean - value
        cells[metric] = cell
    source = None if published is None else {"paper": published.paper, "table": published.table}
    return {"name": name, "cells": cells, "published_in": source}


def plus_minus(value: Optional[float], interval: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + ("" if interval is None else f" +- {interval:.4f}")


def markdown(summary: dict) -> str:
    main, lower, metrics = summary["main_metric"], summary["lower_is_better"], summary["metrics"]
    arrows = {m: " (lower better)" if lower.get(m) else " (higher better)" if lower.get(m) is False else "" for m in metrics}
    header = ["rank", "entry", *[f"{m}{arrows[m]}" for m in metrics], "seeds x replications", "weights", "settings"]
    out = [f"# Leaderboard: {summary['protocol']} ({summary['family']})", "",
           f"Sorted by {main}. Each cell: mean +- 1.96 sigma / sqrt(n) over every seed's replications.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["entries"]:
        cells = [plus_minus(row["cells"][m].get("mean"), row["cells"][m].get("interval")) for m in metrics]
        out.append(f"| {row['rank']} | {row['name']} | " + " | ".join(cells)
                   + f" | {row['seeds']} x {row['replications']} | {row['weights']} | `{json.dumps(row['settings'], sort_keys=True)}` |")
    out += ["", "## Published and reproduced", "",
            "Difference: reproduced mean - published value. Real data: the dataset's own samples through the same "
            "metrics (first entry's first seed).", "",
            "| entry | metric | published | reproduced | difference | published in |", "|---|---|---|---|---|---|"]
    for row in [*summary["entries"], *([summary["real"]] if summary["real"] else [])]:
        source = row["published_in"]
        for metric in metrics:
            cell = row["cells"][metric]
            difference = f"{cell['difference']:+.4f}" if "difference" in cell else "-"
            out.append(f"| {row['name']} | {metric} | {plus_minus(cell.get('published'), cell.get('published_interval'))} | "
                       f"{plus_minus(cell.get('mean'), cell.get('interval'))} | {difference} | "
                       f"{source['paper'] + ', ' + source['table'] if source and 'published' in cell else '-'} |")
    dataset = summary["dataset"]
    out += ["", f"Protocol settings: `{json.dumps(summary['protocol_settings'], sort_keys=True)}`",
            f"Dataset: {dataset['root']} ({dataset['motions']} motions, sha256 {dataset['sha256'][:16]})",
            f"Evaluator weights: {summary['evaluator_weights']}",
            f"Versions: {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}", ""]
    return "\n".join(out)
