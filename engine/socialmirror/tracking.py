"""Who the two people of a video are: ByteTrack over the whole video, then the closest pair.

Usage (``detections`` maps each source frame the detector ran on to its ``(N, 5)`` boxes
``x0, y0, x1, y1, score`` in source-video pixels; a frame where nobody was found maps to an
empty array)::

    pair = track_pair(detections, PairSettings())   # RejectedInput("no_pair: ...") without two people
    pair.tracks                                     # Tracks: person 0 and 1 where the detector found them
    pair.lost                                       # ((first, last), ...) source frames without the pair

The pair (SocialMirror's supplementary, sec. 1.1: detect and track everyone, keep the pair with
the closest spatial proximity): among the confirmed tracks, every two that the detector found on
the same frame at least ``min_shared_frames`` times are a candidate; their proximity is the mean,
over those shared frames, of the distance between the two box centres divided by the two boxes'
mean height (so a pair far from the camera is as close as the same pair near it). The candidate
with the smallest proximity is the pair (ties: more shared frames, then the older tracks).
Person 0 is the one whose box centre is further left on the first shared frame.

Between two frames where a person of the pair was found, ``Tracks.boxes_at`` interpolates the
box linearly. A gap longer than ``max_gap`` source frames (and frames before a person's first or
after their last sighting, when more than ``max_gap``) is *lost*: a clip covering any of it is
rejected rather than given a guessed box. Frames at most ``max_gap`` before the first or after
the last sighting hold the nearest box, as ``boxes_at`` does.

The detector may run on every k-th frame only (the tracker bridges the frames between); ``k``
must then be at most ``max_gap + 1``, or every frame between two detections would be lost, and the
last frame of the video should be detected too (frames after the last detection hold its box).

The result depends only on the detections of each frame, not on the order they are listed in,
nor on the order or batches in which frames were detected: frames are tracked in ascending order
and each frame's boxes are put in a canonical order (``bytetrack``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from motionfleet.core.errors import RejectedInput
from motionfleet.core.options import UsageError
from motionfleet.socialmirror.bytetrack import ByteTracker, ByteTrackSettings, TrackHistory
from motionfleet.socialmirror.video import Tracks


@dataclass(frozen=True)
class PairSettings:
    """``max_gap``: the longest run of source frames a person of the pair may be missing and still be
    interpolated. 15 frames (0.5 s at 30 fps) bridges one person walking behind the other: two
    people about 0.5 m wide passing at 1 to 2 m/s hide each other for 0.25 to 0.5 s; a walking
    person moves about 0.7 m in that time, so a straight line between the two sightings stays
    within about a body width of the truth. ``min_shared_frames``: detected frames two tracks must
    share to be a candidate pair (a one-off false positive beside someone is never the pair)."""

    max_gap: int = 15
    min_shared_frames: int = 5
    bytetrack: ByteTrackSettings = field(default_factory=ByteTrackSettings)


@dataclass(frozen=True)
class PairTracks:
    """The pair of one video. ``tracks``: person 0 and 1 at the source frames where the detector
    found them (the detector's boxes). ``lost``: ascending, disjoint inclusive ranges
    ``(first, last)`` of source frames where one of the pair is missing for longer than
    ``max_gap``. ``people_seen``: confirmed tracks in the video. ``track_ids``: the ByteTrack ids of
    person 0 and 1."""

    tracks: Tracks
    lost: tuple[tuple[int, int], ...]
    people_seen: int
    track_ids: tuple[int, int]


def track_pair(detections: dict[int, np.ndarray], settings: PairSettings = PairSettings(), num_frames: int | None = None) -> PairTracks:
    """Track everyone over one whole video and keep the closest pair (module docstring).

    ``num_frames``: the video's source frame count, when known; frames after the last detected
    one then count towards a lost tail. Without it the video is taken to end at the last frame
    in ``detections``.
    """
    frames = sorted(int(f) for f in detections)
    _check_schedule(frames, settings.max_gap)
    tracker = ByteTracker(settings.bytetrack)
    for frame in frames:
        tracker.step(frame, detections[frame])
    histories = tracker.histories()
    a, b = _closest_pair(histories, settings.min_shared_frames, len(frames))
    span = (frames[0], frames[-1] if num_frames is None else max(frames[-1], num_frames - 1))
    lost = _merge(_gaps(a.frames, span, settings.max_gap) + _gaps(b.frames, span, settings.max_gap))
    tracks = Tracks((a.frames, b.frames), (a.boxes, b.boxes))
    return PairTracks(tracks, lost, len(histories), (a.track_id, b.track_id))


def _check_schedule(frames: list[int], max_gap: int) -> None:
    if not frames:
        raise RejectedInput("no_pair: the detector ran on no frame of this video")
    if frames[0] < 0:
        raise ValueError(f"source frame indices start at 0, got {frames[0]}")
    spacing = max(np.diff(frames), default=1)
    if spacing - 1 > max_gap:
        raise UsageError(f"detecting every {spacing}th frame leaves {spacing - 1} frames between detections, more than "
                         f"max_gap {max_gap}: detect at least every {max_gap + 1}th frame or raise max_gap")


def _closest_pair(histories: list[TrackHistory], min_shared: int, searched: int) -> tuple[TrackHistory, TrackHistory]:
    """The two tracks of least proximity, person 0 (left on their first shared frame) first."""
    if len(histories) < 2:
        raise RejectedInput(f"no_pair: {len(histories)} {'person' if len(histories) == 1 else 'people'} found in "
                            f"{searched} searched frames; a two-person clip needs two people in view")
    best = None
    for a, b in combinations(histories, 2):
        shared, ia, ib = np.intersect1d(a.frames, b.frames, assume_unique=True, return_indices=True)
        if len(shared) < min_shared:
            continue
        key = (_proximity(a.boxes[ia], b.boxes[ib]), -len(shared), a.track_id, b.track_id)
        if best is None or key < best[0]:
            best = (key, a, b, ia[0], ib[0])
    if best is None:
        raise RejectedInput(f"no_pair: {len(histories)} people found but no two of them together on "
                            f"{min_shared} or more of the {searched} searched frames")
    _, a, b, first_a, first_b = best
    centre_x = lambda box: (box[0] + box[2]) / 2
    return (a, b) if centre_x(a.boxes[first_a]) <= centre_x(b.boxes[first_b]) else (b, a)


def _proximity(boxes_a: np.ndarray, boxes_b: np.ndarray) -> float:
    """Mean over shared frames of centre distance / mean box height."""
    centres = lambda boxes: (boxes[:, :2] + boxes[:, 2:]) / 2
    heights = ((boxes_a[:, 3] - boxes_a[:, 1]) + (boxes_b[:, 3] - boxes_b[:, 1])) / 2
    return float(np.mean(np.linalg.norm(centres(boxes_a) - centres(boxes_b), axis=1) / heights))


def _gaps(found: np.ndarray, span: tuple[int, int], max_gap: int) -> list[tuple[int, int]]:
    """Inclusive ranges of ``span`` longer than ``max_gap`` frames between sightings ``found``."""
    edges = np.concatenate([[span[0] - 1], found, [span[1] + 1]])
    firsts, lasts = edges[:-1] + 1, edges[1:] - 1
    long = lasts - firsts + 1 > max_gap
    return [(int(f), int(last)) for f, last in zip(firsts[long], lasts[long])]


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)
