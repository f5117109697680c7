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

from motionfleet.cli import main
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.render import HOLD_FRAMES, video_name

FRAMES = 12
PROMPTS = [{"id": "hug", "text": "two people hug", "num_frames": FRAMES},
           {"id": "push", "text": "one pushes the other", "num_frames": 9},
           {"id": "bad", "text": "too long", "num_frames": 1000}]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    prompts = folder / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    out = folder / "out"
    assert main(["generate", "--out", str(out), "--prompts", str(prompts), "--preset", "tiny", "--steps", "2",
                 "--workers", "0"]) == 0
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
  Promise.all(ready).then(() => {{
    document.getElementById("result").textContent = JSON.stringify({{
      title: doc.title, errors, videos: videos.map(v => ({{src: v.src, duration: v.duration, width: v.videoWidth}}))}});
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

    harness = job / "check.html"
    harness.write_text(CHECK.format(page=page.name))
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=20000"]
    dom = subprocess.run(flags + ["--dump-dom", harness.as_uri()], capture_output=True, text=True, timeout=120).stdout
    result = json.loads(dom.split('<pre id="result">')[1].split("</pre>")[0])
    assert result["errors"] == []
    assert len(result["videos"]) == 2
    assert all(v["duration"] > 0 and v["width"] > 0 for v in result["videos"]), result

    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1100,1400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with av.open(str(shot)) as image:
        pixels = next(image.decode(video=0)).to_ndarray(format="rgb24")
    assert pixels.std() > 10  # not blank: text, chart and video posters
