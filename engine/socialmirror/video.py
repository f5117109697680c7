"""Video corpus -> two-person clips for image-conditioned interaction models (SocialMirror).

One video at a time, memory bounded by one clip (``clip_len`` decoded frames), never by the
length of a video or the size of the corpus::

    for item in list_videos(corpus):
        try:
            info = probe_video(item.path)
            check_index(item.path)
            tracks = read_tracks(item.track_path, (info.width, info.height)) if item.track_path else None
            stats = DecodeStats()
            frames = iter_frames(item.path, target_fps=30, max_size=640, stats=stats)
            for clip in iter_clips(frames, clip_len=16, stride=16, tracks=tracks):
                people = crop_people(clip)          # (2, L, 3, 224, 224) float32
                ...                                 # write only the frames where clip.owned
        except RejectedInput as err:
            ...                                     # rejected row: (item.video_id, err.reason)

Rejection reasons read ``"<code>: <detail>"`` with code one of ``missing_file``, ``not_a_file``
(a URL, an FFmpeg protocol such as ``concat:``, a FIFO or anything but a regular file),
``bad_name`` (a file name that is not UTF-8), ``empty_file``,
``not_a_video`` (unreadable or corrupt container), ``no_video_stream`` (audio-only),
``no_frame_rate``, ``too_large`` (frame size or pixel rate over the limits), ``too_long``,
``no_frames`` (nothing decodable, e.g. a file truncated inside its first frame),
``truncated`` (the file ends before the frame data its index lists),
``timestamp_gap`` (a frame held longer than ``MAX_FRAME_GAP_S``),
``decode_error`` (the stream broke after some frames) and ``bad_tracks``.

Conventions:

* Images are ``(H, W, 3)`` uint8 RGB; pixel ``(row y, column x)`` covers the square
  ``[x, x + 1) x [y, y + 1)``, so a box ``(x0, y0, x1, y1)`` of the whole frame is ``(0, 0, W, H)``.
* Timestamps are seconds since the first decoded frame of the video.
* A *source* frame index counts decoded frames in decode order from 0 (what a detector
  that reads the video front to back counts); an *output* frame index counts frames after
  resampling to the target fps.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from motionfleet.core.errors import MissingFile, RejectedInput
from motionfleet.core.io.inputs import local_file, open_media, printable, text_lines
from motionfleet.core.options import UsageError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv", ".3gp"}
)
TRACKS_SUFFIX = ".tracks.csv"
TRACK_COLUMNS = ("frame", "person", "x0", "y0", "x1", "y1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Defaults let a 4K, 60 fps, hour-long video through and stop absurd inputs.
MAX_FRAME_PIXELS = 16384 * 16384
MAX_PIXELS_PER_SECOND = 7680 * 4320 * 120  # 8K at 120 fps
MAX_DURATION_S = 24 * 3600.0
# The longest a frame may stay on screen: VFR and screen recordings hold a frame for seconds, a
# longer hold is a broken or hostile timestamp (its repeats would be work the file does not hold).
MAX_FRAME_GAP_S = 10.0

# A decode that ends this much earlier than the container's duration (which may cover a longer
# audio stream) is reported as truncated; against the video stream's own duration, two frames.
TRUNCATION_TOLERANCE_S = 0.5

# Bilinear sampling is fine down to half size; smaller crops first get an antialiased resize.
_MAX_BILINEAR_DOWNSCALE = 2.0


# ----------------------------------------------------------------------------- corpus listing


@dataclass(frozen=True)
class VideoItem:
    """One video of a corpus.

    ``video_id`` is the path relative to the listed folder or manifest folder (POSIX
    separators), or the absolute path for manifest entries outside that folder.
    """

    video_id: str
    path: Path
    track_path: Path | None
    error: str | None = None  # why the video is rejected before it is opened


def list_videos(path: str | os.PathLike) -> list[VideoItem]:
    """List a corpus, sorted by ``video_id``, without opening any video.

    ``path`` is one of:

    * a folder: every file below it (recursively) whose extension is in ``VIDEO_EXTENSIONS``;
    * a ``.txt`` manifest: one video path per line, blank lines and ``#`` comments skipped;
    * a ``.parquet`` manifest: a ``path`` column and an optional ``track_path`` column;
    * a single video file.

    Relative manifest paths are resolved against the manifest's folder. A video without an
    explicit track path gets its sibling ``<name without extension>.tracks.csv`` when that file
    exists. Entries with the same ``video_id`` are kept once (the first). Missing or broken
    videos are listed all the same; ``probe_video`` rejects them one by one.
    """
    root = Path(path)
    if not root.exists():
        raise MissingFile(
            f"video corpus {root} does not exist: pass a folder of videos, a .txt or .parquet "
            "manifest, or a video file"
        )
    suffix = root.suffix.lower()
    entries: Sequence[tuple[Path, Path | None]]  # (video, its tracks file where the manifest names one)
    if root.is_dir():
        entries, base = _folder_entries(root), root
    elif suffix == ".txt":
        entries, base = _txt_entries(root), root.parent
    elif suffix == ".parquet":
        entries, base = _parquet_entries(root), root.parent
    elif suffix in VIDEO_EXTENSIONS:
        entries, base = [(root, None)], root.parent
    else:
        raise ValueError(f"{root}: expected a folder, a .txt or .parquet manifest, or a video file")
    if not entries:
        raise UsageError(f"--videos {root}: names no video; put video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
                         "in the folder or list their paths in a .txt or .parquet manifest, or use --demo")
    return _unique_items(entries, base)


def _folder_entries(folder: Path) -> list[tuple[Path, None]]:
    files = (p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    return [(p, None) for p in files]


def _txt_entries(manifest: Path) -> list[tuple[Path, None]]:
    """Paths are bytes to the filesystem: a line that is not UTF-8 names a file all the same (its id
    then says it is not text, and the video is rejected)."""
    raw = text_lines(manifest.read_bytes(), f"video manifest {manifest}")
    lines = (line.decode("utf-8", "surrogateescape").strip() for line in raw)
    return [(_resolve(manifest.parent, line), None) for line in lines if line and not line.startswith("#")]


def _parquet_entries(manifest: Path) -> list[tuple[Path, Path | None]]:
    table = pq.read_table(manifest)
    if "path" not in table.column_names:
        raise ValueError(f"{manifest}: a parquet manifest needs a 'path' column, found {table.column_names}")
    for column in ("path", "track_path", "caption"):
        if column in table.column_names and not pa.types.is_string(table.schema.field(column).type):
            raise ValueError(f"{manifest}: column {column!r} must hold strings, not {table.schema.field(column).type}")
    paths = table.column("path").to_pylist()
    tracks = table.column("track_path").to_pylist() if "track_path" in table.column_names else [None] * len(paths)
    base = manifest.parent
    return [(_resolve(base, p), _resolve(base, t) if t else None) for p, t in zip(paths, tracks) if p]


def _resolve(base: Path, entry: str) -> Path:
    return Path(os.path.normpath(base / entry))


def _unique_items(entries: Iterable[tuple[Path, Path | None]], base: Path) -> list[VideoItem]:
    items: dict[str, VideoItem] = {}
    for video, track in entries:
        video_id = printable(_video_id(video, base))
        if video_id not in items:
            items[video_id] = VideoItem(video_id, video, track or _sibling_tracks(video), _name_error(video, track))
    return [items[key] for key in sorted(items)]


def _name_error(video: Path, track: Path | None) -> str | None:
    """A path that is not UTF-8 (its undecodable bytes became lone surrogates) cannot be written as
    an id nor passed to FFmpeg as text: the video is rejected, named with the bytes escaped."""
    for path in (video, track):
        if path is not None and printable(str(path)) != str(path):
            return f"bad_name: {printable(str(path))} is not a UTF-8 file name; rename it"
    return None


def _video_id(video: Path, base: Path) -> str:
    absolute = Path(os.path.abspath(video))
    try:
        return absolute.relative_to(os.path.abspath(base)).as_posix()
    except ValueError:
        return absolute.as_posix()


def _sibling_tracks(video: Path) -> Path | None:
    candidate = video.with_name(video.stem + TRACKS_SUFFIX)
    return candidate if candidate.is_file() else None


# ----------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of the first video stream.

    ``num_frames`` is the container's count or, without one, ``duration_s * fps`` rounded;
    ``duration_s`` is None when the container states neither a duration nor a frame count.
    """

    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float | None
    codec: str


def probe_video(
    path: str | os.PathLike,
    *,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_pixels_per_second: float = MAX_PIXELS_PER_SECOND,
    max_duration_s: float = MAX_DURATION_S,
) -> VideoInfo:
    """Read a video's metadata and decode its first frame, or raise ``RejectedInput``.

    Checks, in order: the file exists and is not empty, the container opens, it has a video
    stream (cover art of an audio file does not count), a frame rate, a frame size within
    ``max_frame_pixels``, ``width * height * fps`` within ``max_pixels_per_second``, a duration
    within ``max_duration_s`` (skipped when unknown), and one decodable frame.
    """
    with _open_container(path) as container:
        stream = _video_stream(container)
        info = _stream_info(container, stream)
        _check_limits(info, max_frame_pixels, max_pixels_per_second, max_duration_s)
        _decode_first_frame(container, stream)
    return info


def _local_file(path: str | os.PathLike, what: str) -> Path:
    """``inputs.local_file`` with this module's reason codes."""
    if not os.path.lexists(path):
        raise RejectedInput(f"missing_file: {what} {printable(os.fspath(path))} does not exist")
    try:
        return local_file(path, what)
    except RejectedInput as err:
        raise RejectedInput(f"not_a_file: {err.reason}") from None


def _open_container(path: str | os.PathLike) -> av.container.InputContainer:
    file = _local_file(path, "video")
    if file.stat().st_size == 0:
        raise RejectedInput(f"empty_file: {printable(str(file))} has 0 bytes")
    try:
        return open_media(file, "video", metadata_errors="ignore")
    except (av.FFmpegError, OSError) as err:
        raise RejectedInput(f"not_a_video: cannot open {printable(file.name)} as a media container "
                            f"({_describe(err)})") from err


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    kinds = sorted({s.type for s in container.streams})
    if not kinds:
        raise RejectedInput("not_a_video: the container holds no streams")
    if not streams:
        raise RejectedInput(f"no_video_stream: the file has no video stream (streams: {', '.join(kinds)})")
    return streams[0]


def _frame_rate(stream: av.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise RejectedInput("no_frame_rate: the video stream states no frame rate")
    return Fraction(rate)


def _stream_info(container: av.container.InputContainer, stream: av.VideoStream) -> VideoInfo:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise RejectedInput("not_a_video: the video stream states no frame size")
    fps = _frame_rate(stream)
    duration = _duration_s(container, stream, fps)
    num_frames = stream.frames or (round(duration * fps) if duration is not None else 0)
    return VideoInfo(width, height, float(fps), int(num_frames), duration, stream.codec_context.name)


def _duration_s(container: av.container.InputContainer, stream: av.VideoStream, fps: Fraction) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    if stream.frames:
        return float(stream.frames / fps)
    return None


def _check_limits(info: VideoInfo, max_frame_pixels: int, max_pixels_per_second: float, max_duration_s: float) -> None:
    pixels = info.width * info.height
    if pixels > max_frame_pixels:
        raise RejectedInput(f"too_large: {info.width}x{info.height} frames exceed {max_frame_pixels} pixels")
    if pixels * info.fps > max_pixels_per_second:
        raise RejectedInput(
            f"too_large: {info.width}x{info.height} at {info.fps:g} fps exceeds {max_pixels_per_second:g} pixels/s"
        )
    if info.duration_s is not None and info.duration_s > max_duration_s:
        raise RejectedInput(f"too_long: {info.duration_s:.0f} s exceeds {max_duration_s:.0f} s")


def _decode_first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> None:
    try:
        next(container.decode(stream))
    except StopIteration:
        raise RejectedInput("no_frames: the video stream holds no decodable frame") from None
    except av.FFmpegError as err:
        raise RejectedInput(f"no_frames: the first frame does not decode ({_describe(err)})") from err


def _describe(err: Exception) -> str:
    return printable(getattr(err, "strerror", None) or str(err))


def check_index(path: str | os.PathLike) -> None:
    """Reject a video whose container index (MP4 and MOV list every frame's bytes and time) shows
    a fault that decoding meets only part-way: frame data past the end of the file (a cut copy,
    ``truncated``) or frames more than ``MAX_FRAME_GAP_S`` apart (``timestamp_gap``). Found before
    any shard decodes, the fault rejects the video once, not each shard from the fault on while
    the shards before it write rows. A container without a complete index (Matroska, MPEG-TS)
    passes: decoding still finds its faults. Call after ``probe_video``."""
    with _open_container(path) as container:
        stream = _video_stream(container)
        entries = stream.index_entries
        _check_indexed_bytes(entries[-_INDEX_TAIL:], os.stat(path).st_size)
        if stream.frames and len(entries) == stream.frames and stream.time_base:
            _check_indexed_times(entries, stream)


# Index entries run in decode order; the frame whose data ends last is among the last few (B-frame
# reordering moves a frame by at most x264's 16 reference frames).
_INDEX_TAIL = 64


def _check_indexed_bytes(tail: list, file_size: int) -> None:
    end = max((entry.pos + entry.size for entry in tail if entry.pos >= 0), default=0)
    if end > file_size:
        raise RejectedInput(f"truncated: the file ends at byte {file_size} but its index places frame data up to "
                            f"byte {end} ({100 * file_size / end:.0f} % present)")


def _check_indexed_times(entries, stream: av.VideoStream) -> None:
    """Gaps between the indexed frames' decode times and from the last one to the stream's end (the
    index holds decode times, which start before 0 by the B-frame delay: the duration counts from the first)."""
    times = np.array([entry.timestamp for entry in entries], dtype=np.float64)
    if stream.duration and len(times):
        times = np.append(times, times.min() + stream.duration)
    if stream.time_base is None:
        raise RejectedInput("no_time_base: the video stream states no time base for its frames' timestamps")
    gaps = np.diff(np.sort(times)) * float(stream.time_base)
    if len(gaps) and gaps.max() > MAX_FRAME_GAP_S:
        at = int(gaps.argmax())
        raise RejectedInput(f"timestamp_gap: the index holds a {gaps[at]:.0f} s jump after frame {at} "
                            f"(limit {MAX_FRAME_GAP_S:g} s between frames)")


# ----------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Frame:
    """One output frame: ``index`` (output frame index), ``timestamp_s`` (= index / target_fps),
    ``rgb`` ((H, W, 3) uint8, read-only: a duplicated source frame is the same array),
    ``source_index`` (the source frame shown) and ``scale`` ((sx, sy): ``rgb`` pixels per
    source pixel, 1.0 unless ``max_size`` shrank the video)."""

    index: int
    timestamp_s: float
    rgb: np.ndarray
    source_index: int
    scale: tuple[float, float]


@dataclass
class DecodeStats:
    """Filled in by ``iter_frames`` as it goes.

    ``truncated`` is set when decoding stopped on an error, or when the last decoded frame ends
    more than two frame periods before the video stream's stated duration (more than
    ``TRUNCATION_TOLERANCE_S`` before the container's, when the stream states none): a file
    cut short without an error. ``note`` says which.
    """

    source_frames: int = 0
    output_frames: int = 0
    decoded_s: float = 0.0
    truncated: bool = False
    note: str = ""


def iter_frames(
    path: str | os.PathLike,
    target_fps: float,
    *,
    max_size: int | None = None,
    on_error: str = "raise",
    stats: DecodeStats | None = None,
    start_frame: int = 0,
) -> Generator[Frame, None, None]:
    """Decode a video lazily, resampled to ``target_fps`` by timestamp.

    Output tick ``k`` is at ``k / target_fps`` seconds and shows the source frame whose
    timestamp is nearest (the earlier one on a tie), so source frames are dropped or repeated
    as needed; ticks run while they fall before the end of the last source frame (a 30 fps,
    48-frame video gives 24 frames at 15 fps and 96 at 60 fps). Source frames whose timestamp
    does not increase are skipped. ``max_size`` caps the longer image side (aspect kept,
    area-averaged), which bounds memory for 4K inputs. Call ``probe_video`` first to apply
    the size limits; this function only rejects what it cannot decode.

    A decode error raises ``RejectedInput`` ("no_frames" before any frame, else
    "decode_error"; the frames yielded before it stay valid); with
    ``on_error="truncate"`` an error after the first frame instead ends the stream and sets
    ``stats.truncated``.

    ``start_frame`` > 0 yields output frames from that index on, the same frames a full decode
    gives there, without decoding what lies before the last keyframe ahead of them (a shard in
    the middle of a long video costs its own frames, not everything before it; ``_skip_plan``).
    """
    if target_fps <= 0:
        raise ValueError(f"target_fps must be positive, got {target_fps}")
    if on_error not in ("raise", "truncate"):
        raise ValueError(f"on_error must be 'raise' or 'truncate', got {on_error!r}")
    stats = DecodeStats() if stats is None else stats
    with _open_container(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        period = 1 / _frame_rate(stream)
        skipped, keyframe = _skip_plan(container, stream, Fraction(start_frame) / Fraction(target_fps) - 2 * period)
        frames = _decoded(container, stream, on_error, stats)
        if keyframe is not None:  # a seek may land on an earlier keyframe: those frames are stood in for
            frames = (f for f in frames if f.pts is None or f.pts >= keyframe)
        stand_ins_then_decoded: Iterator[av.VideoFrame | _Skipped] = itertools.chain(skipped, frames)
        timed = _timed_frames(stand_ins_then_decoded, period, stats)
        to_rgb = _RgbConverter(max_size)
        for index, tick, (source_index, video_frame) in _nearest_ticks(timed, Fraction(target_fps)):
            stats.output_frames += 1
            if index >= start_frame:
                if isinstance(video_frame, _Skipped):  # _skip_plan keeps the frames of 2 periods before start_frame
                    raise RuntimeError(f"output frame {index} would show source frame {source_index}, skipped by the seek")
                rgb, scale = to_rgb(source_index, video_frame)
                yield Frame(index, float(tick), rgb, source_index, scale)
        _note_early_end(stats, container, stream, period)
    if stats.output_frames == 0:
        raise RejectedInput("no_frames: the video stream holds no decodable frame")


@dataclass(frozen=True)
class _Skipped:
    """A frame that is not decoded: what ``_timed_frames`` reads of a frame (from its packet)."""

    pts: int  # _skip_plan stands in only for packets with a timestamp
    duration: int | None
    time_base: Fraction | None


def _skip_plan(container: av.container.InputContainer, stream: av.VideoStream,
               before_s: Fraction) -> tuple[list[_Skipped], int | None]:
    """Leave ``container`` at the last keyframe that starts no later than ``before_s`` seconds after
    the first frame; return stand-ins for the frames before it (so that source indices and
    timestamps stay those of a full decode) and the keyframe's pts. ([], None) with the container
    at its start when nothing can be skipped safely: no such keyframe, a stream that cannot be
    demuxed or sought, or a frame after a keyframe shown before it (an open GOP, whose leading
    frames need the previous GOP to decode)."""
    if before_s <= 0:
        return [], None
    skipped: list[_Skipped] = []
    group: list[_Skipped] = []
    origin: Fraction | None = None
    keyframe: int | None = None
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            start = packet.pts * packet.time_base
            origin = start if origin is None else min(origin, start)
            if packet.is_keyframe:
                if keyframe is not None and start - origin > before_s:
                    break
                skipped += group
                group, keyframe = [], packet.pts
            elif keyframe is not None and packet.pts < keyframe:
                raise _NotSkippable
            group.append(_Skipped(packet.pts, packet.duration, packet.time_base))
        if not skipped or keyframe is None:  # a frame is skipped only once a keyframe follows it
            raise _NotSkippable
        container.seek(keyframe, backward=True, any_frame=False, stream=stream)
        return sorted(skipped, key=lambda f: f.pts), keyframe
    except (_NotSkippable, av.FFmpegError):
        container.seek(0, stream=stream)
        return [], None


class _NotSkippable(Exception):
    pass


def _decoded(
    container: av.container.InputContainer, stream: av.VideoStream, on_error: str, stats: DecodeStats
) -> Iterator[av.VideoFrame]:
    """Decoded frames in order; a demux or decode error is raised or ends the stream (see iter_frames)."""
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except av.FFmpegError as err:
            _stop_on_error(err, on_error, stats)
            return
        yield frame


def _stop_on_error(err: Exception, on_error: str, stats: DecodeStats) -> None:
    if stats.source_frames == 0:
        raise RejectedInput(f"no_frames: the first frame does not decode ({_describe(err)})") from err
    stats.truncated = True
    stats.note = f"decode_error: {_describe(err)} after {stats.source_frames} source frames"
    if on_error == "raise":
        raise RejectedInput(stats.note) from err


def _timed_frames(
    frames: Iterable[av.VideoFrame | _Skipped], period: Fraction, stats: DecodeStats
) -> Iterator[tuple[Fraction, Fraction, tuple[int, av.VideoFrame | _Skipped]]]:
    """``(start, duration, (source_index, frame))`` in exact seconds since the first frame.

    A frame without a timestamp follows its predecessor by one frame period; one without a
    duration lasts one period.
    """
    first = last = None
    for source_index, frame in enumerate(frames):
        stats.source_frames = source_index + 1
        if frame.pts is not None and frame.time_base:
            time = frame.pts * frame.time_base
        else:
            time = last + period if last is not None else Fraction(0)
        if last is not None and time <= last:
            continue
        duration = frame.duration * frame.time_base if frame.duration and frame.time_base else period
        _check_gap(time - (last if last is not None else time), duration, source_index)
        first = time if first is None else first
        last = time
        stats.decoded_s = float(time - first + duration)
        yield time - first, duration, (source_index, frame)


def _check_gap(gap: Fraction, duration: Fraction, source_index: int) -> None:
    """Resampling repeats a frame over every tick it spans, so a few bytes whose second frame sits
    at 23 h would become 2.5 million output frames: a frame may span at most ``MAX_FRAME_GAP_S``."""
    span = max(gap, duration)
    if span > MAX_FRAME_GAP_S:
        raise RejectedInput(f"timestamp_gap: source frame {source_index} spans {float(span):.0f} s "
                            f"(limit {MAX_FRAME_GAP_S:g} s between frames)")


Item = TypeVar("Item")  # what is resampled: a source frame with its index


def _nearest_ticks(
    timed: Iterable[tuple[Fraction, Fraction, Item]], fps: Fraction
) -> Iterator[tuple[int, Fraction, Item]]:
    """Resample ``(start, duration, item)`` (increasing starts, the first at 0) to ticks ``k / fps``.

    Yields ``(k, tick, item)`` with the item whose start is nearest to the tick.
    """
    period = 1 / fps
    k = 0
    previous: tuple[Fraction, Item] | None = None
    for start, duration, item in timed:
        while previous is not None and k * period < start:
            before, earlier = previous
            yield k, k * period, earlier if k * period - before <= start - k * period else item
            k += 1
        previous = (start, item)
        end = start + duration
    if previous is not None:
        while k * period < end:
            yield k, k * period, previous[1]
            k += 1


class _RgbConverter:
    """Converts decoded frames to read-only RGB arrays of one size (fixed by the first frame),
    reusing the last array when a source frame is shown twice."""

    def __init__(self, max_size: int | None):
        self.max_size = max_size
        self.size: tuple[int, int] | None = None
        self.last: tuple[int, np.ndarray, tuple[float, float]] | None = None

    def __call__(self, source_index: int, frame: av.VideoFrame) -> tuple[np.ndarray, tuple[float, float]]:
        if self.last is not None and self.last[0] == source_index:
            return self.last[1], self.last[2]
        if self.size is None:
            self.size = _output_size(frame.width, frame.height, self.max_size)
        width, height = self.size
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        rgb.flags.writeable = False
        scale = (width / frame.width, height / frame.height)
        self.last = (source_index, rgb, scale)
        return rgb, scale


def _output_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    if max_size is None or max(width, height) <= max_size:
        return width, height
    factor = max_size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _note_early_end(
    stats: DecodeStats, container: av.container.InputContainer, stream: av.VideoStream, period: Fraction
) -> None:
    if stream.duration and stream.time_base:
        duration_s, slack = float(stream.duration * stream.time_base), 2 * float(period)
    elif container.duration:
        duration_s, slack = container.duration / av.time_base, TRUNCATION_TOLERANCE_S
    else:
        return
    if not stats.truncated and stats.decoded_s < duration_s - slack:
        stats.truncated = True
        stats.note = f"decoding ended at {stats.decoded_s:.2f} s of a stated {duration_s:.2f} s"


# ----------------------------------------------------------------------------- person tracks


@dataclass(frozen=True)
class Tracks:
    """Boxes of person 0 and person 1 keyed by source frame index.

    ``frames[p]`` is a sorted ``(N_p,)`` int64 array of source frame indices and ``boxes[p]`` the
    matching ``(N_p, 4)`` float64 ``x0, y0, x1, y1`` in source-video pixels. ``source`` says where
    they come from (rows' ``tracks_source``): ``"file"`` (a user's track file) or ``"detector"``
    (the job's tracks stage, ``track_stage``).
    """

    frames: tuple[np.ndarray, np.ndarray]
    boxes: tuple[np.ndarray, np.ndarray]
    source: str = "file"

    def boxes_at(self, source_indices: np.ndarray) -> np.ndarray:
        """``(L, 2, 4)`` float32 boxes at the given source frames: linear interpolation between
        listed frames, the first/last box held before/after them."""
        at = np.asarray(source_indices, dtype=np.float64)
        out = np.empty((len(at), 2, 4), dtype=np.float32)
        for person in range(2):
            for coord in range(4):
                out[:, person, coord] = np.interp(at, self.frames[person], self.boxes[person][:, coord])
        return out


# Rows are read as float64: past 2**53 two frame numbers can read as one.
MAX_TRACK_FRAME = 2**53


def read_tracks(path: str | os.PathLike, frame_size: tuple[int, int] | None = None) -> Tracks:
    """Read a track file; a missing or malformed one raises ``RejectedInput``.

    Format: CSV with header ``frame,person,x0,y0,x1,y1`` (any column order, extra columns
    ignored), one row per person per frame. ``frame`` is the 0-based *source* frame index, so
    one file serves every target fps; ``person`` is 0 or 1 (the model's person a and b);
    ``x0, y0, x1, y1`` are the box's left, top, right, bottom edges in source-video pixels,
    ``x1 > x0`` and ``y1 > y0``. Frames may be skipped (boxes are interpolated) but each person
    needs at least one row and at most one per frame.

    With ``frame_size`` (the source video's ``(width, height)``) each box must overlap the frame
    and overhang it by at most one frame width / height on each side: a box off the frame means
    tracks of another video or another resolution, and a box of 1e30 pixels crops nothing.
    """
    file = _local_file(path, "track file")
    try:
        with file.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(TRACK_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise RejectedInput(f"bad_tracks: {file.name} lacks columns {sorted(missing)}")
            rows = [_track_row(row, line, frame_size) for line, row in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise RejectedInput(f"bad_tracks: {file.name} is not a CSV file ({err})") from err
    return _tracks_from_rows(np.array(rows, dtype=np.float64).reshape(-1, 6), file.name)


def _track_row(row: dict[str, str], line: int, frame_size: tuple[int, int] | None) -> tuple[float, ...]:
    try:
        frame, person = int(row["frame"]), int(row["person"])
        x0, y0, x1, y1 = (float(row[key]) for key in ("x0", "y0", "x1", "y1"))
    except (TypeError, ValueError) as err:
        raise RejectedInput(f"bad_tracks: line {line}: {err}") from err
    if not 0 <= frame <= MAX_TRACK_FRAME or person not in (0, 1):
        raise RejectedInput(f"bad_tracks: line {line}: frame must be in 0..{MAX_TRACK_FRAME} and person 0 or 1")
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise RejectedInput(f"bad_tracks: line {line}: box needs finite x1 > x0 and y1 > y0")
    if frame_size is not None and not _on_frame((x0, y0, x1, y1), *frame_size):
        raise RejectedInput(f"bad_tracks: line {line}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is off the "
                            f"{frame_size[0]}x{frame_size[1]} frame (boxes are in source-video pixels)")
    return frame, person, x0, y0, x1, y1


def _on_frame(box: tuple[float, float, float, float], width: int, height: int) -> bool:
    """The box overlaps ``[0, width] x [0, height]`` and lies within one frame size of it."""
    x0, y0, x1, y1 = box
    return -width <= x0 < width and 0 < x1 <= 2 * width and -height <= y0 < height and 0 < y1 <= 2 * height


def _tracks_from_rows(rows: np.ndarray, name: str) -> Tracks:
    frames, boxes = [], []
    for person in (0, 1):
        mine = rows[rows[:, 1] == person]
        mine = mine[np.argsort(mine[:, 0], kind="stable")]
        if len(mine) == 0:
            raise RejectedInput(f"bad_tracks: {name} has no rows for person {person}")
        if np.any(np.diff(mine[:, 0]) == 0):
            raise RejectedInput(f"bad_tracks: {name} lists a frame twice for person {person}")
        frames.append(mine[:, 0].astype(np.int64))
        boxes.append(mine[:, 2:])
    return Tracks((frames[0], frames[1]), (boxes[0], boxes[1]))


def write_tracks(path: str | os.PathLike, tracks: Tracks) -> None:
    """Write ``tracks`` in the ``read_tracks`` format, rows ordered by frame then person."""
    rows = [
        (int(frame), person, *map(float, box))
        for person in (0, 1)
        for frame, box in zip(tracks.frames[person], tracks.boxes[person])
    ]
    rows.sort(key=lambda row: (row[0], row[1]))
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRACK_COLUMNS)
        writer.writerows(rows)


# ----------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    """``clip_len`` consecutive output frames.

    ``frame_indices``, ``source_indices`` (int64), ``timestamps`` (float64 s) and ``mask`` /
    ``owned`` (bool) are ``(L,)``; ``frames`` is ``(L, H, W, 3)`` uint8 and ``boxes`` ``(L, 2, 4)``
    float32 ``x0, y0, x1, y1`` per person in ``frames`` pixels. Slots past the end of the video
    repeat the last frame and have ``mask`` False. ``owned`` marks the frames this clip is
    responsible for writing: over all clips of a video every frame is owned exactly once.
    ``tracks_source`` is the tracks' ``source`` (``"file"``, ``"detector"``) or ``"full_frame"``
    (no tracks: both boxes are the whole frame).
    """

    start_frame: int
    frame_indices: np.ndarray
    source_indices: np.ndarray
    timestamps: np.ndarray
    frames: np.ndarray
    mask: np.ndarray
    owned: np.ndarray
    boxes: np.ndarray
    tracks_source: str


def iter_clips(
    frames: Iterable[Frame], clip_len: int = 16, stride: int = 16, tracks: Tracks | None = None, first_clip: int = 0
) -> Iterator[Clip]:
    """Cut a frame stream into clips starting every ``stride`` frames, holding at most
    ``clip_len + 1`` frames.

    Every frame lands in at least one clip: the last clip is padded and masked, never dropped,
    and it is only emitted when it holds frames no earlier clip covered. With
    ``stride < clip_len`` consecutive clips overlap by ``clip_len - stride`` frames and the
    overlap is split at its middle: clip ``k`` owns the frames up to
    ``start_k + stride + (clip_len - stride) // 2`` and clip ``k + 1`` the rest, so each frame is
    written once, by the clip where it sits furthest from an edge.

    ``first_clip`` > 0: ``frames`` start at output frame ``first_clip * stride`` (``iter_frames``'s
    ``start_frame``) and the clips are those a full stream gives from that clip on.
    """
    if not 1 <= stride <= clip_len:
        raise ValueError(f"stride must be in 1..clip_len ({clip_len}), got {stride}")
    buffer: list[Frame] = []
    start = first_clip * stride
    owned_from = start + (clip_len - stride) // 2 if first_clip else 0
    for frame in frames:
        buffer.append(frame)
        if len(buffer) > clip_len:
            owned_to = start + stride + (clip_len - stride) // 2
            yield _make_clip(buffer[:clip_len], clip_len, (owned_from - start, owned_to - start), tracks)
            owned_from = owned_to
            del buffer[:stride]
            start += stride
    if buffer:
        yield _make_clip(buffer, clip_len, (owned_from - start, len(buffer)), tracks)


def _make_clip(frames: list[Frame], clip_len: int, owned: tuple[int, int], tracks: Tracks | None) -> Clip:
    slots = np.arange(clip_len)
    padded = frames + [frames[-1]] * (clip_len - len(frames))
    source_indices = np.array([f.source_index for f in padded], dtype=np.int64)
    boxes, tracks_source = _clip_boxes(padded, source_indices, tracks)
    return Clip(
        start_frame=frames[0].index,
        frame_indices=np.array([f.index for f in padded], dtype=np.int64),
        source_indices=source_indices,
        timestamps=np.array([f.timestamp_s for f in padded], dtype=np.float64),
        frames=np.stack([f.rgb for f in padded]),
        mask=slots < len(frames),
        owned=(slots >= owned[0]) & (slots < owned[1]),
        boxes=boxes,
        tracks_source=tracks_source,
    )


def _clip_boxes(frames: list[Frame], source_indices: np.ndarray, tracks: Tracks | None) -> tuple[np.ndarray, str]:
    if tracks is None:
        height, width = frames[0].rgb.shape[:2]
        whole = np.array([0, 0, width, height], dtype=np.float32)
        return np.broadcast_to(whole, (len(frames), 2, 4)).copy(), "full_frame"
    scale = np.array([[sx, sy, sx, sy] for sx, sy in (f.scale for f in frames)], dtype=np.float32)
    return tracks.boxes_at(source_indices) * scale[:, None, :], tracks.source


# ----------------------------------------------------------------------------- crops


def crop_people(clip: Clip, size: int = 224) -> torch.Tensor:
    """``(2, L, 3, size, size)`` normalised crops of person 0 and person 1 (see ``crop_person``)."""
    return torch.stack([crop_person(clip.frames, clip.boxes[:, person], size) for person in (0, 1)])


def crop_person(frames: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor, size: int = 224) -> torch.Tensor:
    """Crop one box per frame into a float32 ``(L, 3, size, size)`` tensor, normalised with the
    ImageNet mean/std.

    ``frames`` is ``(L, H, W, 3)`` uint8 RGB and ``boxes`` ``(L, 4)`` ``x0, y0, x1, y1`` pixels.
    Each box becomes the square of its longer side around its centre, shifted inside the image;
    a square longer than the image's height (or width) is centred on it and the part outside is
    filled with the mean colour (0 after normalisation). Crops are bilinearly sampled, after an
    antialiased resize of the clip when the smallest box is more than twice ``size``.
    """
    images = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()
    squares = square_boxes(torch.as_tensor(np.asarray(boxes), dtype=torch.float32), images.shape[3], images.shape[2])
    images, squares = _prescale(images, squares, size)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    grid = _sampling_grid(squares, images.shape[3], images.shape[2], size)
    return F.grid_sample((images - mean) / std, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def square_boxes(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Square up ``(N, 4)`` boxes (side = longer side, at least 1 px, same centre) and shift
    each square inside ``[0, width] x [0, height]``, centring it on an axis it overhangs."""
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    x0 = _clamp_start((boxes[:, 0] + boxes[:, 2] - side) / 2, side, width)
    y0 = _clamp_start((boxes[:, 1] + boxes[:, 3] - side) / 2, side, height)
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def _clamp_start(start: torch.Tensor, side: torch.Tensor, extent: int) -> torch.Tensor:
    inside = torch.minimum(start.clamp(min=0), extent - side)
    return torch.where(side > extent, (extent - side) / 2, inside)


def _prescale(images: torch.Tensor, squares: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    factor = size / float((squares[:, 2] - squares[:, 0]).min())
    if factor * _MAX_BILINEAR_DOWNSCALE >= 1:
        return images, squares
    height, width = images.shape[2:]
    new_height, new_width = max(1, round(height * factor)), max(1, round(width * factor))
    resized = F.interpolate(images, size=(new_height, new_width), mode="bilinear", antialias=True, align_corners=False)
    ratio = torch.tensor([new_width / width, new_height / height] * 2)
    return resized, squares * ratio


def _sampling_grid(squares: torch.Tensor, width: int, height: int, size: int) -> torch.Tensor:
    """``grid_sample`` grid ``(N, size, size, 2)`` sampling each square at ``size x size`` pixel centres."""
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = squares[:, 0:1] + steps * (squares[:, 2:3] - squares[:, 0:1])
    ys = squares[:, 1:2] + steps * (squares[:, 3:4] - squares[:, 1:2])
    grid_x = (2 * xs / width - 1)[:, None, :]
    grid_y = (2 * ys / height - 1)[:, :, None]
    return torch.stack(torch.broadcast_tensors(grid_x, grid_y), dim=-1)
