"""The refine job's report: images per second per variant, where the time went, and the
quality means (before refinement, guided, control)."""

from __future__ import annotations

import math
import statistics
from typing import Optional

import pyarrow as pa

from motionfleet.core.jobfolder.report import common_lines, peak_memory
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.core.registry import Summary
from motionfleet.core.runtime.stopwatch import total
from motionfleet.scorehoi.runner import QUALITY_NAMES
from motionfleet.scorehoi.source import VARIANTS

STAGES = ("denoiser", "body", "loss")


def summarise(done: list, wall_s: float, out_dir) -> Summary:
    """Images per second per variant, summed over this run's shards, and where the time went.

    A batch's seconds run from its raw estimates to its result rows (validation, image reading,
    inversion and guided sampling, output), device synchronised, warm-up and metrics excluded.
    ``split`` gives the share of those seconds in the denoiser, the body model (forward and
    backward) and the fused loss; ``other`` is the rest (Python, DDIM updates, contact masks).
    """
    t = total([d.timings for d in done])
    timing = {"wall_s": wall_s, "metrics_s": t.seconds.get("metrics", 0.0), **peak_memory(done), "variants": {}}
    for variant in dict.fromkeys(b["variant"] for b in t.batches):
        mine = [b for b in t.batches if b["variant"] == variant]
        images, seconds = sum(b["size"] for b in mine), sum(b["seconds"] for b in mine)
        stages = {s: sum(b.get(f"{s}_s", 0.0) for b in mine) for s in STAGES}
        stages["other"] = seconds - sum(stages.values())
        timing["variants"][variant] = {
            "images": images, "seconds": seconds, "fps": images / seconds if seconds > 0 else None,
            "batch_sizes": sorted({b["size"] for b in mine}),
            "split": {s: v / seconds if seconds > 0 else None for s, v in stages.items()}}
    guided = timing["variants"].get("guided", {})
    headline = {"name": "fps", "value": guided.get("fps"), "unit": "images/s",
                "meaning": "refined images per second (guided variant), raw estimate to result row, metrics excluded"}
    return Summary(timing, headline, {"quality": quality_summary(read_results(out_dir))})


def report_lines(report: dict) -> list[str]:
    """FPS and time split per variant, the quality table, then the lines every family prints."""
    t = report["timing"]
    lines = [f"metrics {t['metrics_s']:.1f} s (not in FPS)"]
    for variant, v in t["variants"].items():
        split = "  ".join(f"{s} {share:.0%}" for s, share in v["split"].items() if share is not None)
        lines.append(f"{variant}: {v['images']} images in {v['seconds']:.1f} s = {v['fps'] or 0:.3f} images/s "
                     f"(batches {v['batch_sizes']}; {split})")
    return lines + quality_lines(report["quality"]) + common_lines(report)


def mean_of(values) -> Optional[float]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(present) if present else None


def quality_summary(results: pa.Table) -> dict:
    """Mean of each metric over the job's rows: before refinement, and after it per variant
    (``guided``; ``control`` = the same run with guidance off)."""
    rows = results.to_pylist()
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    first = [r for r in rows if r["variant"] == variants[0]] if variants else []
    summary = {"rows": {v: sum(r["variant"] == v for r in rows) for v in variants}}
    for name in QUALITY_NAMES:
        entry = {"before": mean_of(r[f"{name}_before"] for r in first)}
        entry.update({v: mean_of(r[f"{name}_after"] for r in rows if r["variant"] == v) for v in variants})
        summary[name] = entry
    return summary


def quality_lines(summary: dict) -> list[str]:
    """The quality summary as a table: one metric per line, before / guided / control."""
    columns = ["before", *summary["rows"]]
    fmt = lambda v: f"{'n/a':>10}" if v is None else f"{v:>10.4f}"
    lines = [f"{'mean over rows':<24}" + "".join(f"{c:>10}" for c in columns)]
    lines += [f"{name:<24}" + "".join(fmt(summary[name].get(c)) for c in columns) for name in QUALITY_NAMES]
    return lines
