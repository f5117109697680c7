"""``motionfleet render DIR --ids ... --out FOLDER``: selected result rows as short MP4 videos.

- dhvae: the two people's 22 joint positions (the first 66 of each frame's 262 features) as two
  coloured skeletons over the ground, each with an arrow the way it faces, the prompt as the
  title, one fixed camera for the whole clip;
- socialmirror: the two people's 24 SMPL joints (``joints_3d``) projected into each frame of the
  video with the job's camera, a side view beside it (``socialmirror.overlay``); grey frames when
  the job's corpus is no longer on disk. ``--contact-sheet`` draws one frame per video in a grid;
- scorehoi: the body's 52 SMPL-H joints and the object's template points, first as the job's
  input estimate ("before") and then as the refined row ("after"), one fixed camera for both; the
  estimate is read again from the job's estimates file (its sha256 checked against the job's) or
  rebuilt from the demo scenes, the joints from the body model the job used.

Frames are drawn with matplotlib (Agg), reconstruct's with Pillow onto the decoded frames, and
encoded with PyAV (H.264, yuv420p, even sizes).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from motionfleet.core.options import UsageError

FPS = 30
SIZE = (480, 360)  # width, height of one panel
# SMPL's kinematic tree (joints 0-23); the first 22 are InterHuman's / HumanML3D's joints.
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
COLOURS = ("tab:blue", "tab:orange")
MAX_FRAMES = 300


# --- drawing -------------------------------------------------------------------------------


def project(points: np.ndarray) -> np.ndarray:
    """(..., 3) world points (y up) -> (..., 2) screen points of one fixed oblique camera."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([x + 0.35 * z, y + 0.2 * z], axis=-1)


def bounds(screens: Iterable[np.ndarray]) -> tuple[float, float, float, float]:
    """Square-ish limits covering every frame, so the camera does not move."""
    points = np.concatenate([s.reshape(-1, 2) for s in screens])
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return -1.0, 1.0, -1.0, 1.0
    low, high = points.min(0), points.max(0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2 * 1.1, 0.5)
    return centre[0] - half * SIZE[0] / SIZE[1], centre[0] + half * SIZE[0] / SIZE[1], centre[1] - half, centre[1] + half


class Canvas:
    """One matplotlib figure redrawn per frame, read back as an RGB array."""

    def __init__(self, panels: int, titles: list[str]):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        dpi = 100
        self.fig, axes = plt.subplots(1, panels, figsize=(SIZE[0] * panels / dpi, SIZE[1] / dpi), dpi=dpi)
        self.axes = list(np.atleast_1d(axes))
        self.titles = titles

    def clear(self) -> None:
        for ax, title in zip(self.axes, self.titles):
            ax.clear()
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])

    def rgb(self) -> np.ndarray:
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()

    def close(self) -> None:
        self.plt.close(self.fig)


def draw_skeleton(ax, screen: np.ndarray, colour: str, parents=PARENTS) -> None:
    """``screen`` (J, 2) joints of one person joined along the kinematic tree (SMPL's by default)."""
    for joint in range(1, len(screen)):
        parent = parents[joint]
        ax.plot(*zip(screen[parent], screen[joint]), color=colour, lw=2)
    ax.scatter(screen[:, 0], screen[:, 1], s=6, color=colour)


# HumanML3D's facing joints (motion_process.py's face_joint_indx): right hip, left hip, right shoulder, left shoulder
FACING_JOINTS = (2, 1, 17, 16)
GROUND_COLOUR = "0.85"


def facing(joints: np.ndarray) -> np.ndarray:
    """(..., J, 3) joints, y up -> (..., 3) unit forward directions on the ground: HumanML3D's
    up x ((r_hip - l_hip) + (r_shoulder - l_shoulder))."""
    r_hip, l_hip, r_shoulder, l_shoulder = FACING_JOINTS
    across = joints[..., r_hip, :] - joints[..., l_hip, :] + joints[..., r_shoulder, :] - joints[..., l_shoulder, :]
    forward = np.cross(np.array([0.0, 1.0, 0.0]), across)
    return forward / np.maximum(np.linalg.norm(forward, axis=-1, keepdims=True), 1e-9)


def ground_outline(points: np.ndarray, margin: float) -> np.ndarray:
    """(5, 3) closed outline of the ground under (N, 3) finite points: the lowest one's height, their
    x-z extent plus ``margin``."""
    (x0, _, z0), (x1, _, z1) = points.min(0) - margin, points.max(0) + margin
    y0 = points[:, 1].min()
    return np.array([(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1), (x0, y0, z0)])


class Stage:
    """What stays put over a clip: the ground under everything drawn, the camera's limits, and the
    length of the facing arrows (a third of the clip's extent)."""

    def __init__(self, points: list[np.ndarray]):
        every = np.concatenate([p.reshape(-1, 3) for p in points])
        every = every[np.isfinite(every).all(axis=1)]
        extent = float(np.ptp(every, axis=0).max()) if len(every) else 1.0
        self.arrow = 0.35 * max(extent, 1e-6)
        self.ground = project(ground_outline(every, 0.1 * extent)) if len(every) else np.zeros((0, 2))
        self.extra: list[np.ndarray] = [self.ground]

    def tips(self, joints: np.ndarray) -> np.ndarray:
        """(..., 2) screen points the facing arrows of (..., J, 3) joints point to."""
        tips = project(joints[..., 0, :] + self.arrow * facing(joints))
        self.extra.append(tips)
        return tips

    def draw(self, ax, limits) -> None:
        ax.fill(self.ground[:, 0], self.ground[:, 1], color=GROUND_COLOUR, zorder=0)
        ax.set_xlim(*limits[:2])
        ax.set_ylim(*limits[2:])


def draw_facing(ax, pelvis: np.ndarray, tip: np.ndarray, colour: str) -> None:
    ax.annotate("", xy=tip, xytext=pelvis, arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2})


def skeleton_frames(people: np.ndarray, canvas: Canvas) -> Iterable[np.ndarray]:
    """``people`` (2, T, J, 3), y up -> T RGB frames: two coloured skeletons over the clip's ground,
    an arrow from each pelvis the way the person faces; one camera scaled to the whole clip."""
    stage = Stage([people])
    tips, screen = stage.tips(people), project(people)
    limits = bounds([screen, *stage.extra])
    for t in range(people.shape[1]):
        canvas.clear()
        ax = canvas.axes[0]
        for person, tip, colour in zip(screen, tips, COLOURS):
            draw_skeleton(ax, person[t], colour)
            draw_facing(ax, person[t, 0], tip[t], colour)
        stage.draw(ax, limits)
        yield canvas.rgb()


# --- encoding ------------------------------------------------------------------------------


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int = FPS) -> int:
    """Encode RGB frames (H, W, 3 uint8) as H.264 yuv420p; returns the frame count."""
    import av

    count = 0
    with av.open(str(path), "w") as container:
        stream = None
        for rgb in frames:
            height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count


# --- families ------------------------------------------------------------------------------


def dhvae_people(row: dict) -> np.ndarray:
    """(2, T, 22, 3) joint positions of a dhvae row (features in the dataset's normalised space)."""
    from motionfleet.dhvae.runner import motion_array

    motion = motion_array(row)
    return motion[:, :MAX_FRAMES, :66].reshape(motion.shape[0], -1, 22, 3)


def prompt_title(sample_id: str, prompt: str, width: int = 70) -> str:
    """The sample's prompt as the title, wrapped to two lines (the rest cut with an ellipsis)."""
    import textwrap

    return "\n".join(textwrap.wrap(f"{sample_id}: {prompt}", width, max_lines=2, placeholder=" ..."))


def render_dhvae(row: dict, path: Path) -> int:
    canvas = Canvas(1, [prompt_title(row["sample_id"], str(row.get("prompt", "")))])
    try:
        return write_mp4(path, skeleton_frames(dhvae_people(row), canvas))
    finally:
        canvas.close()


def socialmirror_people(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(output frame indices (T,), (T, 2, 24, 3) camera-frame joints) of one video's rows, frame
    order, the first ``MAX_FRAMES`` frames; NaN where a person has no row."""
    frames = np.array(sorted({r["frame_index"] for r in rows})[:MAX_FRAMES], dtype=np.int64)
    index = {int(f): i for i, f in enumerate(frames)}
    people = np.full((len(frames), 2, 24, 3), np.nan, np.float32)
    for r in rows:
        if r["frame_index"] in index:
            people[index[r["frame_index"]], r["person"]] = np.asarray(r["joints_3d"], np.float32).reshape(24, 3)
    return frames, people


def reconstruct_source(job: Path) -> tuple[Optional[dict], float, Optional[int]]:
    """(video id -> its file in the job's corpus, or None when the corpus is gone; the job's target
    fps; its ``--max-frame-size``): what decodes the frames the job decoded."""
    from motionfleet.socialmirror.video import list_videos

    recorded = recorded_job(job)
    settings = recorded.get("settings", {})
    try:
        paths = {v.video_id: v.path for v in list_videos(recorded["inputs"]["source"])}
    except (OSError, KeyError, TypeError):
        paths = None
    return paths, float(settings.get("target_fps", 30.0)), settings.get("max_frame_size")


def job_frames(path: Path, frames: np.ndarray, target_fps: float, max_size: Optional[int]) -> Iterable[np.ndarray]:
    """The decoded frames at output indices ``frames`` (ascending), as the job decoded them."""
    from motionfleet.socialmirror.video import iter_frames

    wanted = set(frames.tolist())
    stream = iter_frames(path, target_fps, max_size=max_size, start_frame=int(frames[0]))
    try:
        for frame in stream:
            if frame.index in wanted:
                yield frame.rgb
            if frame.index >= frames[-1]:
                return
    finally:
        stream.close()


def overlay_frames(people: np.ndarray, frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """Each frame with its people drawn on it, the clip's side view beside it."""
    from motionfleet.socialmirror.overlay import SideView, side_by_side, side_size

    side = None
    for rgb, pair in zip(frames, people):
        side = side or SideView(people, side_size((rgb.shape[1], rgb.shape[0])))
        yield side_by_side(rgb, pair, side)


GREY_FRAME = (360, 640, 3)  # stands in for frames that cannot be decoded: the size of a 640-pixel decode


def source_frames(video: Optional[Path], frames: np.ndarray, target_fps: float, max_size: Optional[int]) -> Iterable[np.ndarray]:
    """The frames at output indices ``frames`` as the job decoded them; grey frames for those of a
    video that is gone, unreadable or shorter (the drawing still shows the people)."""
    from motionfleet.core.errors import RejectedInput

    shown, shape = 0, GREY_FRAME
    if video is not None and video.is_file():
        try:
            for rgb in job_frames(video, frames, target_fps, max_size):
                shown, shape = shown + 1, rgb.shape
                yield rgb
        except (RejectedInput, OSError):
            pass
    yield from (np.full(shape, 90, np.uint8) for _ in range(len(frames) - shown))


def render_socialmirror(rows: list[dict], path: Path, video: Optional[Path], target_fps: float = 30.0,
                        max_size: Optional[int] = None) -> int:
    """One video's rows as an MP4: both people projected into each frame with the job's camera
    (``socialmirror.overlay``), a side view beside; grey frames where the video cannot give them."""
    frames, people = socialmirror_people(rows)
    return write_mp4(path, overlay_frames(people, source_frames(video, frames, target_fps, max_size)), fps=round(target_fps))


def contact_tile(rows: list[dict], video: Optional[Path], target_fps: float, max_size: Optional[int]) -> np.ndarray:
    """The rendered middle frame of one video's rows (the rows of one frame are enough)."""
    frames, people = socialmirror_people(rows)
    middle = len(frames) // 2
    source = source_frames(video, frames[middle:middle + 1], target_fps, max_size)
    return next(iter(overlay_frames(people[middle:middle + 1], source)))


HOLD_FRAMES = 15  # each scorehoi state is shown this long (half a second)


def refined_row(rows: list[dict]) -> dict:
    """An id's guided row (a ``--control`` job also has one refined with guidance off)."""
    return next((r for r in rows if r.get("variant") == "guided"), rows[0])


def recorded_job(job: Path) -> dict:
    """The job description its job.json keeps (model, body model, inputs)."""
    from motionfleet.core.jobfolder.sink import read_job
    from motionfleet.core.jobfolder.storage import Storage

    return read_job(Storage(job))["job"]


def scorehoi_job_body(job: Path, body_models: Optional[str]):
    """The SMPL-H the job posed its rows with: the synthetic stand-in, or ``body_models`` when its
    file has the sha256 recorded in job.json."""
    from motionfleet.common.bodies import load_body_model
    from motionfleet.scorehoi.settings import model_spec

    recorded = recorded_job(job)["body_model"]
    spec = model_spec(body_models=body_models)
    if spec.body_description() != recorded:
        raise UsageError(f"{job} was refined with {recorded}; give that model's folder with --body-models")
    return load_body_model("smplh", spec.body_models)


def estimate_record(job: Path, sample_id: str):
    """The input estimate of ``sample_id``: the demo scene, or its row of the job's estimates file
    (refused when the file changed since the job ran). The ids are streamed: one row is read."""
    import pyarrow.parquet as pq

    from motionfleet.core.io.digests import file_sha256
    from motionfleet.core.io.parquet_rows import column_values, read_rows
    from motionfleet.demo.scenes import demo_scenes
    from motionfleet.scorehoi.model import PRESETS
    from motionfleet.scorehoi.source import record_from_row

    recorded = recorded_job(job)
    inputs = recorded["inputs"]
    if inputs["source"] == "demo":
        records = demo_scenes(PRESETS[recorded["model"]["preset"]].condition_dim).records
        return next(r for r in records if r.sample_id == sample_id)
    path = Path(inputs["source"])
    if not path.is_file() or file_sha256(path) != inputs["sha256"]:
        raise UsageError(f"the estimates file {path} is gone or changed since the job ran; render needs it as it was")
    for index, value in enumerate(column_values(pq.ParquetFile(path), "id")):
        if record_from_row(index, {"id": value}).sample_id == sample_id:
            return record_from_row(index, read_rows(path, index, index + 1)[0])
    raise UsageError(f"no estimate with id {sample_id} in {path}")


def scorehoi_points(state, body, object_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(52, 3) SMPL-H joints and (64, 3) placed object template points of one (331,) state."""
    import torch

    from motionfleet.common.rotations import rotation_6d_to_matrix
    from motionfleet.scorehoi.hoi import unpack_state
    from motionfleet.scorehoi.objects import get_object

    s = unpack_state(torch.as_tensor(state, dtype=torch.float32)[None])
    with torch.no_grad():
        joints = body(s.pose_6d, s.betas).joints[0].numpy()
    rotation = rotation_6d_to_matrix(s.object_rotation_6d)[0].numpy()
    placed = get_object(object_name).points @ rotation.T + s.object_translation[0].numpy()
    return joints, placed


def row_state(row: dict):
    """The (331,) state of a refine result row."""
    import torch

    from motionfleet.scorehoi.hoi import HOIState, pack_state

    def tensor(name: str, shape: tuple) -> torch.Tensor:
        return torch.tensor(row[name], dtype=torch.float32).view(shape)

    return pack_state(HOIState(tensor("pose_6d", (1, -1, 6)), tensor("object_rotation_6d", (1, 6)),
                               tensor("object_translation", (1, 3)), tensor("betas", (1, 10))))[0]


def scorehoi_frames(states: list[tuple[str, np.ndarray, np.ndarray]], parents, canvas: Canvas) -> Iterable[np.ndarray]:
    """``HOLD_FRAMES`` frames per (title, joints, object points) state: body and object in two
    colours over the ground, the body's facing arrow, one fixed camera over every state."""
    stage = Stage([p for _, joints, points in states for p in (joints, points)])
    screens = [(title, project(joints), project(points), stage.tips(joints)) for title, joints, points in states]
    limits = bounds([s for _, joints, points, _ in screens for s in (joints, points)] + stage.extra)
    for title, joints, points, tip in screens:
        canvas.titles = [title]
        for _ in range(HOLD_FRAMES):
            canvas.clear()
            ax = canvas.axes[0]
            draw_skeleton(ax, joints, COLOURS[0], parents)
            draw_facing(ax, joints[0], tip, COLOURS[0])
            ax.scatter(points[:, 0], points[:, 1], s=6, color=COLOURS[1])
            stage.draw(ax, limits)
            yield canvas.rgb()


def render_scorehoi(row: dict, path: Path, job: Path, body_models: Optional[str]) -> int:
    from motionfleet.scorehoi.source import state_from

    body = scorehoi_job_body(job, body_models)
    before = state_from(estimate_record(job, row["sample_id"]))
    name = f"{row['sample_id']} ({row['object']})"
    states = [(f"{name}: before (input estimate)", *scorehoi_points(before, body, row["object"])),
              (f"{name}: after ({row['variant']}, rho {row['guidance_scale']:g})",
               *scorehoi_points(row_state(row), body, row["object"]))]
    canvas = Canvas(1, [name])
    try:
        return write_mp4(path, scorehoi_frames(states, body.parents.tolist(), canvas))
    finally:
        canvas.close()


# --- the command ---------------------------------------------------------------------------

# family -> (its id column, the result columns its drawing reads)
DRAWN = {
    "dhvae": ("sample_id", ("sample_id", "prompt", "motion")),
    "scorehoi": ("sample_id", ("sample_id", "object", "variant", "guidance_scale", "pose_6d", "object_rotation_6d",
                               "object_translation", "betas")),
    "socialmirror": ("video_id", ("video_id", "frame_index", "person", "joints_3d")),
}
DIGEST_CHARS = 10  # of the raw id's sha256 in a file name: distinct ids never share a file


def committed_files(job: Path) -> list[Path]:
    """The job's committed result files, in shard order (uncommitted attempts left out)."""
    from motionfleet.core.jobfolder.sink import RESULTS_DIR, committed_records
    from motionfleet.core.jobfolder.storage import Storage

    if not (job / RESULTS_DIR).is_dir():
        raise UsageError(f"{job} is not a job folder (no results/); give the --out folder of a job")
    records = committed_records(Storage(str(job)))
    return [job / record["files"][RESULTS_DIR]["path"] for _, record in sorted(records.items())]


def job_family(columns: list[str]) -> str:
    if "motion" in columns:
        return "dhvae"
    if "joints_3d" in columns:
        return "socialmirror"
    if "object_rotation_6d" in columns:
        return "scorehoi"
    raise UsageError("the job's results are not of a family render knows (dhvae, scorehoi, socialmirror)")


def results_of(job: Path):
    """(family, a pyarrow dataset of the committed results); nothing is read yet."""
    import pyarrow.dataset as ds

    files = committed_files(job)
    if not files:
        raise UsageError(f"{job} has no results to render")
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    return job_family(dataset.schema.names), dataset


def first_ids(job: Path, count: int) -> list[str]:
    """The first ``count`` distinct ids in shard order, reading the id column alone and stopping there."""
    import pyarrow.parquet as pq

    family, _ = results_of(job)
    ids: dict[str, None] = {}
    for path in committed_files(job):
        for batch in pq.ParquetFile(path).iter_batches(columns=[DRAWN[family][0]]):
            ids.update(dict.fromkeys(batch.column(0).to_pylist()))
            if len(ids) >= count:
                return list(ids)[:count]
    return list(ids)


def rows_by_id(job: Path, ids: list[str]) -> tuple[str, dict[str, list[dict]]]:
    """(family, id -> its rows): only the rows of ``ids`` and only the columns drawing reads."""
    import pyarrow.dataset as ds

    family, dataset = results_of(job)
    id_column, columns = DRAWN[family]
    table = dataset.to_table(columns=[c for c in columns if c in dataset.schema.names],
                             filter=ds.field(id_column).isin(ids))
    by_id: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_id.setdefault(row[id_column], []).append(row)
    missing = [i for i in ids if i not in by_id]
    if missing:
        known = sorted(set(dataset.to_table(columns=[id_column]).column(0).to_pylist()))[:8]
        raise UsageError(f"no rows with id {', '.join(missing)} in {job}; ids there include {', '.join(known)}")
    return family, by_id


def video_name(family: str, sample_id: str) -> str:
    """``family-<id as letters, digits, - and _>-<digest of the raw id>.mp4``: one file per id."""
    import hashlib

    readable = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in sample_id)[:60]
    return f"{family}-{readable}-{hashlib.sha256(sample_id.encode('utf-8', 'surrogatepass')).hexdigest()[:DIGEST_CHARS]}.mp4"


def render_job(job: str | Path, ids: list[str], out: str | Path, body_models: Optional[str] = None) -> dict[str, Path]:
    """One MP4 per selected id into ``out``; returns id -> the file written."""
    job, out = Path(job), Path(out)
    family, by_id = rows_by_id(job, ids)
    out.mkdir(parents=True, exist_ok=True)
    videos, target_fps, max_size = reconstruct_source(job) if family == "socialmirror" else (None, FPS, None)
    written = {}
    for i in dict.fromkeys(ids):
        path = out / video_name(family, i)
        if family == "dhvae":
            render_dhvae(by_id[i][0], path)
        elif family == "scorehoi":
            render_scorehoi(refined_row(by_id[i]), path, job, body_models)
        else:
            render_socialmirror(by_id[i], path, (videos or {}).get(i), target_fps, max_size)
        written[i] = path
    return written


SHEET_BATCH = 256  # videos whose middle-frame rows are read at once


def middle_frames(job: Path) -> dict[str, int]:
    """video id -> the output frame in the middle of its rows, reading two columns in batches."""
    import pyarrow.parquet as pq

    seen: dict[str, list[int]] = {}
    for path in committed_files(job):
        for batch in pq.ParquetFile(path).iter_batches(columns=["video_id", "frame_index"]):
            for video, frame in zip(*(c.to_pylist() for c in batch.columns)):
                low, high = seen.setdefault(video, [frame, frame])
                seen[video] = [min(low, frame), max(high, frame)]
    return {video: (low + high) // 2 for video, (low, high) in seen.items()}


def write_contact_sheet(job: str | Path, sheet: str | Path, ids: Optional[list[str]] = None) -> int:
    """One tile per video of a reconstruct job (``ids``, or every video), its middle frame with the
    people drawn on it, as one PNG; returns the tile count."""
    import pyarrow.dataset as ds
    from PIL import Image

    from motionfleet.socialmirror.overlay import contact_sheet, shrink

    job = Path(job)
    family, dataset = results_of(job)
    if family != "socialmirror":
        raise UsageError("--contact-sheet draws reconstruct jobs (one tile per video); this job is " + family)
    middles = middle_frames(job)
    chosen = list(dict.fromkeys(ids)) if ids else list(middles)
    missing = [i for i in chosen if i not in middles]
    if missing:
        raise UsageError(f"no rows with id {', '.join(missing[:8])} in {job}")
    videos, target_fps, max_size = reconstruct_source(job)
    tiles = []
    for start in range(0, len(chosen), SHEET_BATCH):
        batch = chosen[start:start + SHEET_BATCH]
        wanted = ds.field("video_id").isin(batch) & ds.field("frame_index").isin(sorted({middles[v] for v in batch}))
        by_id: dict[str, list[dict]] = {}
        for row in dataset.to_table(columns=list(DRAWN[family][1]), filter=wanted).to_pylist():
            if row["frame_index"] == middles[row["video_id"]]:
                by_id.setdefault(row["video_id"], []).append(row)
        tiles += [(v, shrink(contact_tile(by_id[v], (videos or {}).get(v), target_fps, max_size))) for v in batch]
    Path(sheet).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(tiles)).save(sheet)
    return len(tiles)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("example:\n  motionfleet render runs/gen --ids 0,1,2 --out runs/gen-videos\n"
                "  motionfleet render runs/recon --contact-sheet runs/recon-sheet.png\n"
                "  (files are named FAMILY-<id>-<digest of the id>.mp4; the command prints one line per id: ID -> FILE)")
    p.add_argument("job", help="a job folder (the --out of generate, reconstruct or refine)")
    p.add_argument("--ids", default=None, type=lambda s: [i for i in s.split(",") if i], metavar="ID[,ID...]",
                   help="comma-separated sample ids (dhvae, scorehoi) or video ids (socialmirror) "
                        "(required, except with --contact-sheet: then every video)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for the MP4 files (required with --ids)")
    p.add_argument("--contact-sheet", default=None, metavar="PNG",
                   help="reconstruct jobs: one PNG with a tile per video (the middle frame, people drawn on it) "
                        "(default: none)")
    p.add_argument("--body-models", default=None, metavar="DIR",
                   help="scorehoi jobs run on the licensed SMPL-H: the folder the job was given (checked by sha256) "
                        "(default: the synthetic stand-in the job used)")


def main(args) -> int:
    if args.contact_sheet is None and (args.ids is None or args.out is None):
        raise UsageError("give --ids ID[,ID...] and --out DIR for videos, or --contact-sheet PNG (reconstruct jobs)")
    if args.ids is not None and args.out is not None:
        for sample_id, path in render_job(args.job, args.ids, args.out, args.body_models).items():
            print(f"{sample_id} -> {path}")
    elif args.out is not None or (args.ids is not None and args.contact_sheet is None):
        raise UsageError("--ids and --out go together (the MP4s of those ids into that folder)")
    if args.contact_sheet is not None:
        tiles = write_contact_sheet(args.job, args.contact_sheet, args.ids)
        print(f"contact sheet ({tiles} videos) -> {args.contact_sheet}")
    return 0
