"""reconstruct's tracks stage: per video, find the people, track them and keep the pair.

Runs once per video before its clips (a stage shard ``video-<n>``, ``core.execution.stages``),
on the worker's device::

    decode         the frames the clips see (target fps), capped at the detector's test size, in a
                   thread of its own a few detector calls ahead (``DECODE_AHEAD``)
    detect         YOLOX on every ``detect_every``-th frame and the last, 8 frames a call (``detect``)
    track          ByteTrack over the whole video, a chunk at a time in a thread of its own while the
                   detector runs the next, then the pair (``tracking``)
    rows           per frame and person its box; a frame where the pair is lost, one row of person -1

Every clip shard of the video reads these rows (``stage_tracks``): a video's identities are
computed once and never depend on the shard size, the worker count or the batch size. A video
where fewer than two people are ever found is rejected here with the reason, and its clip shards
reject their clips with the same reason; a clip that holds a frame where the pair is lost (a gap
longer than ``max_gap``) is rejected (``pair_lost``) and the video's other clips go on.

Where CloseInt's demo differs: it tracks with SAMURAI from the first frame's boxes; we track
everyone with ByteTrack and keep the closest pair, as SocialMirror's supplementary (sec. 1.1) does.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import torch

from motionfleet.common.weights import weights_description
from motionfleet.common.yolox import load_yolox
from motionfleet.core.errors import RejectedInput
from motionfleet.core.execution.stages import StageFiles
from motionfleet.core.io import rejections
from motionfleet.core.io.prefetch import Prefetch, one_torch_thread
from motionfleet.core.runtime.batching import fixed_thread_pool
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.socialmirror.detect import Detector, DetectorSettings
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec
from motionfleet.socialmirror.tracking import PairSettings, PairTracking
from motionfleet.socialmirror.video import Frame, Tracks, check_index, iter_frames, probe_video

STAGE = "tracks"
STEPS = ("decode", "detect", "track")  # the stage's own seconds, each with its frames/s in the report
# Detector calls' worth of frames decoded ahead: decoding (a CPU thread) runs while the detector
# works, as the clip stages' decoding does, and two chunks in flight hold it busy through the
# hand-over; at most 3 chunks of frames are held (one being decoded), 3 x 8 frames at 1440 x 810
# is 84 MB.
DECODE_AHEAD = 2
LOST = -1  # the person of a row that marks a frame where the pair is lost
SCHEMA = pa.schema([("video_id", pa.string()), ("frame", pa.int64()), ("person", pa.int8()), ("x0", pa.float64()),
                    ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64())])


@dataclass(frozen=True)
class VideoToTrack:
    """A tracks-stage item: one whole video."""

    video_id: str
    path: str


@dataclass(frozen=True)
class StageTracks:
    """What a clip shard reads of its video's tracks stage: the pair's tracks and the source frames
    where the pair is lost."""

    tracks: Tracks
    lost: np.ndarray


def stage_tracks(files: Optional[StageFiles]) -> StageTracks:
    """The tracks a video's stage shard committed; ``RejectedInput`` with the stage's reason when it
    rejected the video, or when it failed after its retries (``files`` None)."""
    if files is None:
        raise RejectedInput(f"tracks_failed: the {STAGE} stage failed on this video after its retries "
                            f"(see stages/{STAGE}/failed); rerun the job to try it again")
    table = files.read()
    if table.num_rows == 0:
        reasons = files.read("rejected").column("reason").to_pylist()
        raise RejectedInput(reasons[0] if reasons else f"no_pair: the {STAGE} stage found no pair")
    return tracks_from_table(table)


def tracks_from_table(table: pa.Table) -> StageTracks:
    frame, person = table.column("frame").to_numpy(), table.column("person").to_numpy()
    boxes = np.stack([table.column(c).to_numpy() for c in ("x0", "y0", "x1", "y1")], axis=1)
    per_person = [np.flatnonzero(person == p) for p in (0, 1)]
    tracks = Tracks((frame[per_person[0]], frame[per_person[1]]), (boxes[per_person[0]], boxes[per_person[1]]),
                    source="detector")
    return StageTracks(tracks, np.sort(frame[person == LOST]))


def tracks_table(video_id: str, tracks: Tracks, lost_frames: np.ndarray) -> pa.Table:
    """Rows of the pair's boxes (person 0, then 1, by frame) and of the lost frames."""
    columns: dict[str, list[np.ndarray]] = {"frame": [], "person": [], "boxes": []}
    for person in (0, 1):
        columns["frame"].append(tracks.frames[person])
        columns["person"].append(np.full(len(tracks.frames[person]), person, dtype=np.int8))
        columns["boxes"].append(np.asarray(tracks.boxes[person], dtype=np.float64).reshape(-1, 4))
    columns["frame"].append(np.asarray(lost_frames, dtype=np.int64))
    columns["person"].append(np.full(len(lost_frames), LOST, dtype=np.int8))
    columns["boxes"].append(np.full((len(lost_frames), 4), np.nan))
    frames, boxes = np.concatenate(columns["frame"]), np.concatenate(columns["boxes"])
    return pa.table({"video_id": pa.array([video_id] * len(frames), pa.string()), "frame": frames,
                     "person": np.concatenate(columns["person"]),
                     **{c: boxes[:, k] for k, c in enumerate(("x0", "y0", "x1", "y1"))}}, schema=SCHEMA)


def lost_in_clip(lost: np.ndarray, source_indices: np.ndarray, owned: np.ndarray) -> list[int]:
    """The source frames of a clip's owned slots where the pair is lost."""
    return sorted(set(source_indices[owned & np.isin(source_indices, lost)].tolist()))


class VideoTracker:
    """The tracks stage's runner: ``run((video,))`` -> (rows, rejected, timings)."""

    def __init__(self, spec: ReconstructSpec, settings: ReconstructSettings):
        self.settings = settings
        detection = DetectorSettings(test_size=settings.detector_size, confidence=settings.detector_confidence)
        self.detector = Detector(load_yolox(spec.detector_weights), detection, backend=settings.backend,
                                 device=settings.device, precision=settings.precision,
                                 weights=weights_description(spec.detector_weights, 0), onnx_dir=settings.onnx_dir)
        self.max_side = max(detection.test_size)
        # oneDNN's convolutions give other bits with another thread count (measured: another pair
        # picked among near-tied boxes in a Ray actor), so on CPU each batch runs on one torch thread
        # and batches side by side keep the cores busy (``batching.fixed_thread_pool``).
        on_cpu = self.detector.device.type == "cpu"
        self.pool = fixed_thread_pool(torch.get_num_threads()) if on_cpu else None
        self.batches_at_once = max(1, torch.get_num_threads()) if on_cpu else 1

    def warm_up(self) -> None:
        pass

    def run(self, items: tuple[VideoToTrack, ...]) -> tuple[pa.Table, pa.Table, Timings]:
        (video,) = items
        timings = Timings({**dict.fromkeys(STEPS, 0.0), "decode_wait": 0.0}, {"frames": 0, "frames_detected": 0})
        try:
            rows, rejected = self.track(video, timings), []
        except RejectedInput as err:
            rows = SCHEMA.empty_table()
            rejected = [rejections.rejected_row("video_id", video.video_id, 0, {"path": video.path}, err.reason)]
        return rows, rejections.rejected_table(rejected, "video_id"), timings

    def track(self, video: VideoToTrack, timings: Timings) -> pa.Table:
        """Detect, and track each chunk of detections in a thread of its own while the detector
        runs the next (one thread: ByteTrack steps frame after frame); then the pair."""
        tracking = PairTracking(PairSettings(max_gap=self.settings.max_gap))

        def track_chunk(detections: dict[int, np.ndarray]) -> None:
            start = time.perf_counter()
            tracking.add(detections)
            timings.seconds["track"] += time.perf_counter() - start  # only this thread adds to it

        with ThreadPoolExecutor(1, thread_name_prefix="track") as tracker:
            tracked: list[Future] = []
            seen = self.detect(video, timings, lambda detections: tracked.append(tracker.submit(track_chunk, detections)))
            for chunk in tracked:
                chunk.result()
        start = time.perf_counter()
        pair = tracking.pair(num_frames=int(seen[-1]) + 1)
        lost = np.zeros(len(seen), dtype=bool)
        for first, last in pair.lost:
            lost |= (seen >= first) & (seen <= last)
        timings.seconds["track"] += time.perf_counter() - start
        return tracks_table(video.video_id, pair.tracks, seen[lost])

    def detect(self, video: VideoToTrack, timings: Timings, found: Callable[[dict[int, np.ndarray]], None]) -> np.ndarray:
        """Every decoded frame's source index; ``found`` is called, chunk after chunk in frame order,
        with source frame -> (N, 5) boxes in source pixels, of every ``detect_every``-th decoded
        frame and the last (``tracking``: frames after the last detection hold its box). Frames are
        decoded in a thread while the detector runs."""
        probe_video(video.path)
        check_index(video.path)
        seen: list[int] = []
        at_once = self.detector.settings.batch_size * self.batches_at_once
        decode = partial(chunks_to_detect, video.path, self.settings.target_fps, self.max_side, self.settings.detect_every,
                         at_once)
        with Prefetch(one_torch_thread(decode), DECODE_AHEAD) as chunks:
            for chunk in chunks:
                timings.seconds["decode"] += chunk.decode_s
                seen += chunk.seen
                found(self.detect_frames(chunk.to_detect, timings))
        timings.seconds["decode_wait"] += chunks.wait_s
        timings.counts["frames"] += len(seen)
        return np.array(seen, dtype=np.int64)

    def detect_frames(self, frames: list, timings: Timings) -> dict[int, np.ndarray]:
        """Boxes of ``frames`` in source pixels, a detector batch per pool thread."""
        start = time.perf_counter()
        size = self.detector.settings.batch_size
        batches = [[f.rgb for f in frames[i:i + size]] for i in range(0, len(frames), size)]
        found = [boxes for batch in (self.pool.map if self.pool else map)(self.detector, batches) for boxes in batch]
        timings.seconds["detect"] += time.perf_counter() - start
        timings.counts["frames_detected"] += len(frames)
        return {f.source_index: to_source_pixels(boxes, f.scale) for f, boxes in zip(frames, found)}


@dataclass(frozen=True)
class DecodedChunk:
    """Decoded frames handed to the detector at once: ``seen`` the source index of every frame
    decoded, ``to_detect`` those the detector runs on, ``decode_s`` the seconds they took."""

    seen: list[int]
    to_detect: list[Frame]
    decode_s: float


def chunks_to_detect(path: str, target_fps: float, max_side: int, every: int, at_once: int) -> Iterator[DecodedChunk]:
    """The video's frames in chunks holding ``at_once`` frames to detect: every ``every``-th frame
    and the last (the last chunk may hold fewer, or none)."""
    seen: list[int] = []
    to_detect: list[Frame] = []
    frame = None
    start = time.perf_counter()
    for frame in iter_frames(path, target_fps, max_size=max_side):
        seen.append(frame.source_index)
        if frame.index % every == 0:
            to_detect.append(frame)
        if len(to_detect) == at_once:
            yield DecodedChunk(seen, to_detect, time.perf_counter() - start)
            seen, to_detect, start = [], [], time.perf_counter()
    if frame is not None and frame.index % every:
        to_detect.append(frame)
    yield DecodedChunk(seen, to_detect, time.perf_counter() - start)


def to_source_pixels(boxes: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """(N, 5) boxes in decoded-frame pixels -> source-video pixels (the score column kept)."""
    sx, sy = scale
    return boxes / np.array([sx, sy, sx, sy, 1.0])
