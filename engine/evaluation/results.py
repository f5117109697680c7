"""What an evaluation writes: ``metrics.json`` and ``metrics.parquet`` in its folder.

metrics.json: ``{"protocol", "family", "main_metric", "lower_is_better": {metric: bool},
"metrics": {source: {metric: {"mean", "interval", "values"}}}, "engine_version", "host", "versions",
"accelerator", "numerics" (``core.io.provenance.record``), ...}``; ``source`` is
``generated`` (the model's output) or ``real`` (the dataset's own samples through the same
metrics, where a protocol defines it). ``interval`` is 1.96 sigma / sqrt(n) over the n
replications' ``values``. metrics.parquet holds one row per (source, metric, replication).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from motionfleet.core.errors import DataError
from motionfleet.core.io import provenance
from motionfleet.evaluation.statistics import mean_and_interval

METRICS_JSON = "metrics.json"
METRICS_PARQUET = "metrics.parquet"


class IncompleteEvaluation(DataError):
    """Planned work is missing (failed shards, rejected inputs): metrics over the rest would be biased
    (a ``DataError``: the command line reports it in one line, exit 1)."""


def summarise(values: dict[str, dict[str, list[float]]]) -> dict:
    return {source: {name: dict(zip(("mean", "interval"), mean_and_interval(v)), values=list(v))
                     for name, v in metrics.items()}
            for source, metrics in values.items()}


def write_metrics(out_dir: str | Path, values: dict[str, dict[str, list[float]]], info: dict) -> dict:
    """Write both files (each to a temporary name, then renamed); returns the JSON body."""
    out = Path(out_dir)
    body = {**info, "engine_version": provenance.engine_version(), **provenance.record(), "metrics": summarise(values)}
    rows = [{"source": source, "metric": name, "replication": r, "value": float(v)}
            for source, metrics in values.items() for name, vs in metrics.items() for r, v in enumerate(vs)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("source", pa.string()), ("metric", pa.string()),
                                                         ("replication", pa.int32()), ("value", pa.float64())]))
    tmp = out / f".{METRICS_PARQUET}.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out / METRICS_PARQUET)
    tmp = out / f".{METRICS_JSON}.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(out / METRICS_JSON)
    return body


def read_metrics(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / METRICS_JSON).read_text())


def summary_lines(body: dict) -> list[str]:
    lines = [f"{body['protocol']} ({body['family']}), {body['replications']} replications, mean +- 95% interval:"]
    for source, metrics in body["metrics"].items():
        for name, m in metrics.items():
            lines.append(f"  {source:9s} {name:22s} {m['mean']:.4f} +- {m['interval']:.4f}")
    return lines
