"""``motionfleet report DIR``: one static HTML page per job folder, its assets beside it.

``DIR/report.html`` opens from disk with no server and no network (no scripts, no fonts, no
remote URLs): the job's settings, its headline figures, the stage timings as an inline SVG bar
chart, the rejected rows and their reasons, the leaderboard where the folder has one
(``leaderboard.md``, written by ``motionfleet leaderboard``; or an evaluation's ``metrics.json``),
and a gallery of rendered samples (``motionfleet render``) in ``DIR/report_assets/``.

On a leaderboard's folder (the --out of ``motionfleet leaderboard``, which holds ``leaderboard.json``)
``DIR/report.html`` is the board instead: one row per entry and a column per metric, each cell the
reproduced mean with its interval and the published value drawn as error bars (inline SVG); a click
on a column header sorts by it (a few lines of inline script; ``report.html#sort=fid`` or
``#sort=-fid`` opens it sorted).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from motionfleet.core.errors import DataError
from motionfleet.core.options import UsageError
from motionfleet.evaluation.leaderboard import BOARD_JSON, plus_minus

ASSETS = "report_assets"
PAGE = "report.html"
MAX_REJECTED = 200
STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:90%}th{background:#eee}
.figures{display:flex;gap:1em;flex-wrap:wrap}.figure{border:1px solid #ccc;padding:.6em 1em;border-radius:4px}
.figure b{display:block;font-size:140%}#board th[data-key]{cursor:pointer}.published{color:#e45756}
tfoot td{background:#f6f6f6}video{width:480px;margin:.3em;border:1px solid #ccc}"""


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
    if not report_path.is_file() and (job / BOARD_JSON).is_file():
        return write_page(job, f"leaderboard: {job.resolve().name}", board_page(read_board(job / BOARD_JSON)))
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
    return write_page(job, job.name, "".join(sections))


def write_page(job: Path, title: str, body: str) -> Path:
    page = job / PAGE
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>motionfleet: {esc(title)}</title>"
                    f"<style>{STYLE}</style></head><body>{body}</body></html>")
    return page


def read_board(path: Path) -> dict:
    """``leaderboard.json`` as ``motionfleet leaderboard`` writes it; anything else is one line."""
    try:
        summary = json.loads(path.read_text())
        for row in [*summary["entries"], *([summary["real"]] if summary["real"] else [])]:
            for metric in summary["metrics"]:
                for key in ("mean", "interval", "published", "published_interval", "difference"):
                    value = row["cells"][metric].get(key)
                    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                        raise ValueError(f"{row['name']} {metric} {key} = {value!r} is not a number")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path} is not a board written by motionfleet leaderboard ({err}): run the leaderboard "
                        f"again") from err
    return summary


BAR_WIDTH, BAR_HEIGHT = 160, 20
SORT_SCRIPT = """const table = document.getElementById("board"), heads = [...table.tHead.rows[0].cells];
function sortBy(spec) {  // "fid": ascending, "-fid": descending; an empty cell sorts last either way
  const down = spec.startsWith("-"), key = down ? spec.slice(1) : spec, col = heads.findIndex(th => th.dataset.key === key);
  if (col < 0) return;
  const text = heads[col].dataset.type === "text", value = tr => tr.cells[col].dataset.sort;
  const rows = [...table.tBodies[0].rows].sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === "" || y === "") return (x === "") - (y === "");
    const order = text ? x.localeCompare(y) : Number(x) - Number(y);
    return down ? -order : order;
  });
  rows.forEach(tr => table.tBodies[0].appendChild(tr));
}
heads.forEach(th => th.addEventListener("click", () => {
  location.hash = "sort=" + (location.hash === "#sort=" + th.dataset.key ? "-" : "") + th.dataset.key;
}));
const fromHash = () => { if (location.hash.startsWith("#sort=")) sortBy(decodeURIComponent(location.hash.slice(6))); };
window.addEventListener("hashchange", fromHash);
fromHash();"""


def metric_range(summary: dict, metric: str) -> tuple[float, float]:
    """The span every row's interval and published value of ``metric`` covers: one scale per column."""
    ends = []
    for row in [*summary["entries"], *([summary["real"]] if summary["real"] else [])]:
        cell = row["cells"][metric]
        for value, interval in ((cell.get("mean"), cell.get("interval")), (cell.get("published"), cell.get("published_interval"))):
            if value is not None:
                ends += [value - (interval or 0.0), value + (interval or 0.0)]
    low, high = (min(ends), max(ends)) if ends else (0.0, 1.0)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return low - pad, high + pad


def error_bars(cell: dict, span: tuple[float, float]) -> str:
    """Reproduced mean +- interval in blue (a dot on a bar), the published value in red (a diamond,
    on its own bar when the paper gives an interval), on the column's common scale."""
    low, high = span

    def x(value: float) -> float:
        return BAR_WIDTH * (value - low) / (high - low)

    parts = [f'<svg width="{BAR_WIDTH}" height="{BAR_HEIGHT}" role="img">',
             f'<line x1="0" y1="{BAR_HEIGHT - 1}" x2="{BAR_WIDTH}" y2="{BAR_HEIGHT - 1}" stroke="#ccc"/>']
    for value, interval, y, colour, mark in ((cell.get("mean"), cell.get("interval"), 7, "#4c78a8", "dot"),
                                              (cell.get("published"), cell.get("published_interval"), 14, "#e45756", "diamond")):
        if value is None:
            continue
        if interval is not None:  # a zero interval is a zero-length bar: drawn, so every cell has one
            parts.append(f'<line class="bar-{mark}" x1="{x(value - interval):.1f}" y1="{y}" x2="{x(value + interval):.1f}" '
                         f'y2="{y}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(value):.1f}" cy="{y}" r="3" fill="{colour}"/>' if mark == "dot" else
                     f'<rect x="{x(value) - 3:.1f}" y="{y - 3}" width="6" height="6" fill="{colour}" '
                     f'transform="rotate(45 {x(value):.1f} {y})"/>')
    parts.append("</svg>")
    return "".join(parts)


def board_cell(cell: dict, span: tuple[float, float]) -> str:
    lines = [f"<span class='reproduced'>{esc(plus_minus(cell.get('mean'), cell.get('interval')))}</span>"]
    if "published" in cell:
        lines.append(f"<span class='published'>paper {esc(plus_minus(cell['published'], cell.get('published_interval')))}</span>")
    if "difference" in cell:
        lines.append(f"<span class='difference'>diff {cell['difference']:+.4f}</span>")
    sort = "" if cell.get("mean") is None else repr(float(cell["mean"]))
    return f"<td data-sort='{sort}'>{'<br>'.join(lines)}<br>{error_bars(cell, span)}</td>"


def board_row_html(row: dict, metrics: list[str], spans: dict) -> str:
    source = row.get("published_in")
    name = esc(row["name"]) + (f"<br><small>{esc(source['paper'])}, {esc(source['table'])}</small>" if source else "")
    rank = esc(row.get("rank", ""))
    return (f"<tr data-entry='{esc(row['name'])}'><td data-sort='{rank}'>{rank}</td><td data-sort='{esc(row['name'])}'>{name}</td>"
            + "".join(board_cell(row["cells"][m], spans[m]) for m in metrics) + "</tr>")


def board_page(summary: dict) -> str:
    metrics, lower = summary["metrics"], summary["lower_is_better"]
    spans = {m: metric_range(summary, m) for m in metrics}
    arrows = {True: " (lower better)", False: " (higher better)", None: ""}
    head = ("<th data-key='rank' data-type='number'>rank</th><th data-key='entry' data-type='text'>entry</th>"
            + "".join(f"<th data-key='{esc(m)}' data-type='number'>{esc(m)}{arrows[lower.get(m)]}</th>" for m in metrics))
    body = "".join(board_row_html(row, metrics, spans) for row in summary["entries"])
    real = f"<tfoot>{board_row_html(summary['real'], metrics, spans)}</tfoot>" if summary["real"] else ""
    dataset = summary["dataset"]
    return (f"<h1>Leaderboard: {esc(summary['protocol'])} ({esc(summary['family'])})</h1>"
            f"<p>Sorted by {esc(summary['main_metric'])}; click a column header to sort by it (again: reversed). "
            "Each cell: reproduced mean +- 1.96 sigma / sqrt(n) over every seed's replications (blue), the published "
            "value (red) and the difference reproduced - published. The last row is the real data through the same "
            "metrics.</p>"
            f"<table id='board'><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{real}</table>"
            "<h2>Protocol</h2>" + kv_table({"settings": summary["protocol_settings"],
                                            "dataset": f"{dataset['root']} ({dataset['motions']} motions, sha256 {dataset['sha256'][:16]})",
                                            "evaluator weights": summary["evaluator_weights"], **summary["versions"]})
            + f"<script>{SORT_SCRIPT}</script>")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "example:\n  motionfleet report runs/gen --samples 3    # writes runs/gen/report.html, open it from disk"
    p.add_argument("job", help="a job folder (the --out of generate, reconstruct, refine or evaluate), or a "
                   "leaderboard's --out: its board as a sortable page")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="rendered samples in the gallery, the job's "
                   "first ids (0: none) (default: 3)")


def main(args) -> int:
    print(build_page(args.job, args.samples))
    return 0
