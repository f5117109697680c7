"""Who the two people of a video are: ByteTrack over the whole video, then the closest pair.

Usage (``detections`` maps each source frame the detector ran on to its ``(N, 5)`` boxes
``x0, y0, x1, y1, score`` in source-video pixels; a frame where nobody was found maps to an
empty array)::

    pair = track_pair(detections, PairSettings())   # RejectedInput("no_pair: ...") without two people
    pair.tracks                                     # Tracks: person 0 and 1 where the detector found them
    pair.lost                                       # ((first, last), ...) source frames without the pair

    tracking = PairTracking(PairSettings())         # the same, fed a chunk of frames at a time
    tracking.add(first_chunk); tracking.add(second_chunk)
    pair = tracking.pair()

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
    tracking = PairTracking(settings)
    tracking.add({frame: detections[frame] for frame in sorted(detections)})
    return tracking.pair(num_frames)


class PairTracking:
    """``track_pair`` fed as the detector goes: ``add`` the detections of frames after every frame
    added so far (a chunk at a time), then ``pair``. The same tracks as ``track_pair`` over all
    of them at once, whatever the chunks."""

    def __init__(self, settings: PairSettings = PairSettings()):
        self.settings = settings
        self.tracker = ByteTracker(settings.bytetrack)
        self.frames: list[int] = []

    def add(self, detections: dict[int, np.ndarray]) -> None:
        for frame in sorted(int(f) for f in detections):
            self._check_schedule(frame)
            self.tracker.step(frame, detections[frame])
            self.frames.append(frame)

    def pair(self, num_frames: int | None = None) -> PairTracks:
        """The closest pair of the frames added (``num_frames``: as ``track_pair``'s)."""
        frames, settings = self.frames, self.settings
        if not frames:
            raise RejectedInput("no_pair: the detector ran on no frame of this video")
        histories = self.tracker.histories()
        a, b = _closest_pair(histories, settings.min_shared_frames, len(frames))
        span = (frames[0], frames[-1] if num_frames is None else max(frames[-1], num_frames - 1))
        lost = _merge(_gaps(a.frames, span, settings.max_gap) + _gaps(b.frames, span, settings.max_gap))
        tracks = Tracks((a.frames, b.frames), (a.boxes, b.boxes))
        return PairTracks(tracks, lost, len(histories), (a.track_id, b.track_id))

    def _check_schedule(self, frame: int) -> None:
        if frame < 0:
            raise ValueError(f"source frame indices start at 0, got {frame}")
        spacing, max_gap = frame - self.frames[-1] if self.frames else 1, self.settings.max_gap
        if spacing - 1 > max_gap:
            raise UsageError(f"detecting every {spacing}th frame leaves {spacing - 1} frames between detections, more than "
                             f"max_gap {max_gap}: detect at least every {max_gap + 1}th frame or raise max_gap")


def _closest_pair(histories: list[TrackHistory], min_shared: int, searched: int) -> tuple[TrackHistory, TrackHistory]:
    """The two tracks of least proximity, person 0 (left on their first shared frame) first."""
    if len(histories) < 2:
        raise RejectedInput(f"no_pair: {len(histories)} {'person' if len(histories) == 1 else 'people'} found in "
                            f"{searched} searched frames; a two-person clip needs two people in view")
    pairs, shared, total = _co_visible_pairs(histories)
    candidate = shared >= min_shared
    if not candidate.any():
        raise RejectedInput(f"no_pair: {len(histories)} people found but no two of them together on "
                            f"{min_shared} or more of the {searched} searched frames")
    pairs, shared, proximity = pairs[candidate], shared[candidate], total[candidate] / shared[candidate]
    ids = np.array([h.track_id for h in histories])
    best = np.lexsort((ids[pairs[:, 1]], ids[pairs[:, 0]], -shared, proximity))[0]
    a, b = histories[pairs[best, 0]], histories[pairs[best, 1]]
    _, on_a, on_b = np.intersect1d(a.frames, b.frames, assume_unique=True, return_indices=True)
    centre_x = lambda box: (box[0] + box[2]) / 2
    return (a, b) if centre_x(a.boxes[on_a[0]]) <= centre_x(b.boxes[on_b[0]]) else (b, a)


# Same-frame pairs of sightings _co_visible_pairs handles at once: its arrays peak at about 90 MB (tracemalloc).
_PAIRS_PER_CHUNK = 1 << 20


def _co_visible_pairs(histories: list[TrackHistory]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every two tracks found on the same frame: ``(P, 2)`` their positions in ``histories`` (the
    earlier first, ascending), the number of frames they share and the sum over those frames, in
    frame order, of centre distance / mean box height. Costs the sum over frames of (tracks on the
    frame)^2, in chunks of frames of about ``_PAIRS_PER_CHUNK`` pairs."""
    track = np.repeat(np.arange(len(histories)), [len(h.frames) for h in histories])
    frames = np.concatenate([h.frames for h in histories])
    boxes = np.concatenate([h.boxes for h in histories])
    order = np.lexsort((track, frames))
    track, frames, boxes = track[order], frames[order], boxes[order]
    centres, heights = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 3] - boxes[:, 1]
    first_of_frame = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    on_frame = np.diff(np.r_[first_of_frame, len(frames)])
    chunk = np.cumsum(on_frame * (on_frame - 1) // 2) // _PAIRS_PER_CHUNK
    bounds = np.r_[0, np.flatnonzero(np.diff(chunk)) + 1, len(on_frame)]
    keys, shared, total = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    for begin, end in zip(bounds[:-1], bounds[1:]):
        i, j = _same_frame_pairs(on_frame[begin:end]) + first_of_frame[begin]
        in_heights = np.linalg.norm(centres[i] - centres[j], axis=1) / ((heights[i] + heights[j]) / 2)
        keys, shared, total = _accumulate(keys, shared, total, track[i] * len(histories) + track[j], in_heights)
    return np.stack([keys // len(histories), keys % len(histories)], axis=1), shared, total


def _same_frame_pairs(on_frame: np.ndarray) -> np.ndarray:
    """``(2, P)`` indices ``i < j`` of every two sightings on the same frame, sightings laid out
    frame after frame, ``on_frame`` on each; by ``i``, then ``j``."""
    frame_end = np.repeat(np.cumsum(on_frame), on_frame)
    after = frame_end - np.arange(len(frame_end)) - 1  # sightings after each one on its frame
    i = np.repeat(np.arange(len(frame_end)), after)
    j = i + 1 + np.arange(len(i)) - np.repeat(np.cumsum(after) - after, after)
    return np.stack([i, j])


def _accumulate(keys: np.ndarray, shared: np.ndarray, total: np.ndarray, new_keys: np.ndarray,
                values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted pair ``keys`` with their counts and sums, ``values`` of ``new_keys`` added (np.bincount
    adds in the order given: each pair's sum runs in frame order)."""
    unique, inverse = np.unique(np.r_[keys, new_keys], return_inverse=True)
    counts = np.r_[shared, np.ones(len(new_keys), dtype=np.int64)]
    sums = np.bincount(inverse, weights=np.r_[total, values], minlength=len(unique))
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64), sums


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
