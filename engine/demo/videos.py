"""Synthetic two-person videos and damaged files (empty, corrupt, truncated, audio-only) for tests
and ``reconstruct --demo``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

from motionfleet.socialmirror.video import Tracks, write_tracks

# ----------------------------------------------------------------------------- synthetic videos

DEMO_COLOURS = ((220, 40, 40), (40, 80, 220))  # person 0 red, person 1 blue

# A synthetic video is the same file each time it is written, so a job on a rewritten corpus (every
# ``reconstruct --demo``) gives the same rows. libx264 with its default threads does not give the
# same pixels run to run (measured on a 64-frame 320x240 demo clip: 3 different decodings in 6
# writes; with one thread, 6 identical files); bitexact leaves the random segment id and the date
# out of a Matroska file.
ONE_ENCODER_THREAD = {"threads": "1"}
BITEXACT_MUXER = {"fflags": "+bitexact"}


def demo_boxes(num_frames: int = 48, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """``(num_frames, 2, 4)`` float32 boxes of the demo's two figures, walking towards each other
    from the left and right thirds with a slight bob."""
    width, height = size
    progress = np.linspace(0.0, 1.0, num_frames)
    figure_h, figure_w = 0.6 * height, 0.2 * height
    bob = 0.03 * height * np.abs(np.sin(4 * np.pi * progress))
    bottom = 0.92 * height - bob
    boxes = np.empty((num_frames, 2, 4), dtype=np.float32)
    for person, centre in enumerate((0.2 + 0.2 * progress, 0.8 - 0.2 * progress)):
        cx = centre * width
        boxes[:, person] = np.stack([cx - figure_w / 2, bottom - figure_h, cx + figure_w / 2, bottom], axis=1)
    return boxes


def demo_image(boxes: np.ndarray, size: tuple[int, int], seed: int = 0, colours=DEMO_COLOURS) -> np.ndarray:
    """``(H, W, 3)`` uint8 frame: a seed-coloured gradient background with a head (circle) and
    body (ellipse) filling each of the ``boxes`` ``(P, 4)``, in ``colours`` ``(P, 3)``, later ones in
    front; a box of NaN (a figure off the frame) draws nothing."""
    width, height = size
    base = np.random.default_rng(seed).integers(60, 160, size=3)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    image = (base + 40 * (ys / height)[..., None]).astype(np.uint8)
    for (x0, y0, x1, y1), colour in zip(boxes, colours, strict=True):
        if np.isnan(x0):
            continue
        radius, cx = (x1 - x0) / 2, (x0 + x1) / 2
        head = (xs - cx) ** 2 + (ys - y0 - radius) ** 2 <= radius**2
        body_top = y0 + 2 * radius
        half_h = (y1 - body_top) / 2
        body = ((xs - cx) / radius) ** 2 + ((ys - body_top - half_h) / half_h) ** 2 <= 1
        image[head | body] = colour
    return image


def write_demo_video(
    path: str | os.PathLike,
    num_frames: int = 48,
    fps: int = 30,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    *,
    codec: str = "libx264",
    faststart: bool = False,
    keyframe_interval: int | None = None,
) -> None:
    """Write the two-figure demo (see ``demo_boxes``); the container follows the file suffix.

    ``size`` is ``(width, height)``, even for libx264. ``faststart`` puts an mp4's index in
    front of the frames, as streaming encoders do (a truncated copy then still opens).
    ``keyframe_interval`` caps the frames between keyframes (the encoder's default otherwise).
    """
    options = {"movflags": "+faststart"} if faststart else {}
    with encoding(path, codec, fps, size, options) as (container, stream):
        if keyframe_interval:
            stream.codec_context.gop_size = keyframe_interval
        for frame_boxes in demo_boxes(num_frames, size):
            frame = av.VideoFrame.from_ndarray(demo_image(frame_boxes, size, seed), format="rgb24")
            container.mux(stream.encode(frame))


@contextmanager
def encoding(path: str | os.PathLike, codec: str, fps: int, size: tuple[int, int],
             container_options: dict | None = None) -> Iterator[tuple[av.container.OutputContainer, av.VideoStream]]:
    """(container, yuv420p video stream) of a new synthetic video file that is the same bytes each
    time it is written (``ONE_ENCODER_THREAD``, ``BITEXACT_MUXER``); the encoder is flushed on exit."""
    with av.open(str(path), "w", options={**(container_options or {}), **BITEXACT_MUXER}) as container:
        stream = container.add_stream(codec, rate=fps, options=ONE_ENCODER_THREAD)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        yield container, stream
        container.mux(stream.encode())


# Person 0 red, person 1 blue, the third (smaller: further away) green.
TRACKING_COLOURS = ((220, 40, 40), (40, 80, 220), (40, 200, 60))
TRACKING_SIZE = (128, 96)


def tracking_scene_boxes(num_frames: int = 40, size: tuple[int, int] = TRACKING_SIZE) -> np.ndarray:
    """``(num_frames, 3, 4)`` float32 boxes of three figures, NaN while one is wholly off the frame.

    Figures 0 and 1 walk across each other (1 passes behind 0 halfway); figure 2, half their
    height and higher up (further away), walks off the right edge and comes back, off the frame
    for about the middle two thirds of the frames.
    """
    width, height = size
    progress = np.linspace(0.0, 1.0, num_frames)
    centres = np.stack([0.2 + 0.55 * progress, 0.8 - 0.55 * progress, 0.72 + 0.6 * np.sin(np.pi * progress)], axis=1) * width
    figure_h = np.array([0.6, 0.6, 0.3]) * height
    bottom = np.array([0.92, 0.92, 0.4]) * height - 0.03 * height * np.abs(np.sin(4 * np.pi * progress))[:, None]
    half_w = figure_h / 6
    boxes = np.stack([centres - half_w, bottom - figure_h, centres + half_w, bottom], axis=2).astype(np.float32)
    boxes[boxes[..., 0] >= width] = np.nan
    return boxes


def crowd_detections(num_frames: int, people: int, seed: int = 0, stay: int = 300) -> dict[int, np.ndarray]:
    """``{frame: (N, 5)}`` float32 detections ``x0, y0, x1, y1, score`` of a crowd on a 1920 x 1080
    frame: about ``people`` in view at a time, each walking sideways for ``stay`` frames (1 px
    jitter, 150 to 350 px tall), arrivals spread over the video; scores uniform in 0.5 to 0.95."""
    rng = np.random.default_rng(seed)
    total = people * num_frames // stay
    starts = rng.integers(-stay, num_frames, total)
    x0, y0 = rng.uniform(0, 1800, total), rng.uniform(100, 700, total)
    speed, height = rng.normal(0, 2, total), rng.uniform(150, 350, total)
    detections = {}
    for frame in range(num_frames):
        here = np.flatnonzero((starts <= frame) & (frame < starts + stay))
        x = x0[here] + speed[here] * (frame - starts[here]) + rng.normal(0, 1, len(here))
        y = y0[here] + rng.normal(0, 1, len(here))
        h = height[here]
        detections[frame] = np.stack([x, y, x + h * 0.4, y + h, rng.uniform(0.5, 0.95, len(here))], 1).astype(np.float32)
    return detections


def write_tracking_video(path: str | os.PathLike, num_frames: int = 40, fps: int = 30, size: tuple[int, int] = TRACKING_SIZE,
                         seed: int = 0) -> np.ndarray:
    """Write the three-figure scene of ``tracking_scene_boxes`` (libx264, yuv420p) and return its
    ``(num_frames, 3, 4)`` ground-truth boxes in source-video pixels."""
    boxes = tracking_scene_boxes(num_frames, size)
    back_to_front = [2, 1, 0]
    with encoding(path, "libx264", fps, size) as (container, stream):
        for frame_boxes in boxes:
            image = demo_image(frame_boxes[back_to_front], size, seed, [TRACKING_COLOURS[i] for i in back_to_front])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    return boxes


def write_demo_tracks(path: str | os.PathLike, num_frames: int = 48, size: tuple[int, int] = (160, 120)) -> None:
    """Write the demo video's boxes as a track file (every source frame, both people)."""
    boxes = demo_boxes(num_frames, size).astype(np.float64)
    frames = np.arange(num_frames, dtype=np.int64)
    write_tracks(path, Tracks((frames, frames), (boxes[:, 0], boxes[:, 1])))


def write_empty_file(path: str | os.PathLike) -> None:
    """A zero-byte file (an interrupted copy)."""
    Path(path).write_bytes(b"")


def write_corrupt_file(path: str | os.PathLike, num_bytes: int = 4096, seed: int = 0) -> None:
    """Random bytes under a video name."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, num_bytes, dtype=np.uint8).tobytes())


def write_truncated_video(path: str | os.PathLike, keep_fraction: float = 0.5, **demo_kwargs) -> None:
    """A demo mp4 (index in front) cut after the first ``keep_fraction`` of its frame data:
    0 leaves a readable header and no frame, 0.5 about half the frames."""
    write_demo_video(path, faststart=True, **demo_kwargs)
    file = Path(path)
    data = file.read_bytes()
    start = _frame_data_start(data)
    file.write_bytes(data[: start + int((len(data) - start) * keep_fraction)])


def write_damaged_video(path: str | os.PathLike, at_fraction: float = 0.5, **demo_kwargs) -> None:
    """A demo mp4 whose frame data is zeroed from ``at_fraction`` for a fifth of its length,
    so decoding fails part-way (a damaged disk sector or a bad transfer)."""
    write_demo_video(path, faststart=True, **demo_kwargs)
    file = Path(path)
    data = bytearray(file.read_bytes())
    start = _frame_data_start(data)
    first = start + int((len(data) - start) * at_fraction)
    last = min(len(data), first + (len(data) - start) // 5)
    data[first:last] = bytes(last - first)
    file.write_bytes(bytes(data))


def _frame_data_start(mp4: bytes | bytearray) -> int:
    """Offset of the first byte after the ``mdat`` box header of an mp4 written by PyAV."""
    position = mp4.find(b"mdat")
    if position < 0:
        raise ValueError("no mdat box: not an mp4 file")
    return position + 4


def write_audio_only(path: str | os.PathLike, duration_s: float = 1.0, sample_rate: int = 16000) -> None:
    """An AAC tone with no video stream; the container follows the suffix (.mp4, .m4a, .mkv)."""
    times = np.arange(int(duration_s * sample_rate)) / sample_rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * times)).astype(np.float32)[None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


DEMO_VIDEOS = (("two_people_a.mp4", 48, 0, True), ("two_people_b.mp4", 40, 1, True), ("two_people_c.mkv", 36, 2, False))
DEMO_SIZE = (320, 240)


def write_demo_corpus(folder: str | Path) -> Path:
    """Three small synthetic videos of two figures walking towards each other (two with track
    files, one without); files already there are kept, so a rerun sees the same corpus."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames, seed, with_tracks in DEMO_VIDEOS:
        video = folder / name
        if not video.exists():
            tmp = video.with_name(f"tmp-{name}")
            write_demo_video(tmp, frames, 30, DEMO_SIZE, seed)
            os.replace(tmp, video)
        if with_tracks and not video.with_suffix(".tracks.csv").exists():
            write_demo_tracks(video.with_suffix(".tracks.csv"), frames, DEMO_SIZE)
    return folder
