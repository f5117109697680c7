"""How ``motionfleet render`` draws a reconstruct job: the two people's 24 SMPL joints
(``joints_3d``) projected into each frame of the video with the job's camera, a side view beside it
(``socialmirror.overlay``); grey frames when the job's corpus is no longer on disk.
``--contact-sheet`` draws one frame per video in a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from motionfleet.core.registry import Render
from motionfleet.render import MAX_FRAMES, committed_files, recorded_job, write_mp4

COLUMNS = ("video_id", "frame_index", "person", "joints_3d")
GREY_FRAME = (360, 640, 3)  # stands in for frames that cannot be decoded: the size of a 640-pixel decode
SHEET_BATCH = 256  # videos whose middle-frame rows are read at once


def people(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(output frame indices (T,), (T, 2, 24, 3) camera-frame joints) of one video's rows, frame
    order, the first ``MAX_FRAMES`` frames; NaN where a person has no row."""
    frames = np.array(sorted({r["frame_index"] for r in rows})[:MAX_FRAMES], dtype=np.int64)
    index = {int(f): i for i, f in enumerate(frames)}
    joints = np.full((len(frames), 2, 24, 3), np.nan, np.float32)
    for r in rows:
        if r["frame_index"] in index:
            joints[index[r["frame_index"]], r["person"]] = np.asarray(r["joints_3d"], np.float32).reshape(24, 3)
    return frames, joints


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


def overlay_frames(joints: np.ndarray, frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """Each frame with its people drawn on it, the clip's side view beside it."""
    from motionfleet.socialmirror.overlay import SideView, side_by_side, side_size

    side = None
    for rgb, pair in zip(frames, joints):
        side = side or SideView(joints, side_size((rgb.shape[1], rgb.shape[0])))
        yield side_by_side(rgb, pair, side)


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
    frames, joints = people(rows)
    return write_mp4(path, overlay_frames(joints, source_frames(video, frames, target_fps, max_size)), fps=round(target_fps))


def videos(job: Path, values: dict) -> Callable[[list[dict], Path], int]:
    paths, target_fps, max_size = reconstruct_source(job)
    return lambda rows, path: render_socialmirror(rows, path, (paths or {}).get(rows[0]["video_id"]), target_fps, max_size)


def contact_tile(rows: list[dict], video: Optional[Path], target_fps: float, max_size: Optional[int]) -> np.ndarray:
    """The rendered middle frame of one video's rows (the rows of one frame are enough)."""
    frames, joints = people(rows)
    middle = len(frames) // 2
    source = source_frames(video, frames[middle:middle + 1], target_fps, max_size)
    return next(iter(overlay_frames(joints[middle:middle + 1], source)))


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


def write_contact_sheet(job: Path, dataset, sheet: str | Path, ids: Optional[list[str]] = None) -> int:
    """One tile per video (``ids``, or every video) of the job's results ``dataset``, its middle frame
    with the people drawn on it, as one PNG; returns the tile count."""
    import pyarrow.dataset as ds
    from PIL import Image

    from motionfleet.core.options import UsageError
    from motionfleet.socialmirror.overlay import contact_sheet, shrink

    middles = middle_frames(job)
    chosen = list(dict.fromkeys(ids)) if ids else list(middles)
    missing = [i for i in chosen if i not in middles]
    if missing:
        raise UsageError(f"no rows with id {', '.join(missing[:8])} in {job}")
    paths, target_fps, max_size = reconstruct_source(job)
    tiles = []
    for start in range(0, len(chosen), SHEET_BATCH):
        batch = chosen[start:start + SHEET_BATCH]
        wanted = ds.field("video_id").isin(batch) & ds.field("frame_index").isin(sorted({middles[v] for v in batch}))
        by_id: dict[str, list[dict]] = {}
        for row in dataset.to_table(columns=list(COLUMNS), filter=wanted).to_pylist():
            if row["frame_index"] == middles[row["video_id"]]:
                by_id.setdefault(row["video_id"], []).append(row)
        tiles += [(v, shrink(contact_tile(by_id[v], (paths or {}).get(v), target_fps, max_size))) for v in batch]
    Path(sheet).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(tiles)).save(sheet)
    return len(tiles)


RENDER = Render(columns=COLUMNS, videos=videos, contact_sheet=write_contact_sheet)
