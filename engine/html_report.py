"""``motionfleet report DIR``: one static HTML page per job folder, its assets beside it.

``DIR/report.html`` opens from disk with no server and no network (no scripts, no fonts, no
remote URLs): the wall time, throughput (items/s) and the family's headline as numbers; each
stage's seconds per item (sentence, image, frame) as an inline SVG bar chart, on its own axis; every
batch's seconds over the job, a colour per worker (the batch records of the commit records), so
that a straggler stands out; the rejected rows and their reasons (the first ``MAX_REJECTED``, with
the count of all); the settings; the leaderboard where the folder has one (``leaderboard.md``,
written by ``motionfleet leaderboard``; or an evaluation's ``metrics.json``); and a gallery of
rendered samples (``motionfleet render``) in ``DIR/report_assets/``.

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
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TypeGuard
from urllib.parse import quote

from motionfleet.core.errors import DataError
from motionfleet.core.jobfolder.report import read_report
from motionfleet.core.options import UsageError
from motionfleet.evaluation.leaderboard import BOARD_JSON, plus_minus

ASSETS = "report_assets"
PAGE = "report.html"
MAX_REJECTED = 200  # rejected rows shown; the heading counts them all
MAX_INPUT_CHARS = 160  # of a rejected row's input (a refine input holds whole arrays)
MAX_POINTS = 2000  # batches drawn; a bigger job draws each worker's slowest per slice of the axis
MAX_WORKERS_NAMED = 8
PALETTE = ("#e45756", "#4c78a8", "#54a24b", "#f58518", "#b279a2", "#72b7b2", "#9d755d", "#bab0ac")
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


def is_number(value) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def dhvae_items(t: dict) -> tuple[str, int, dict[str, float]]:
    n = t["sentences"]
    stages = {"text encoder": t["text_encoder_s"] / n, "denoise": t["aits_denoise_s"], "decode": t["aits_decode_s"]} if n else {}
    return "sentence", n, stages


def scorehoi_items(t: dict) -> tuple[str, int, dict[str, float]]:
    """Each variant's stages (its batches' seconds split by ``split``) per image of that variant."""
    per_image = {f"{name}: {stage}": v["seconds"] * share / v["images"] for name, v in t["variants"].items()
                 if v["images"] for stage, share in v["split"].items() if share is not None}
    return "image", sum(v["images"] for v in t["variants"].values()), per_image


def socialmirror_items(t: dict) -> tuple[str, int, dict[str, float]]:
    n = t["frames"]
    return "frame", n, {name: s["seconds"] / n for name, s in t["stages"].items()} if n else {}


# family -> (the item its headline counts, how many the job made, seconds per item of each stage),
# from report.json's ``timing`` as that family's report.py writes it.
PER_ITEM = {"dhvae": dhvae_items, "scorehoi": scorehoi_items, "socialmirror": socialmirror_items}


def per_item_stages(report: dict) -> tuple[str, int, dict[str, float]]:
    """(item, count, stage -> seconds per item); no stages where the job made no item or its
    report.json lacks them (another family, an older or a damaged file)."""
    items = PER_ITEM.get(str(report.get("family")))
    try:
        noun, count, stages = items(report["timing"]) if items else ("item", 0, {})
    except (KeyError, TypeError, AttributeError):
        return "item", 0, {}
    return noun, int(count) if is_number(count) else 0, {k: float(v) for k, v in stages.items() if is_number(v)}


def figures(report: dict, noun: str, count: int) -> str:
    """Wall time, items, throughput (items over the wall time) and the family's headline, as numbers."""
    wall, head = report.get("wall_s"), report.get("headline") or {}
    shown = [("wall time", f"{wall:.4g} s" if is_number(wall) else "n/a", ""), (f"{noun}s", count, ""),
             ("throughput", f"{count / wall:.4g} {noun}s/s" if is_number(wall) and wall > 0 else "n/a", "items over the wall time")]
    if head.get("name"):
        value = head.get("value")
        shown.append((head["name"], f"{value:.4g} {head.get('unit', '')}" if is_number(value) else "n/a", head.get("meaning", "")))
    return "<div class='figures'>" + "".join(f"<div class='figure' title='{esc(title)}'>{esc(name)}<b>{esc(value)}</b></div>"
                                             for name, value, title in shown) + "</div>"


def bar_chart(values: dict[str, float], unit: str = "s") -> str:
    """A horizontal bar chart as inline SVG, the longest bar the full length."""
    if not values:
        return "<p>no stage timings in report.json</p>"
    width, bar, label = 640, 22, 200
    top = max(values.values()) or 1.0
    height = bar * len(values) + 10
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for i, (name, value) in enumerate(values.items()):
        y = 5 + i * bar
        length = (width - label - 120) * value / top
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{esc(name)}</text>'
                     f'<rect x="{label}" y="{y + 3}" width="{length:.1f}" height="{bar - 6}" fill="#4c78a8"/>'
                     f'<text x="{label + length + 5:.1f}" y="{y + 15}" font-size="12">{value:.4g} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stage_section(noun: str, stages: dict[str, float]) -> str:
    return (f"<section id='stages'><h2>Stage timings: seconds per {esc(noun)}</h2>"
            f"<p>Each stage's seconds over the job divided by its {esc(noun)}s; the wall time and throughput are the "
            f"numbers above.</p>{bar_chart(stages, f's/{noun}')}</section>")


@dataclass(frozen=True)
class BatchTime:
    start: Optional[float]  # epoch seconds it began; None in records written before batches kept it
    seconds: float
    worker: str  # host:pid of the process that ran its shard


def batch_times(job: Path) -> list[BatchTime]:
    """Every batch record of the committed shards (``stopwatch.Timings.batches``, kept in the commit
    records), in shard order; a record that is not one is left out (the folder is untrusted)."""
    from motionfleet.core.jobfolder.sink import committed_records
    from motionfleet.core.jobfolder.storage import Storage

    found = []
    for _, record in sorted(committed_records(Storage(str(job))).items()):
        summary = record["summary"]
        batches = summary["timings"].get("batches") if isinstance(summary.get("timings"), dict) else None
        for b in batches if isinstance(batches, list) else []:
            if isinstance(b, dict) and is_number(b.get("seconds")):
                start = float(b["start"]) if is_number(b.get("start")) else None
                found.append(BatchTime(start, float(b["seconds"]), str(summary.get("worker", ""))))
    return found


def slowest_per_slice(points: list[tuple[float, float, str]], limit: int) -> list[tuple[float, float, str]]:
    """At most about ``limit`` of the (x, seconds, worker) points: per worker, the slowest batch of
    each equal slice of the x axis, so that a straggler stays on the plot of a million items."""
    if len(points) <= limit:
        return points
    low, high = min(p[0] for p in points), max(p[0] for p in points)
    slices = max(1, limit // len({p[2] for p in points}))
    slowest: dict[tuple[str, int], tuple[float, float, str]] = {}
    for point in points:
        key = (point[2], min(slices - 1, int(slices * (point[0] - low) / ((high - low) or 1.0))))
        if key not in slowest or point[1] > slowest[key][1]:
            slowest[key] = point
    return sorted(slowest.values())


PLOT_WIDTH, PLOT_HEIGHT, PLOT_LEFT, PLOT_BOTTOM = 640, 240, 60, 36


def plot_axes(x_top: float, y_top: float, x_label: str) -> str:
    """The batch plot's axes: seconds up the left from 0 to ``y_top``, ``x_label`` along the bottom."""
    w, h, left, base = PLOT_WIDTH, PLOT_HEIGHT, PLOT_LEFT, PLOT_HEIGHT - PLOT_BOTTOM
    return (f'<line x1="{left}" y1="{base}" x2="{w - 10}" y2="{base}" stroke="#888"/>'
            f'<line x1="{left}" y1="10" x2="{left}" y2="{base}" stroke="#888"/>'
            f'<text x="{left - 5}" y="15" font-size="11" text-anchor="end">{y_top:.3g} s</text>'
            f'<text x="{left - 5}" y="{base}" font-size="11" text-anchor="end">0</text>'
            f'<text x="{left}" y="{base + 14}" font-size="11">0</text>'
            f'<text x="{w - 10}" y="{base + 14}" font-size="11" text-anchor="end">{x_top:.3g}</text>'
            f'<text x="{(left + w) / 2}" y="{h - 4}" font-size="11" text-anchor="middle">{x_label}</text>')


def worker_legend(workers: list[str]) -> str:
    named = "".join(f"<span style='color:{PALETTE[i % len(PALETTE)]}'>&#9679; {esc(w or 'in process')}</span> "
                    for i, w in enumerate(workers[:MAX_WORKERS_NAMED]))
    more = f"and {len(workers) - MAX_WORKERS_NAMED} more workers" if len(workers) > MAX_WORKERS_NAMED else ""
    return f"<p class='legend'>{named}{more}</p>"


def batch_plot(batches: list[BatchTime]) -> str:
    """Batch seconds (y) over the job (x: seconds since its first batch began, or the batch's place
    in shard order for records without a start), a colour per worker, as inline SVG."""
    timed = all(b.start is not None for b in batches)
    starts = [b.start if timed and b.start is not None else float(i) for i, b in enumerate(batches)]
    points = slowest_per_slice([(start - min(starts), b.seconds, b.worker) for start, b in zip(starts, batches)], MAX_POINTS)
    workers = list(dict.fromkeys(p[2] for p in points))
    colour = {w: PALETTE[i % len(PALETTE)] for i, w in enumerate(workers)}
    x_top, y_top = max(p[0] for p in points) or 1.0, max(p[1] for p in points) or 1.0
    x = lambda v: PLOT_LEFT + 6 + (PLOT_WIDTH - PLOT_LEFT - 16) * v / x_top
    y = lambda v: PLOT_HEIGHT - PLOT_BOTTOM - (PLOT_HEIGHT - PLOT_BOTTOM - 10) * v / y_top
    dots = "".join(f'<circle class="batch" cx="{x(px):.1f}" cy="{y(seconds):.1f}" r="3" '
                   f'fill="{colour[worker]}"><title>{esc(worker)}: {seconds:.4g} s</title></circle>'
                   for px, seconds, worker in points)
    axes = plot_axes(x_top, y_top, "seconds since the first batch began" if timed else "batch, in shard order")
    return f'<svg width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" role="img">{axes}{dots}</svg>{worker_legend(workers)}'


def batch_section(batches: list[BatchTime]) -> str:
    if not batches:
        return ("<section id='batches'><h2>Batches over the job</h2><p>no batch records with their seconds in the commit "
                "records (none committed, or the job ran before batches kept them)</p></section>")
    seconds = sorted(b.seconds for b in batches)
    median, slowest = statistics.median(seconds), seconds[-1]
    ratio = f" ({slowest / median:.1f} x the median)" if median > 0 else ""
    thinned = (f"; drawn: each worker's slowest batch of each slice of the axis ({MAX_POINTS} points at most)"
               if len(batches) > MAX_POINTS else "")
    return (f"<section id='batches'><h2>Batches over the job</h2><p>{len(batches)} batches; median {median:.4g} s, "
            f"slowest {slowest:.4g} s{ratio}{thinned}. A batch far above the others is a straggler.</p>"
            f"{batch_plot(batches)}</section>")


def leaderboard_section(job: Path) -> Optional[str]:
    board = job / "leaderboard.md"
    if board.is_file():
        return f"<pre>{esc(board.read_text())}</pre>"
    metrics = job / "metrics.json"
    if metrics.is_file():
        body = json.loads(metrics.read_text())
        return kv_table(body if isinstance(body, dict) else {"metrics": body})
    return None


def rejected_rows(job: Path, limit: int = MAX_REJECTED) -> list[dict]:
    """The first ``limit`` rejected rows, read a batch at a time (a big job's table stays unread)."""
    from motionfleet.core.jobfolder.sink import REJECTED_DIR, iter_results

    rows: list[dict] = []
    if not (job / REJECTED_DIR).is_dir():
        return rows
    for batch in iter_results(job, batch_rows=limit, subdir=REJECTED_DIR):
        rows += batch.to_pylist()[: limit - len(rows)]
        if len(rows) == limit:
            break
    return rows


def rejected_section(rows: list[dict], total) -> str:
    """The rows as a table: id, reason, repeat, the input (cut to ``MAX_INPUT_CHARS``)."""
    total = total if is_number(total) and total >= len(rows) else len(rows)
    shown = f", the first {len(rows)} shown" if total > len(rows) else ""
    head = f"<section id='rejected'><h2>Rejected rows ({total}{shown})</h2>"
    if not rows:
        return head + "<p>none</p></section>"
    id_column = next(iter(rows[0]))  # the family's id column comes first (rejections.rejected_schema)
    cut = [{**r, "input": r["input"] if len(r.get("input") or "") <= MAX_INPUT_CHARS else r["input"][:MAX_INPUT_CHARS] + "..."}
           for r in rows]
    return head + rows_table(cut, [id_column, "reason", "repeat", "input"]) + "</section>"


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
    report = read_report(job)
    if report is None:
        raise UsageError(f"{report_path} is missing: give a job folder that has finished (its --out)")
    noun, count, stages = per_item_stages(report)
    videos = gallery(job, samples)
    board = leaderboard_section(job)
    sections = [
        f"<h1>motionfleet job: {esc(job.resolve().name)}</h1>",
        "<h2>Figures</h2>" + figures(report, noun, count),
        stage_section(noun, stages),
        batch_section(batch_times(job)),
        rejected_section(rejected_rows(job), (report.get("rows") or {}).get("rejected")),
        "<h2>Settings</h2>" + kv_table(report.get("settings", {})),
    ]
    if board is not None:
        sections.append("<h2>Leaderboard</h2>" + board)
    sections.append("<section id='samples'><h2>Samples</h2>" + ("".join(
        f"<figure><video controls muted preload='metadata' src='{ASSETS}/{quote(v.name)}'></video>"
        f"<figcaption>{esc(sample_id)}</figcaption></figure>" for sample_id, v in videos.items())
        or "<p>no rendered samples</p>") + "</section>")
    machine = {**(report.get("host") or {}), **(report.get("versions") or {})}
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
