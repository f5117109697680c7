"""``motionfleet render`` of reconstruct results: the people projected into their source frames with
the job's camera, the side view beside, and the contact sheet of one tile per video.

The projection is checked against the synthetic demo video, whose figures are known: joints placed
in 3D so that the pinhole camera of the runner (focal length = the image diagonal, principal point
at the centre, y down) maps them onto each figure must be drawn on that figure, in the person's
colour, at the pixels this file computes with the pinhole formula written out again."""

import json
import math
import re
from urllib.parse import unquote

import av
import numpy as np
import pytest
from report_page import committed_batches, drawn_batches, section, stage_bars

from motionfleet.cli import main
from motionfleet.demo.videos import DEMO_COLOURS, demo_boxes, write_corrupt_file, write_demo_corpus, write_demo_video
from motionfleet.render import video_name
from motionfleet.socialmirror.overlay import GROUND_RGB, PERSON_RGB, contact_sheet
from motionfleet.socialmirror.render import GREY_FRAME, render_socialmirror

SIZE = (320, 240)  # width, height
FRAMES = 8
# A standing body's 24 SMPL joints relative to the pelvis, camera frame (x right, y down, z away), metres.
BODY = np.array([
    (0, 0, 0), (0.1, 0.05, 0), (-0.1, 0.05, 0), (0, -0.1, 0), (0.1, 0.45, 0.05), (-0.1, 0.45, 0.05),
    (0, -0.25, 0), (0.1, 0.85, 0), (-0.1, 0.85, 0), (0, -0.35, 0), (0.1, 0.9, -0.1), (-0.1, 0.9, -0.1),
    (0, -0.55, 0), (0.06, -0.5, 0), (-0.06, -0.5, 0), (0, -0.7, 0), (0.15, -0.5, 0), (-0.15, -0.5, 0),
    (0.18, -0.3, 0.05), (-0.18, -0.3, 0.05), (0.2, -0.1, 0.1), (-0.2, -0.1, 0.1), (0.2, -0.02, 0.1), (-0.2, -0.02, 0.1),
], dtype=np.float64)
BODY_TOP, BODY_BOTTOM = BODY[:, 1].min(), BODY[:, 1].max()


def pixel_of(points, width, height):
    """The runner's pinhole, written out independently of the engine: f = sqrt(W^2 + H^2)."""
    f = math.sqrt(width**2 + height**2)
    return np.stack([f * points[..., 0] / points[..., 2] + width / 2, f * points[..., 1] / points[..., 2] + height / 2], -1)


def body_in_box(box, width, height):
    """(24, 3) camera-frame joints whose image spans 80% of the figure box's height, centred on it."""
    x0, y0, x1, y1 = box
    f = math.sqrt(width**2 + height**2)
    depth = f * (BODY_BOTTOM - BODY_TOP) / (0.8 * (y1 - y0))
    centre = np.array([((x0 + x1) / 2 - width / 2) * depth / f, ((y0 + y1) / 2 - height / 2) * depth / f, depth])
    return BODY - [0, (BODY_TOP + BODY_BOTTOM) / 2, 0] + centre


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """The demo video and rows whose joints stand on its figures: (video path, rows, (T, 2, 24, 3) joints)."""
    video = tmp_path_factory.mktemp("video") / "walk.mp4"
    write_demo_video(video, FRAMES, 30, SIZE, seed=1)
    joints = np.array([[body_in_box(box, *SIZE) for box in frame] for frame in demo_boxes(FRAMES, SIZE)])
    rows = [{"video_id": "walk.mp4", "frame_index": t, "person": p, "joints_3d": joints[t, p].ravel().tolist()}
            for t in range(FRAMES) for p in (0, 1)]
    return video, rows, joints


def decoded(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def near(image, colour, tolerance):
    return np.linalg.norm(image.astype(float) - colour, axis=-1) < tolerance


def figure_box(source_frame, colour):
    """The figure's box (x0, y0, x1, y1) read from the source frame's pixels of its colour."""
    ys, xs = np.nonzero(near(source_frame, colour, 40))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_projected_joints_are_drawn_on_the_figures_of_the_source_frames(placed, tmp_path):
    video, rows, joints = placed
    assert render_socialmirror(rows, tmp_path / "walk.mp4", video) == FRAMES
    rendered, source = decoded(tmp_path / "walk.mp4"), decoded(video)
    width, height = SIZE
    assert len(rendered) == FRAMES and rendered[0].shape[0] == height and rendered[0].shape[1] > width
    gaps = []
    for t in range(FRAMES):
        frame = rendered[t][:, :width]
        for person in (0, 1):
            drawn = near(frame, PERSON_RGB[person], 60)
            x0, y0, x1, y1 = figure_box(source[t], DEMO_COLOURS[person])
            expected = pixel_of(joints[t, person], width, height)
            # every joint sits on its figure, and is drawn there in the person's colour
            assert ((expected >= [x0, y0]) & (expected <= [x1, y1])).all(), (t, person)
            for u, v in expected:
                window = drawn[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3]
                assert window.any(), (t, person, u, v)
            # and nothing of that colour is drawn away from the figure (the labelled box hugs the joints)
            ys, xs = np.nonzero(drawn)
            margin = 10
            assert xs.min() >= x0 - margin and xs.max() <= x1 + margin, (t, person, xs.min(), xs.max(), x0, x1)
            assert ys.min() >= y0 - margin and ys.max() <= y1 + margin, (t, person, ys.min(), ys.max(), y0, y1)
        # the side view: the people (here at one depth, person 1 in front) scaled to most of the panel's
        # height, above one ground line that the lowest foot of the clip touches
        side = rendered[t][:, width:]
        ys = np.nonzero(near(side, PERSON_RGB[0], 60) | near(side, PERSON_RGB[1], 60))[0]
        assert ys.max() - ys.min() > 0.6 * height
        ground = np.nonzero(near(side, GROUND_RGB, 30).mean(axis=1) > 0.9)[0]
        assert len(ground) == 1
        gaps.append(ground[0] - ys.max())
    assert min(gaps) >= 0 and min(gaps) <= 6, gaps


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
def test_a_video_that_cannot_be_decoded_gets_grey_frames_with_the_people_still_drawn(placed, tmp_path, broken):
    _, rows, joints = placed
    video = tmp_path / "gone.mp4"
    if broken == "corrupt":
        write_corrupt_file(video)
    assert render_socialmirror(rows, tmp_path / "out.mp4", video) == FRAMES
    frame = decoded(tmp_path / "out.mp4")[0]
    u, v = pixel_of(joints[0, 0, 0], *GREY_FRAME[1::-1])  # the pelvis, projected into the grey frame
    assert near(frame[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3], PERSON_RGB[0], 60).any()
    assert near(frame[:10, :10], (90, 90, 90), 12).all()


def test_contact_sheet_grid_has_one_tile_per_clip():
    tiles = [(f"clip {n}", np.full((60, 80, 3), 10 * n, np.uint8)) for n in range(7)]
    sheet = contact_sheet(tiles, tile_width=40, columns=3)
    tile_h = sheet.shape[0] // 3
    assert sheet.shape[1] == 3 * 40 and sheet.shape[0] == 3 * tile_h  # 7 tiles: three rows of three
    for n in range(7):
        y, x = (n // 3) * tile_h, (n % 3) * 40
        assert (sheet[y + 5, x + 5] == 10 * n).all()  # tile n where the grid puts it
    assert (sheet[2 * tile_h + 5, 40 + 5] == 255).all()  # the eighth slot stays empty


@pytest.fixture(scope="module")
def reconstruct_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recon")
    corpus = write_demo_corpus(folder / "corpus")
    out = folder / "out"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MOTIONFLEET_PROGRESS", "0")
        assert main(["reconstruct", "--videos", str(corpus), "--out", str(out), "--preset", "small", "--crop-size", "32",
                     "--max-frame-size", "160", "--steps", "2", "--workers", "0"]) == 0
    return out


@pytest.mark.usefixtures("one_thread")
def test_render_and_contact_sheet_of_a_reconstruct_job(reconstruct_job, tmp_path, capsys):
    assert main(["render", str(reconstruct_job), "--ids", "two_people_b.mp4", "--out", str(tmp_path)]) == 0
    video = decoded(tmp_path / video_name("socialmirror", "two_people_b.mp4"))
    assert len(video) == 40  # every frame of the video, decoded as the job decoded it (160 x 120)
    assert video[0].shape[0] == 120 and video[0].shape[1] > 160

    sheet_path = tmp_path / "sheet.png"
    assert main(["render", str(reconstruct_job), "--contact-sheet", str(sheet_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"contact sheet (3 videos) -> {sheet_path}"
    with av.open(str(sheet_path)) as image:
        sheet = next(image.decode(video=0)).to_ndarray(format="rgb24")
    assert sheet.shape[1] == 3 * 320  # one tile per video, in one row


@pytest.mark.usefixtures("one_thread")
def test_report_page_of_a_reconstruct_job_shows_stages_per_frame_batches_and_a_render(reconstruct_job):
    assert main(["report", str(reconstruct_job), "--samples", "1"]) == 0
    page = (reconstruct_job / "report.html").read_text()
    timing = json.loads((reconstruct_job / "report.json").read_text())["timing"]
    assert [(label, value) for label, _, value in stage_bars(page)] == [
        (stage, f"{timing['stages'][stage]['seconds'] / timing['frames']:.4g} s/frame")
        for stage in ("decode", "backbone", "diffusion", "body", "rows", "write")]
    assert drawn_batches(page) == committed_batches(reconstruct_job) > 0
    [video] = re.findall(r"src='report_assets/([^']+)'", section(page, "samples"))
    assert (reconstruct_job / "report_assets" / unquote(video)).stat().st_size > 0


def test_render_needs_ids_or_a_contact_sheet(reconstruct_job, capsys):
    assert main(["render", str(reconstruct_job)]) == 2
    assert capsys.readouterr().err.startswith("motionfleet: error: give --ids")


# --- generate / refine: ground, facing, title ----------------------------------------------


def standing(turn_degrees: float, x: float) -> np.ndarray:
    """(24, 3) BODY stood up (y up, feet at 0) and turned about y by ``turn_degrees``: it faces
    (sin, 0, cos) of the turn (SMPL's rest pose faces +z with its left hip at +x)."""
    body = BODY * [1, -1, 1]
    body[:, 1] -= body[:, 1].min()
    a = math.radians(turn_degrees)
    turn = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return body @ turn.T + [x, 0, 0]


@pytest.mark.parametrize("degrees", [0, 90, 180, -45])
def test_facing_is_humanml3d_forward(degrees):
    from motionfleet.render import facing

    a = math.radians(degrees)
    assert np.allclose(facing(standing(degrees, 0.7)), [math.sin(a), 0, math.cos(a)], atol=1e-9)


def test_skeleton_frames_draw_the_ground_under_the_people_and_the_prompt_as_title():
    from motionfleet.render import COLOURS, GROUND_COLOUR, Canvas, prompt_title, skeleton_frames

    people = np.stack([np.stack([standing(0, 0.02 * t) for t in range(4)]), np.stack([standing(90, 1.2)] * 4)])
    title = prompt_title("hug", "two people hug " * 20)
    assert title.count("\n") == 1 and title.startswith("hug: two people hug") and title.endswith("...")
    canvas = Canvas(1, [title])
    try:
        frame = next(iter(skeleton_frames(people, canvas)))
    finally:
        canvas.close()
    from matplotlib.colors import to_rgb

    ground_rows = np.nonzero(near(frame, np.array(to_rgb(GROUND_COLOUR)) * 255, 4))[0]
    for colour in COLOURS:
        person_rows = np.nonzero(near(frame, np.array(to_rgb(colour)) * 255, 40))[0]
        assert len(person_rows) > 50
        assert ground_rows.max() > person_rows.max() > ground_rows.min()  # the feet stand on the ground
