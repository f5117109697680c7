"""``motionfleet render DIR --ids ... --out FOLDER``: selected result rows as short MP4 videos.

The job's family is the one its job.json records; how its rows are drawn is what that family
registers (``registry.Render``: ``dhvae/render.py``, ``scorehoi/render.py``,
``socialmirror/render.py``). This module reads the rows to draw (only their ids' rows, only the
columns the drawing reads) and holds the kit the drawings share: one fixed oblique camera, skeletons
along SMPL's kinematic tree, the ground, facing arrows, a matplotlib canvas (Agg) read back as RGB,
and the H.264 encoder (PyAV, yuv420p, even sizes).
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
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = self.fig.canvas
        assert isinstance(canvas, FigureCanvasAgg)  # __init__ chose the Agg backend: its figures draw on Agg canvases
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

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


# --- the command ---------------------------------------------------------------------------

DIGEST_CHARS = 10  # of the raw id's sha256 in a file name: distinct ids never share a file


def prompt_title(sample_id: str, prompt: str, width: int = 70) -> str:
    """The sample's prompt as the title, wrapped to two lines (the rest cut with an ellipsis)."""
    import textwrap

    return "\n".join(textwrap.wrap(f"{sample_id}: {prompt}", width, max_lines=2, placeholder=" ..."))


def recorded_job(job: Path) -> dict:
    """The job description its job.json keeps (family, model, body model, inputs)."""
    from motionfleet.core.jobfolder.sink import read_job
    from motionfleet.core.jobfolder.storage import Storage

    return read_job(Storage(job))["job"]


def drawn_families():
    """The families that register a drawing (``registry.Render``), by name."""
    from motionfleet.core import registry

    return {family.name: family for family in registry.registering("render")}


def job_family(job: Path):
    """The family job.json records, when it registers a drawing."""
    name, drawn = recorded_job(job).get("family"), drawn_families()
    if name not in drawn:
        raise UsageError(f"the job's results are not of a family render knows ({', '.join(drawn)}): job.json records "
                         f"{name!r}")
    return drawn[name]


def committed_files(job: Path) -> list[Path]:
    """The job's committed result files, in shard order (uncommitted attempts left out)."""
    from motionfleet.core.jobfolder.sink import RESULTS_DIR, committed_records
    from motionfleet.core.jobfolder.storage import Storage

    if not (job / RESULTS_DIR).is_dir():
        raise UsageError(f"{job} is not a job folder (no results/); give the --out folder of a job")
    records = committed_records(Storage(str(job)))
    return [job / record["files"][RESULTS_DIR]["path"] for _, record in sorted(records.items())]


def results_of(job: Path):
    """(its family, a pyarrow dataset of the committed results); nothing is read yet."""
    import pyarrow.dataset as ds

    files = committed_files(job)
    if not files:
        raise UsageError(f"{job} has no results to render")
    return job_family(job), ds.dataset([str(f) for f in files], format="parquet")


def first_ids(job: Path, count: int) -> list[str]:
    """The first ``count`` distinct ids in shard order, reading the id column alone and stopping there."""
    import pyarrow.parquet as pq

    family, _ = results_of(job)
    ids: dict[str, None] = {}
    for path in committed_files(job):
        for batch in pq.ParquetFile(path).iter_batches(columns=[family.id_column]):
            ids.update(dict.fromkeys(batch.column(0).to_pylist()))
            if len(ids) >= count:
                return list(ids)[:count]
    return list(ids)


def rows_by_id(job: Path, ids: list[str]):
    """(family, id -> its rows): only the rows of ``ids`` and only the columns drawing reads."""
    import pyarrow.dataset as ds

    family, dataset = results_of(job)
    id_column = family.id_column
    table = dataset.to_table(columns=[c for c in family.render.columns if c in dataset.schema.names],
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


def render_job(job: str | Path, ids: list[str], out: str | Path, **values) -> dict[str, Path]:
    """One MP4 per selected id into ``out``; returns id -> the file written. ``values``: the
    family's own render settings by name (e.g. scorehoi's ``body_models``)."""
    job, out = Path(job), Path(out)
    family, by_id = rows_by_id(job, ids)
    out.mkdir(parents=True, exist_ok=True)
    draw = family.render.videos(job, values)
    written = {}
    for i in dict.fromkeys(ids):
        path = out / video_name(family.name, i)
        draw(by_id[i], path)
        written[i] = path
    return written


def write_contact_sheet(job: str | Path, sheet: str | Path, ids: Optional[list[str]] = None) -> int:
    """One PNG of the job's results, a tile per video (``ids``, or every one), where its family draws
    one (reconstruct); returns the tile count."""
    job = Path(job)
    family, dataset = results_of(job)
    if family.render.contact_sheet is None:
        sheets = [f.command for f in drawn_families().values() if f.render.contact_sheet]
        raise UsageError(f"--contact-sheet draws {' and '.join(sheets)} jobs (one tile per video); this job is {family.name}")
    return family.render.contact_sheet(job, dataset, sheet, ids)


def render_options() -> list:
    """Each family's own render flags, once."""
    return list({o.name: o for family in drawn_families().values() for o in family.render.options}.values())


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
    for option in render_options():
        p.add_argument(option.flag, dest=option.name, default=None, metavar=option.metavar, help=option.help)


def main(args) -> int:
    if args.contact_sheet is None and (args.ids is None or args.out is None):
        raise UsageError("give --ids ID[,ID...] and --out DIR for videos, or --contact-sheet PNG (reconstruct jobs)")
    if args.ids is not None and args.out is not None:
        values = {o.name: getattr(args, o.name) for o in render_options()}
        for sample_id, path in render_job(args.job, args.ids, args.out, **values).items():
            print(f"{sample_id} -> {path}")
    elif args.out is not None or (args.ids is not None and args.contact_sheet is None):
        raise UsageError("--ids and --out go together (the MP4s of those ids into that folder)")
    if args.contact_sheet is not None:
        tiles = write_contact_sheet(args.job, args.contact_sheet, args.ids)
        print(f"contact sheet ({tiles} videos) -> {args.contact_sheet}")
    return 0
