"""``motionfleet render`` (MP4s that decode back with the right frame count and size) and
``motionfleet report`` (a static page checked in a real headless Chromium: it loads without
errors, its videos have non-zero size and duration, and its screenshot is not blank)."""

import html
import json
import re
import shutil
import subprocess
import tracemalloc
from urllib.parse import unquote

import av
import numpy as np
import pytest
import torch
from report_page import committed_batches, drawn_batches, section, stage_bars

from motionfleet.cli import main
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.html_report import MAX_INPUT_CHARS, MAX_POINTS, BatchTime, batch_section, rejected_rows, rejected_section
from motionfleet.render import video_name
from motionfleet.scorehoi.render import HOLD_FRAMES

FRAMES = 12
PROMPTS = [{"id": "hug", "text": "two people hug", "num_frames": FRAMES},
           {"id": "push", "text": "one pushes the other", "num_frames": 9},
           {"id": "bad", "text": "too long", "num_frames": 1000},
           {"id": "empty", "text": "", "num_frames": 9}]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    prompts = folder / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    out = folder / "out"
    assert main(["generate", "--out", str(out), "--prompts", str(prompts), "--preset", "tiny", "--steps", "2",
                 "--workers", "0", "--batch-size", "1"]) == 0  # a batch per accepted prompt
    return out


def decoded(path):
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames


def test_render_writes_one_mp4_per_id_that_decodes_back(job, tmp_path):
    assert main(["render", str(job), "--ids", "hug,push", "--out", str(tmp_path)]) == 0
    for sample_id, frames in (("hug", FRAMES), ("push", 9)):
        video = decoded(tmp_path / video_name("dhvae", sample_id))
        assert len(video) == frames
        assert video[0].shape == (360, 480, 3)
        assert np.ptp(video[0]) > 0  # something was drawn


LONG = "two people walk towards each other across a wide and empty room and then " * 2
ODD_IDS = ["hug me", "hug_me", LONG + "shake hands", LONG + "wave"]  # one sanitised name, one 80-character prefix
FILLER_FRAMES = 120


@pytest.fixture(scope="module")
def odd_ids_job(tmp_path_factory):
    """Four short samples whose ids sanitise alike, then 20 long ones render never draws."""
    folder = tmp_path_factory.mktemp("odd")
    prompts = [{"id": i, "text": "two people hug", "num_frames": 6} for i in ODD_IDS]
    prompts += [{"id": f"filler-{n}", "text": "one pushes the other", "num_frames": FILLER_FRAMES} for n in range(20)]
    (folder / "prompts.jsonl").write_text("\n".join(json.dumps(p) for p in prompts) + "\n")
    out = folder / "out"
    assert main(["generate", "--out", str(out), "--prompts", str(folder / "prompts.jsonl"), "--preset", "tiny",
                 "--steps", "1", "--workers", "0"]) == 0
    return out


def test_distinct_ids_get_distinct_files_and_the_page_labels_each_with_its_own(odd_ids_job, tmp_path, capsys):
    assert main(["render", str(odd_ids_job), "--ids", ",".join(ODD_IDS), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and len(list(tmp_path.glob("*.mp4"))) == 4
    for sample_id, line in zip(ODD_IDS, printed):
        assert line == f"{sample_id} -> {tmp_path / video_name('dhvae', sample_id)}"
    assert video_name("socialmirror", "clips/a.mp4").count(".mp4") == 1  # no .mp4.mp4

    assert main(["report", str(odd_ids_job), "--samples", "4"]) == 0
    page = (odd_ids_job / "report.html").read_text()
    shown = re.findall(r"src='report_assets/([^']+)'></video><figcaption>([^<]+)</figcaption>", page)
    assert [(unquote(src), html.unescape(caption)) for src, caption in shown] == [
        (video_name("dhvae", i), i) for i in ODD_IDS]
    assert all((odd_ids_job / "report_assets" / video_name("dhvae", i)).stat().st_size > 0 for i in ODD_IDS)


def test_render_reads_only_the_rows_it_draws(odd_ids_job, tmp_path):
    """Python memory while rendering one short sample stays far below the job's rows as Python
    lists (what render held before: every row of the job)."""
    from motionfleet.api import read_results
    from motionfleet.render import render_job

    render_job(odd_ids_job, ["hug me"], tmp_path / "warm")  # imports and font caches outside the measurement
    tracemalloc.start()
    try:
        everything = read_results(odd_ids_job).to_pylist()
        whole = tracemalloc.get_traced_memory()[0]
        del everything
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        render_job(odd_ids_job, ["hug_me"], tmp_path)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert whole > 20 * 2 * FILLER_FRAMES * 262 * 8  # the filler rows alone
    assert peak < whole / 4, (peak, whole)


@pytest.fixture(scope="module")
def refine_job(tmp_path_factory):
    """The demo scenes refined on the smallest settings (one round, two DDIM steps, one thread:
    the small denoiser's ops are too small for two)."""
    folder = tmp_path_factory.mktemp("refine")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MOTIONFLEET_CACHE", str(folder / "cache"))
        env.setenv("MOTIONFLEET_PROGRESS", "0")
        out = folder / "out"
        assert main(["refine", "--demo", "--out", str(out), "--preset", "small", "--sampler-preset", "fast",
                     "--rounds", "1", "--tau", "4", "--ddim-stride", "2", "--workers", "0", "--batch-size", "16"]) == 0
        yield out
    torch.set_num_threads(threads)


def test_render_scorehoi_shows_the_estimate_then_the_refined_state(refine_job, tmp_path):
    ids = ["box_carry_penetrating", "ball_hand_missed"]
    assert main(["render", str(refine_job), "--ids", ",".join(ids), "--out", str(tmp_path)]) == 0
    for sample_id in ids:
        video = decoded(tmp_path / video_name("scorehoi", sample_id))
        assert len(video) == 2 * HOLD_FRAMES
        assert video[0].shape == (360, 480, 3)
        assert np.ptp(video[0]) > 0
        before, after = video[HOLD_FRAMES - 1].astype(int), video[HOLD_FRAMES].astype(int)
        assert np.abs(video[0].astype(int) - before).mean() < 0.2  # the state holds (codec noise only, ~0.01)
        assert np.abs(before - after).mean() > 0.5  # refinement moved the body or the object (1.6 and 3.1)


def test_render_scorehoi_refuses_a_licensed_body_it_cannot_check(refine_job, tmp_path, capsys):
    other = tmp_path / "models"
    write_synthetic_body_model(other, "smplh")
    assert main(["render", str(refine_job), "--ids", "ball_hand_missed", "--out", str(tmp_path),
                 "--body-models", str(other)]) == 2
    assert capsys.readouterr().err.startswith("motionfleet: error: ")


def test_render_unknown_id_is_a_one_line_error(job, tmp_path, capsys):
    assert main(["render", str(job), "--ids", "nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("motionfleet: error: no rows with id nope")


def test_contact_sheet_of_a_generate_job_is_a_one_line_error(job, tmp_path, capsys):
    assert main(["render", str(job), "--contact-sheet", str(tmp_path / "sheet.png")]) == 2
    assert capsys.readouterr().err.startswith("motionfleet: error: --contact-sheet draws reconstruct jobs")
    assert not (tmp_path / "sheet.png").exists()


CHECK = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="page" src="{page}" width="1100" height="1400"></iframe>
<script>
const errors = [];
const frame = document.getElementById("page");
frame.addEventListener("load", () => {{
  const doc = frame.contentDocument;
  frame.contentWindow.addEventListener("error", e => errors.push(String(e.message)));
  const videos = [...doc.querySelectorAll("video")];
  const ready = videos.map(v => new Promise(done => {{
    if (v.readyState >= 1) return done();
    v.addEventListener("loadedmetadata", done); v.addEventListener("error", () => {{ errors.push("video " + v.src); done(); }});
  }}));
  const inside = (el, box) => {{
    const a = el.getBoundingClientRect(), b = box.getBoundingClientRect();
    return a.width > 0 && a.left >= b.left && a.right <= b.right && a.top >= b.top && a.bottom <= b.bottom;
  }};
  const cells = tr => [...tr.cells].map(td => td.textContent);
  Promise.all(ready).then(() => {{
    document.getElementById("result").textContent = JSON.stringify({{
      title: doc.title, errors, videos: videos.map(v => ({{src: v.src, duration: v.duration, width: v.videoWidth}})),
      figures: [...doc.querySelectorAll(".figure")].map(f => [f.childNodes[0].textContent, f.querySelector("b").textContent]),
      stages: [...doc.querySelectorAll("#stages rect")].map(r => [r.previousElementSibling.textContent,
        r.getBoundingClientRect().width, r.nextElementSibling.textContent]),
      batches: [...doc.querySelectorAll("#batches circle.batch")].map(c => inside(c, c.ownerSVGElement)),
      rejected: [...doc.querySelectorAll("#rejected tr")].map(cells)}});
  }});
}});
</script></body></html>"""


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_report_page_in_headless_chromium(job, tmp_path):
    assert main(["report", str(job), "--samples", "2"]) == 0
    page = job / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # nothing remote, no scripts
    assert "too long" in text or "num_frames" in text  # the rejected row and its reason
    videos = sorted((job / "report_assets").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 0 for v in videos)

    result = laid_out(page)
    assert result["errors"] == []
    assert len(result["videos"]) == 2
    assert all(v["duration"] > 0 and v["width"] > 0 for v in result["videos"]), result

    pixels = screenshot(page, tmp_path / "report.png")
    assert pixels.std() > 10  # not blank: text, chart and video posters


def page_flags() -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
            "--virtual-time-budget=20000"]


def laid_out(page) -> dict:
    """What the CHECK harness reads from the page as headless Chromium laid it out."""
    harness = page.parent / "check.html"
    harness.write_text(CHECK.format(page=page.name))
    dom = subprocess.run(page_flags() + ["--dump-dom", harness.as_uri()], capture_output=True, text=True, timeout=120).stdout
    return json.loads(dom.split('<pre id="result">')[1].split("</pre>")[0])


def screenshot(page, shot) -> np.ndarray:
    """The page's first 1100 x 1400 pixels in headless Chromium, RGB."""
    subprocess.run(page_flags() + [f"--screenshot={shot}", "--window-size=1100,1400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with av.open(str(shot)) as image:
        return next(image.decode(video=0)).to_ndarray(format="rgb24")


def pixels_of(pixels: np.ndarray, colour: str) -> int:
    """Pixels within 10 of ``colour`` (#rrggbb) in each channel."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - rgb).max(axis=-1) <= 10).sum())


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_report_page_shows_stages_per_item_batches_and_rejected_rows_in_chromium(job, tmp_path):
    """The stage bars per sentence on one axis, a point per batch inside the plot, the rejected rows
    with their reasons and the figures, as Chromium lays them out; the bars and points in the screenshot."""
    assert main(["report", str(job), "--samples", "2"]) == 0
    report = json.loads((job / "report.json").read_text())
    timing = report["timing"]
    result = laid_out(job / "report.html")

    assert [label for label, _, _ in result["stages"]] == ["text encoder", "denoise", "decode"]
    per_sentence = {"text encoder": timing["text_encoder_s"] / 2, "denoise": timing["aits_denoise_s"],
                    "decode": timing["aits_decode_s"]}
    assert {label: value for label, _, value in result["stages"]} == {k: f"{v:.4g} s/sentence" for k, v in per_sentence.items()}
    widths = {label: width for label, width, _ in result["stages"]}
    longest = max(per_sentence, key=per_sentence.get)
    for label, value in per_sentence.items():  # one axis, per sentence: lengths in proportion
        assert widths[label] == pytest.approx(widths[longest] * value / per_sentence[longest], abs=0.6)

    assert len(result["batches"]) == drawn_batches((job / "report.html").read_text()) == committed_batches(job) == 2
    # --batch-size 1, two prompts accepted
    assert all(result["batches"])  # each point inside its plot

    assert result["rejected"][0] == ["sample_id", "reason", "repeat", "input"]
    reasons = {row[0]: row[1] for row in result["rejected"][1:]}
    assert reasons["empty"] == "prompt is empty" and reasons["bad"].startswith("num_frames must be an integer")

    figures = dict(result["figures"])
    assert figures["wall time"] == f"{report['wall_s']:.4g} s" and figures["sentences"] == "2"
    assert figures["throughput"] == f"{2 / report['wall_s']:.4g} sentences/s"
    assert figures["aits_s"] == f"{timing['aits_s']:.4g} s"

    pixels = screenshot(job / "report.html", tmp_path / "report.png")
    assert pixels_of(pixels, "#4c78a8") > 0.8 * 16 * sum(widths.values())  # the stage bars, 16 px high
    assert pixels_of(pixels, "#e45756") > 2 * 20  # the two batch points (r = 3 px) and the legend's dot


def test_the_stage_chart_keeps_wall_time_off_the_per_item_axis(tmp_path):
    """Four sentences in 100 s of wall time: the bars are the stages per sentence, in proportion on
    their own axis; the wall time and throughput are numbers (before: a wall_s bar on the same axis
    left every stage a sliver)."""
    timing = {"sentences": 4, "wall_s": 100.0, "aits_s": 0.03, "aits_denoise_s": 0.02, "aits_decode_s": 0.01,
              "text_encoder_s": 0.2, "throughput_sentences_per_s": 0.04, "peak_rss_mb": 900.0}
    headline = {"name": "aits_s", "value": 0.03, "unit": "s", "meaning": "per sentence"}
    (tmp_path / "report.json").write_text(json.dumps({"family": "dhvae", "wall_s": 100.0, "timing": timing,
                                                      "headline": headline, "rows": {"results": 4, "rejected": 0}}))
    assert main(["report", str(tmp_path), "--samples", "0"]) == 0
    page = (tmp_path / "report.html").read_text()
    bars = stage_bars(page)
    assert [(label, value) for label, _, value in bars] == [
        ("text encoder", "0.05 s/sentence"), ("denoise", "0.02 s/sentence"), ("decode", "0.01 s/sentence")]
    widths = [width for _, width, _ in bars]
    assert widths[1] == pytest.approx(widths[0] * 0.4, abs=0.1) and widths[2] == pytest.approx(widths[0] * 0.2, abs=0.1)
    chart = re.search(r"<svg.*</svg>", section(page, "stages"), re.S).group(0)
    assert "wall" not in chart and "100" not in chart
    assert "wall time<b>100 s</b>" in page and "throughput<b>0.04 sentences/s</b>" in page


def test_a_big_jobs_batch_plot_is_bounded_and_keeps_its_straggler():
    """10^5 batches of four workers, one of them 9 times slower: at most MAX_POINTS drawn, every
    worker among them, the straggler one of them."""
    batches = [BatchTime(1000.0 + i, 1.0, f"w{i % 4}") for i in range(10**5)]
    batches[54321] = BatchTime(1000.0 + 54321, 9.0, "w1")
    plot = batch_section(batches)
    drawn = re.findall(r'<circle class="batch"[^>]*><title>([^<]*)</title>', plot)
    assert len(drawn) <= MAX_POINTS and {title.split(":")[0] for title in drawn} == {"w0", "w1", "w2", "w3"}
    assert drawn.count("w1: 9 s") == 1 and "100000 batches" in plot and "slowest 9 s (9.0 x the median)" in plot


def test_the_rejected_table_shows_the_first_rows_and_counts_them_all(job):
    shown = rejected_section(rejected_rows(job, limit=1), 2)
    assert "Rejected rows (2, the first 1 shown)" in shown and shown.count("<tr>") == 2  # the header and one row
    long = rejected_section([{"sample_id": "x", "repeat": 0, "input": "a" * 1000, "reason": "too big"}], 1)
    assert "a" * MAX_INPUT_CHARS + "...</td>" in long and "a" * (MAX_INPUT_CHARS + 1) not in long


def test_report_page_of_a_refine_job_shows_stages_per_image_batches_and_a_render(refine_job):
    assert main(["report", str(refine_job), "--samples", "1"]) == 0
    page = (refine_job / "report.html").read_text()
    variants = json.loads((refine_job / "report.json").read_text())["timing"]["variants"]
    assert list(variants) == ["guided", "control"]
    assert {label: value for label, _, value in stage_bars(page)} == {
        f"{name}: {stage}": f"{v['seconds'] * v['split'][stage] / v['images']:.4g} s/image"
        for name, v in variants.items() for stage in ("denoiser", "body", "loss", "other")}
    assert drawn_batches(page) == committed_batches(refine_job) > 0
    [video] = re.findall(r"src='report_assets/([^']+)'", section(page, "samples"))
    assert (refine_job / "report_assets" / unquote(video)).stat().st_size > 0


BOARD = """protocol = "interhuman"
dataset = "{dataset}"
workers = 0
[protocol_settings]
replications = 2
match_batch = 4
diversity_pairs = 4
mm_texts = 2
mm_repeats = 3
mm_pairs = 2
evaluator_preset = "tiny"
[real.published]
paper = "InterGen (Liang et al., IJCV 2024)"
table = "Table 1, Real"
r_precision_top1 = {{ value = 0.452, interval = 0.008 }}
fid = 0.273
[[entry]]
name = "tiny-w3.5"
seeds = [0]
[entry.settings]
preset = "tiny"
steps = 2
[entry.published]
paper = "InterGen (Liang et al., IJCV 2024)"
table = "Table 1"
fid = 5.918
r_precision_top1 = {{ value = 0.371, interval = 0.010 }}
[[entry]]
name = "tiny-w1"
seeds = [0]
[entry.settings]
preset = "tiny"
steps = 2
guidance_scale = 1.0
"""


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A two-entry leaderboard on a tiny synthetic InterHuman set, with published numbers for one
    entry and for the real data; (its folder, what the command printed)."""
    from contextlib import redirect_stdout
    from io import StringIO

    from motionfleet.dhvae.interhuman import write_synthetic

    folder = tmp_path_factory.mktemp("board")
    dataset = write_synthetic(folder / "interhuman", count=10, frames=(15, 18))
    config = folder / "board.toml"
    config.write_text(BOARD.format(dataset=dataset))
    printed = StringIO()
    with redirect_stdout(printed):
        assert main(["leaderboard", str(config), "--out", str(folder / "out")]) == 0
    return folder / "out", printed.getvalue()


def test_the_board_shows_published_reproduced_and_their_difference_for_every_metric(board):
    out, printed = board
    summary = json.loads((out / "leaderboard.json").read_text())
    markdown = (out / "leaderboard.md").read_text()
    assert markdown in printed  # the text output is the written table
    metrics = json.loads((out / "entries" / "tiny-w3.5" / "seed-0" / "metrics.json").read_text())["metrics"]
    rows = {line.split(" | ")[0][2:] + "/" + line.split(" | ")[1]: line.split(" | ")[2:]
            for line in markdown.split("## Published and reproduced")[1].splitlines() if line.startswith("| ")}
    for metric in metrics["generated"]:
        published, reproduced, difference, source = rows[f"tiny-w3.5/{metric}"]
        mean, interval = metrics["generated"][metric]["mean"], metrics["generated"][metric]["interval"]
        assert reproduced == f"{mean:.4f} +- {interval:.4f}"
        given = {"fid": (5.918, None), "r_precision_top1": (0.371, 0.010)}.get(metric)
        if given is None:
            assert (published, difference, source) == ("-", "-", "- |")
            continue
        assert published == f"{given[0]:.4f}" + ("" if given[1] is None else f" +- {given[1]:.4f}")
        assert difference == f"{mean - given[0]:+.4f}" and source == "InterGen (Liang et al., IJCV 2024), Table 1 |"
        assert summary["entries"][[e["name"] for e in summary["entries"]].index("tiny-w3.5")]["cells"][metric][
            "difference"] == pytest.approx(mean - given[0])
        assert rows[f"tiny-w1/{metric}"][0] == "-"  # no published numbers for the other entry
    real = rows["real data/r_precision_top1"]
    assert real[0] == "0.4520 +- 0.0080" and real[1] == f"{metrics['real']['r_precision_top1']['mean']:.4f} +- " \
                                                        f"{metrics['real']['r_precision_top1']['interval']:.4f}"
    assert rows["real data/multimodality"][:3] == ["-", "-", "-"]  # the real set has no MModality


def board_page_rows(page_html: str) -> list[str]:
    """The entries of the board's body in page order, then the footer's."""
    body, foot = page_html.split("<tbody>")[1].split("</tbody>")
    return re.findall(r"<tr data-entry=['\"]([^'\"]+)['\"]", body) + re.findall(r"<tr data-entry=['\"]([^'\"]+)['\"]", foot)


def test_the_board_page_keeps_each_cells_sort_key_and_draws_its_error_bars(board):
    out, _ = board
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing remote
    summary = json.loads((out / "leaderboard.json").read_text())
    assert board_page_rows(page) == [e["name"] for e in summary["entries"]] + ["real data"]  # ranked by FID
    for entry in summary["entries"]:
        row = page.split(f"<tr data-entry='{entry['name']}'>")[1].split("</tr>")[0]
        keys = re.findall(r"<td data-sort='([^']*)'>", row)
        assert keys[2:] == [repr(entry["cells"][m]["mean"]) for m in summary["metrics"]]
        assert row.count("<svg") == len(summary["metrics"]) and row.count("class=\"bar-dot\"") == len(summary["metrics"])
    published_row = page.split("<tr data-entry='tiny-w3.5'>")[1].split("</tr>")[0]
    assert published_row.count("class=\"bar-diamond\"") == 1 and published_row.count("rotate(45") == 2  # fid, top1


@pytest.mark.parametrize("cell", ['{"mean": "5"}', '{"mean": 5, "published": 4, "difference": "1"}', '[]'])
def test_a_damaged_board_file_is_one_line_exit_1(cell, tmp_path, capsys):
    (tmp_path / "leaderboard.json").write_text(
        '{"metrics": ["fid"], "entries": [{"name": "x", "cells": {"fid": %s}}], "real": null}' % cell)
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a board written by motionfleet leaderboard" in err[0], err
    assert not (tmp_path / "report.html").exists()


def dumped_rows(url: str) -> list[str]:
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    return board_page_rows(subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout)


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_board_page_in_headless_chromium_has_its_rows_and_sorts(board, tmp_path):
    out, _ = board
    assert main(["report", str(out)]) == 0
    page = out / "report.html"
    summary = json.loads((out / "leaderboard.json").read_text())
    ranked = [e["name"] for e in summary["entries"]]
    assert dumped_rows(page.as_uri()) == ranked + ["real data"]
    by_mm_dist = sorted(summary["entries"], key=lambda e: e["cells"]["mm_dist"]["mean"])
    assert dumped_rows(page.as_uri() + "#sort=mm_dist") == [e["name"] for e in by_mm_dist] + ["real data"]
    assert dumped_rows(page.as_uri() + "#sort=-mm_dist") == [e["name"] for e in by_mm_dist][::-1] + ["real data"]
    assert dumped_rows(page.as_uri() + "#sort=entry") == sorted(ranked) + ["real data"]
    assert dumped_rows(page.as_uri() + "#sort=-entry") == sorted(ranked)[::-1] + ["real data"]

    shot = tmp_path / "board.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,900", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with av.open(str(shot)) as image:
        pixels = next(image.decode(video=0)).to_ndarray(format="rgb24")
    assert pixels.std() > 10  # not blank: the table, its text and its bars
