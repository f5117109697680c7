"""``motionfleet report DIR``: one static HTML page per job folder, its assets beside it.

``DIR/report.html`` opens from disk with no server and no network (no scripts, no fonts, no
remote URLs): the job's settings, its headline figures, the stage timings as an inline SVG bar
chart, the rejected rows and their reasons, the leaderboard where the folder has one
(``leaderboard.md``, written by ``motionfleet leaderboard``; or an evaluation's ``metrics.json``),
and a gallery of rendered samples (``motionfleet render``) in ``DIR/report_assets/``.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from motionfleet.core.options import UsageError

ASSETS = "report_assets"
PAGE = "report.html"
MAX_REJECTED = 200
STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:90%}th{background:#eee}
.figures{display:flex;gap:1em;flex-wrap:wrap}.figure{border:1px solid #ccc;padding:.6em 1em;border-radius:4px}
.figure b{display:block;font-size:140%}video{width:480px;margin:.3em;border:1px solid #ccc}"""


def esc(value) -> str:
    return html.escape(str(value))


def kv_table(mapping: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v) if isinstance(v, (dict, list)) else v)}</td></tr>"
                   for k, v in mapping.items())
    return f"<table>{rows}</table>"


def rows_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def headline(report: dict) -> dict:
    """The report's ``headline`` figures, else its timing's scalar numbers."""
    figures = report.get("headline") or {k: v for k, v in report.get("timing", {}).items()
                                         if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in figures.items() if v is not None}


def stage_seconds(report: dict) -> dict[str, float]:
    """Seconds per stage: ``timing.stages`` where the job has stages, else the ``*_s`` timings."""
    timing = report.get("timing", {})
    stages = timing.get("stages")
    if isinstance(stages, dict):
        return {k: float(v["seconds"] if isinstance(v, dict) else v) for k, v in stages.items()
                if isinstance(v, (int, float)) or (isinstance(v, dict) and isinstance(v.get("seconds"), (int, float)))}
    return {k: float(v) for k, v in timing.items()
            if k.endswith("_s") and not k.endswith("per_s") and isinstance(v, (int, float)) and v is not None}


def bar_chart(values: dict[str, float], unit: str = "s") -> str:
    """A horizontal bar chart as inline SVG."""
    if not values:
        return "<p>no stage timings in report.json</p>"
    width, bar, label = 640, 22, 200
    top = max(values.values()) or 1.0
    height = bar * len(values) + 10
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for i, (name, value) in enumerate(values.items()):
        y = 5 + i * bar
        length = (width - label - 90) * value / top
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{esc(name)}</text>'
                     f'<rect x="{label}" y="{y + 3}" width="{length:.1f}" height="{bar - 6}" fill="#4c78a8"/>'
                     f'<text x="{label + length + 5:.1f}" y="{y + 15}" font-size="12">{value:.4g} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def leaderboard_section(job: Path) -> Optional[str]:
    board = job / "leaderboard.md"
    if board.is_file():
        return f"<pre>{esc(board.read_text())}</pre>"
    metrics = job / "metrics.json"
    if metrics.is_file():
        body = json.loads(metrics.read_text())
        return kv_table(body if isinstance(body, dict) else {"metrics": body})
    return None


def rejected_rows(job: Path) -> list[dict]:
    from motionfleet.api import read_results

    if not (job / "rejected").is_dir():
        return []
    table = read_results(job, rejected=True)
    return table.slice(0, MAX_REJECTED).to_pylist() if table.num_rows else []


def gallery(job: Path, samples: int) -> dict[str, Path]:
    """Render the first ``samples`` ids of the job into ``job/report_assets``: id -> video. Reads
    the id column, then only those ids' rows."""
    from motionfleet import render

    if samples <= 0 or not (job / "results").is_dir():
        return {}
    try:  # a family render does not draw, or a scorehoi job on a licensed body render cannot load
        ids = render.first_ids(job, samples)
        return render.render_job(job, ids, job / ASSETS) if ids else {}
    except UsageError:
        return {}


def build_page(job: str | Path, samples: int = 3) -> Path:
    job = Path(job)
    report_path = job / "report.json"
    if not report_path.is_file():
        raise UsageError(f"{report_path} is missing: give a job folder that has finished (its --out)")
    report = json.loads(report_path.read_text())
    videos = gallery(job, samples)
    rejected = rejected_rows(job)
    board = leaderboard_section(job)
    sections = [
        f"<h1>motionfleet job: {esc(job.resolve().name)}</h1>",
        "<h2>Headline</h2><div class='figures'>" + "".join(
            f"<div class='figure'>{esc(k)}<b>{esc(v)}</b></div>" for k, v in headline(report).items()) + "</div>",
        "<h2>Stage timings</h2>" + bar_chart(stage_seconds(report)),
        "<h2>Settings</h2>" + kv_table(report.get("settings", {})),
        f"<h2>Rejected rows ({len(rejected)}{'+' if len(rejected) == MAX_REJECTED else ''})</h2>"
        + (rows_table(rejected, ["sample_id", "repeat", "reason", "input"] if "sample_id" in rejected[0]
                      else list(rejected[0])) if rejected else "<p>none</p>"),
    ]
    if board is not None:
        sections.append("<h2>Leaderboard</h2>" + board)
    sections.append("<h2>Samples</h2>" + ("".join(
        f"<figure><video controls muted preload='metadata' src='{ASSETS}/{quote(v.name)}'></video>"
        f"<figcaption>{esc(sample_id)}</figcaption></figure>" for sample_id, v in videos.items())
        or "<p>no rendered samples</p>"))
    machine = {**report.get("machine", {}), **{k: v for k, v in report.get("versions", {}).items()}}
    sections.append("<h2>Machine and versions</h2>" + kv_table(machine))
    page = job / PAGE
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>motionfleet: {esc(job.name)}</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
    return page


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "example:\n  motionfleet report runs/gen --samples 3    # writes runs/gen/report.html, open it from disk"
    p.add_argument("job", help="a job folder (the --out of generate, reconstruct, refine or evaluate)")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="rendered samples in the gallery, the job's "
                   "first ids (0: none) (default: 3)")


def main(args) -> int:
    print(build_page(args.job, args.samples))
    return 0
