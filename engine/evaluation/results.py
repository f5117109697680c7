"""What an evaluation writes: ``metrics.json`` and ``metrics.parquet`` in its folder.

metrics.json: ``{"protocol", "family", "main_metric", "lower_is_better": {metric: bool},
"metrics": {source: {metric: {"mean", "interval", "values"}}}, "engine_version", "host", "versions",
"accelerator", "numerics" (``core.io.provenance.record``), ...}``; ``source`` is
``generated`` (the model's output) or ``real`` (the dataset's own samples through the same
metrics, where a protocol defines it). ``interval`` is 1.96 sigma / sqrt(n) over the n
replications' ``values``. metrics.parquet holds one row per (source, metric, replication).

samples.parquet (a protocol with R-precision): one row per generated sample of a matching batch
(``SAMPLES_SCHEMA``): its generate-job id, the test text id it was generated for, replication,
repeat and noise seed, its description, its matching batch and position in it, the rank of its
own motion among the batch's motions for its text (0: nearest; top-k counts rank < k) and its
distance to the text, and where its row lives (``results_file`` inside the evaluation folder,
``results_row`` in that file). ``motionfleet evaluate --inspect ID`` prints one of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from motionfleet.core.errors import DataError
from motionfleet.core.io import provenance
from motionfleet.core.options import UsageError
from motionfleet.evaluation.statistics import mean_and_interval

METRICS_JSON = "metrics.json"
METRICS_PARQUET = "metrics.parquet"
SAMPLES_PARQUET = "samples.parquet"
SAMPLES_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("text_id", pa.string()), ("replication", pa.int32()), ("repeat", pa.int32()),
    ("seed", pa.int64()), ("text", pa.string()), ("batch_index", pa.int32()), ("batch_position", pa.int32()),
    ("rank", pa.int32()), ("distance", pa.float64()), ("results_file", pa.string()), ("results_row", pa.int64()),
])


class IncompleteEvaluation(DataError):
    """Planned work is missing (failed shards, rejected inputs): metrics over the rest would be biased
    (a ``DataError``: the command line reports it in one line, exit 1)."""


def summarise(values: dict[str, dict[str, list[float]]]) -> dict:
    return {source: {name: dict(zip(("mean", "interval"), mean_and_interval(v)), values=list(v))
                     for name, v in metrics.items()}
            for source, metrics in values.items()}


def write_metrics(out_dir: str | Path, values: dict[str, dict[str, list[float]]], info: dict,
                  samples: list[dict] | None = None) -> dict:
    """Write the files (each to a temporary name, then renamed; metrics.json last, as the sign that
    the others are whole); ``samples``: samples.parquet's rows, where the protocol has them. Returns
    the JSON body."""
    out = Path(out_dir)
    body = {**info, "engine_version": provenance.engine_version(), **provenance.record(), "metrics": summarise(values)}
    rows = [{"source": source, "metric": name, "replication": r, "value": float(v)}
            for source, metrics in values.items() for name, vs in metrics.items() for r, v in enumerate(vs)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("source", pa.string()), ("metric", pa.string()),
                                                         ("replication", pa.int32()), ("value", pa.float64())]))
    _write_table(table, out / METRICS_PARQUET)
    if samples is not None:
        _write_table(pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA), out / SAMPLES_PARQUET)
    tmp = out / f".{METRICS_JSON}.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(out / METRICS_JSON)
    return body


def _write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def sample_record(out_dir: str | Path, sample_id: str) -> dict:
    """samples.parquet's row of ``sample_id``: UsageError for a folder without the file or an id
    it does not hold, DataError for a file that is not one ``write_metrics`` writes."""
    path = Path(out_dir) / SAMPLES_PARQUET
    if not path.is_file():
        raise UsageError(f"{path} does not exist: give the --out folder of a finished dhvae evaluation")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err}); run the evaluation again to rewrite it") from err
    if table.schema.remove_metadata() != SAMPLES_SCHEMA:
        raise DataError(f"{path}: not the per-sample table motionfleet writes; run the evaluation again to rewrite it")
    ids = table["sample_id"].to_pylist()
    if sample_id not in ids:
        raise UsageError(f"--inspect {sample_id}: no such sample in {path} ({len(ids)} samples, e.g. {ids[0] if ids else 'none'})")
    return table.slice(ids.index(sample_id), 1).to_pylist()[0]


def record_lines(record: dict) -> list[str]:
    return [f"{name}: {value}" for name, value in record.items()]


def read_metrics(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / METRICS_JSON).read_text())


def summary_lines(body: dict) -> list[str]:
    lines = [f"{body['protocol']} ({body['family']}), {body['replications']} replications, mean +- 95% interval:"]
    for source, metrics in body["metrics"].items():
        for name, m in metrics.items():
            lines.append(f"  {source:9s} {name:22s} {m['mean']:.4f} +- {m['interval']:.4f}")
    return lines
