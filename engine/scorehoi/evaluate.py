"""HOI protocol for scorehoi: refine estimates that carry ground truth, then score them.

Metrics (ScoreHOI Sec. 4.1, following CONTHO's public evaluation; ``scorehoi/metrics.py``):
Chamfer distance of the human and of the object in cm after one similarity Procrustes of the
combined points, contact precision / recall / F-score of the human vertices within 5 cm of the
object, and penetration depth (m, the deepest body vertex inside the object). Each is the mean
over the samples where it is defined (precision needs a predicted contact, recall a true one),
summed in sample-id order. Source ``generated`` is the refined result, ``initial`` the estimate
before refinement.

Ground truth: the ``refine`` input Parquet (docs/refine.md) with all four ``gt_*`` columns
(``gt_pose`` 52 SMPL-H joint rotations, ``gt_betas``, ``gt_object_rotation``,
``gt_object_translation``) on every row; without ``--dataset``, the built-in demo scenes, which
carry theirs. BEHAVE and InterCap convert to it per image: the SMPL-H fit's pose and betas and
the object fit's rotation and translation become ``gt_*``, the initial estimate (CONTHO's or
another regressor's output) fills ``pose`` / ``betas`` / ``object_*``, and ``object`` names the
object's template mesh file.

ScoreHOI draws no noise (DDIM inversion and sampling with eta 0), so a second replication would
repeat the first bit for bit: the protocol has one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from motionfleet.core.jobfolder.sink import read_results
from motionfleet.core.options import UsageError

PROTOCOL = "hoi"
MAIN_METRIC = "chamfer_human_cm"
METRICS = ("chamfer_human_cm", "chamfer_object_cm", "contact_precision", "contact_recall", "contact_fscore",
           "penetration_depth_m")
LOWER_IS_BETTER = {"chamfer_human_cm": True, "chamfer_object_cm": True, "contact_precision": False,
                   "contact_recall": False, "contact_fscore": False, "penetration_depth_m": True}


def defined_mean(values) -> float:
    """Mean of the values that are defined, added in the order given; NaN when none is."""
    total, count = 0.0, 0
    for v in values:
        if v is not None:
            total += v
            count += 1
    return total / count if count else float("nan")


def metric_means(rows: list[dict], label: str) -> dict[str, float]:
    """``label`` before / after: each metric's mean over the rows, in sample-id order."""
    rows = sorted(rows, key=lambda r: r["sample_id"])
    return {name: defined_mean(r[f"{name}_{label}"] for r in rows) for name in METRICS}


# The demo scenes with dummy weights test the pipeline, not a model: the small network and
# ScoreHOI-F's 2 rounds with DDIM steps of 25 (of tau 50) keep `evaluate --family scorehoi --out DIR`
# to tens of seconds on two CPU cores (the released network with the paper's 10 rounds of stride 2
# took over 5 minutes there).
BUILTIN_SETTINGS = {"preset": "small", "sampler_preset": "fast", "ddim_stride": 25}
BUILTIN_WHY = "the built-in demo scenes with dummy weights test the pipeline; their numbers mean nothing"


def builtin_settings(settings: dict) -> tuple[dict, dict]:
    """``settings`` with each of ``BUILTIN_SETTINGS`` no flag set (and no checkpoint) scaled, and
    {setting: {"preset": refine's default, "used"}} for metrics.json."""
    from motionfleet.core import jobs, registry

    if settings.get("checkpoint") is not None:
        return settings, {}
    family = registry.get("refine")
    defaults = {o.name: o.default for o in jobs.engine_options(family) + family.options}
    scaled = {name: {"preset": defaults[name], "used": value} for name, value in BUILTIN_SETTINGS.items()
              if settings.get(name) is None}
    return {**settings, **{name: s["used"] for name, s in scaled.items()}}, scaled


def evaluate(out_dir: str | Path, settings: dict, dataset: Optional[str] = None, replications: int = 1,
             workers: int = 1, address: Optional[str] = None) -> dict:
    """Run (or resume) the refine job in OUT/refine (``settings``: refine's options) and write
    OUT/metrics.json."""
    from motionfleet.core import jobs
    from motionfleet.evaluation.results import METRICS_JSON, IncompleteEvaluation, read_metrics, write_metrics

    if replications != 1:
        raise UsageError("scorehoi's refinement draws no noise (eta 0): its protocol has one replication (--replications 1)")
    settings, scaled = builtin_settings(settings) if dataset is None else (settings, {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = jobs.run("refine", dataset, out=out / "refine", demo=dataset is None, workers=workers, address=address,
                      **settings)
    if jobs.ran_nothing(report) and (out / METRICS_JSON).is_file():
        return read_metrics(out)
    rows = [r for r in read_results(out / "refine").to_pylist() if r["variant"] == "guided"]  # the demo adds control
    rejected = read_results(out / "refine", "rejected").num_rows
    missing = [r["sample_id"] for r in rows if r["chamfer_human_cm_after"] is None]
    if missing or rejected or not rows:
        raise IncompleteEvaluation(f"{rejected} estimates were rejected (OUT/refine/rejected) and {len(missing)} have no "
                                   f"ground truth (all four gt_* columns): scores over the rest would be biased")
    values = {source: {name: [value] for name, value in metric_means(rows, label).items()}
              for source, label in (("generated", "after"), ("initial", "before"))}
    info = {
        "protocol": PROTOCOL, "family": "scorehoi", "main_metric": MAIN_METRIC, "lower_is_better": LOWER_IS_BETTER,
        "replications": 1, "protocol_settings": {}, "seed": None,
        "protocol_upstream": None,  # not pinned: this family has no protocol preset (evaluation/protocols.py) yet
        "protocol_scaled": {"settings": scaled, "why": BUILTIN_WHY} if scaled else None,
        "dataset": {"root": dataset or "demo scenes", "motions": len(rows), "sha256": _digest(dataset)},
        "model": {"settings": settings, "weights": rows[0]["weights"], "body_model": rows[0]["body_model"]},
        "evaluator": {"weights": "none (geometric metrics)"},
        "timing_s": {"refine": time.perf_counter() - started},
    }
    return write_metrics(out, values, info)


def _digest(dataset: Optional[str]) -> str:
    import hashlib

    return hashlib.sha256(Path(dataset).read_bytes()).hexdigest() if dataset else "demo scenes"
