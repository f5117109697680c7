"""The batched parts of tracking against straightforward references written here: ByteTrack's
Kalman filters stepped all at once (engine/socialmirror/bytetrack.py) against one filter a track,
and the pair search over same-frame sightings (engine/socialmirror/tracking.py) against a loop over
every two tracks."""

from itertools import combinations

import numpy as np
import pytest

from motionfleet.core.errors import RejectedInput
from motionfleet.demo.videos import crowd_detections
from motionfleet.socialmirror import bytetrack, tracking
from motionfleet.socialmirror.bytetrack import ByteTracker, TrackHistory

# ----------------------------------------------------------------------------- one Kalman filter a track

STD_POSITION, STD_VELOCITY = 1.0 / 20, 1.0 / 160
MOTION, OBSERVE = np.eye(8) + np.eye(8, k=4), np.eye(4, 8)


def to_xyah(box):
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / (y1 - y0), y1 - y0])


def start_one(measurement):
    """ByteTrack's KalmanFilter.initiate."""
    h = measurement[3]
    std = np.array([2 * STD_POSITION * h, 2 * STD_POSITION * h, 1e-2, 2 * STD_POSITION * h,
                    10 * STD_VELOCITY * h, 10 * STD_VELOCITY * h, 1e-5, 10 * STD_VELOCITY * h])
    return np.r_[measurement, np.zeros(4)], np.diag(std**2)


def predict_one(mean, cov, lost):
    """ByteTrack's KalmanFilter.predict; a lost track's height velocity zeroed first (STrack.predict)."""
    mean = mean.copy()
    if lost:
        mean[7] = 0.0
    h = mean[3]
    std = np.array([STD_POSITION * h, STD_POSITION * h, 1e-2, STD_POSITION * h,
                    STD_VELOCITY * h, STD_VELOCITY * h, 1e-5, STD_VELOCITY * h])
    return MOTION @ mean, MOTION @ cov @ MOTION.T + np.diag(std**2)


def update_one(mean, cov, measurement):
    """ByteTrack's KalmanFilter.update (its Cholesky solve as a plain solve)."""
    h = mean[3]
    innovation_cov = OBSERVE @ cov @ OBSERVE.T + np.diag(np.array([STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h]) ** 2)
    gain = np.linalg.solve(innovation_cov, OBSERVE @ cov).T
    return mean + gain @ (measurement - OBSERVE @ mean), cov - gain @ innovation_cov @ gain.T


def one_by_one(step):
    """A batched filter function that runs ``step`` on each track in turn."""
    def batched(*arrays):
        results = [step(*row) for row in zip(*arrays)]
        means = np.array([mean for mean, _ in results]).reshape(-1, 8)
        return means, np.array([cov for _, cov in results]).reshape(-1, 8, 8)
    return batched


def assert_same_filters(mean, cov, reference):
    assert len(mean) == len(cov) == len(reference)
    for row, (ref_mean, ref_cov) in enumerate(reference):
        np.testing.assert_allclose(mean[row], ref_mean, rtol=1e-9, atol=0)
        np.testing.assert_allclose(cov[row], ref_cov, rtol=1e-9, atol=0)


def walk_box(rng, mean):
    """A detector box near a filter's predicted one."""
    cx, cy, aspect, h = mean[:4] + rng.normal(0, [2, 2, 0.01, 2])
    h = max(h, 20.0)
    return np.array([cx - aspect * h / 2, cy - h / 2, cx + aspect * h / 2, cy + h / 2])


def test_batched_kalman_filters_match_one_filter_a_track_as_tracks_start_and_end():
    rng = np.random.default_rng(0)
    mean, cov, lost = np.zeros((0, 8)), np.zeros((0, 8, 8)), np.zeros(0, dtype=bool)
    reference = []
    updated = ended = 0
    for frame in range(300):
        mean, cov = bytetrack._kalman_predict(mean, cov, lost)
        reference = [predict_one(m, c, gone) for (m, c), gone in zip(reference, lost)]
        rows = np.flatnonzero(rng.random(len(reference)) < 0.7)  # some frames none
        boxes = np.array([walk_box(rng, reference[r][0]) for r in rows]).reshape(-1, 4)
        mean[rows], cov[rows] = bytetrack._kalman_update(mean[rows], cov[rows], bytetrack._to_xyah(boxes))
        for r, box in zip(rows, boxes):
            reference[r] = update_one(*reference[r], to_xyah(box))
        updated += len(rows)
        lost = rng.random(len(reference)) < 0.2
        kept = rng.random(len(reference)) > (0.5 if frame == 150 else 0.03)  # every track ends around frame 150
        mean, cov, lost = mean[kept], cov[kept], lost[kept]
        reference = [state for state, keep in zip(reference, kept) if keep]
        ended += int((~kept).sum())
        new = np.array([[x, y, x + 40, y + 100] for x, y in rng.uniform(0, 1000, (rng.poisson(1.0), 2))]).reshape(-1, 4)
        started_mean, started_cov = bytetrack._kalman_start(bytetrack._to_xyah(new))
        mean, cov = np.r_[mean, started_mean], np.r_[cov, started_cov]
        lost = np.r_[lost, np.zeros(len(new), dtype=bool)]
        reference += [start_one(to_xyah(box)) for box in new]
        assert_same_filters(mean, cov, reference)
    assert updated > 1000 and ended > 100


def lossy_crowd(num_frames: int, people: int, seed: int) -> dict[int, np.ndarray]:
    """A crowd, each person in view for 100 frames, whose detector misses 15 % of the boxes and scores
    20 % of the rest below ByteTrack's high score: tracks get lost and found again, the low-score
    stage matches."""
    rng = np.random.default_rng(seed)
    out = {}
    for frame, dets in crowd_detections(num_frames, people, seed, stay=100).items():
        dets = dets[rng.random(len(dets)) > 0.15]
        dets[rng.random(len(dets)) < 0.2, 4] *= 0.45
        out[frame] = dets
    return out


def histories_of(detections, frames=None) -> list[tuple[int, list[int], list[list[float]]]]:
    tracker = ByteTracker()
    for frame in sorted(detections) if frames is None else frames:
        tracker.step(frame, detections[frame])
    return [(h.track_id, h.frames.tolist(), h.boxes.tolist()) for h in tracker.histories()]


@pytest.mark.parametrize("every", [1, 3])
def test_the_tracker_gives_the_same_tracks_as_with_one_kalman_filter_a_track(monkeypatch, every):
    detections = lossy_crowd(300, 15, seed=every)
    frames = sorted(detections)[::every]
    batched = histories_of(detections, frames)
    monkeypatch.setattr(bytetrack, "_kalman_start", one_by_one(start_one))
    monkeypatch.setattr(bytetrack, "_kalman_predict", one_by_one(predict_one))
    monkeypatch.setattr(bytetrack, "_kalman_update", one_by_one(update_one))
    one_a_track = histories_of(detections, frames)
    assert batched == one_a_track
    found_again = [track for track, frames, _ in batched if (np.diff(frames) > every).any()]
    assert len(batched) > 40 and len(found_again) > 10 and sum(len(f) for _, f, _ in batched) > 500


# ----------------------------------------------------------------------------- the pair, over every two tracks


def shared_frames_sum(a: TrackHistory, b: TrackHistory):
    """Where in ``a`` and ``b`` their shared frames are, and the sum over them, frame by frame, of
    centre distance / mean box height."""
    _, ia, ib = np.intersect1d(a.frames, b.frames, assume_unique=True, return_indices=True)
    total = 0.0
    for box_a, box_b in zip(a.boxes[ia], b.boxes[ib]):
        distance = np.linalg.norm((box_a[:2] + box_a[2:]) / 2 - (box_b[:2] + box_b[2:]) / 2)
        total += distance / (((box_a[3] - box_a[1]) + (box_b[3] - box_b[1])) / 2)
    return ia, ib, total


def pair_reference(histories: list[TrackHistory], min_shared: int):
    """Every two tracks: least proximity, then more shared frames, then lower ids; person 0 the left
    one on their first shared frame. None: no two tracks share ``min_shared`` frames."""
    best = None
    for a, b in combinations(histories, 2):
        ia, ib, total = shared_frames_sum(a, b)
        if len(ia) < min_shared:
            continue
        key = (total / len(ia), -len(ia), a.track_id, b.track_id)
        if best is None or key < best[0]:
            left_first = (a.boxes[ia[0], 0] + a.boxes[ia[0], 2]) / 2 <= (b.boxes[ib[0], 0] + b.boxes[ib[0], 2]) / 2
            best = (key, (a.track_id, b.track_id) if left_first else (b.track_id, a.track_id))
    return None if best is None else best[1]


def random_histories(rng, num_frames: int = 30) -> list[TrackHistory]:
    """Tracks on random frames with integer boxes; some pairs are copies of another pair moved by a
    whole number of pixels (the same proximity to the last bit: a tie) and some stand still at a
    quarter-height multiple apart (proximities with exact sums: ties across shared frame counts)."""
    boxes, frames = [], []
    for _ in range(rng.integers(1, 5)):
        on = np.flatnonzero(rng.random(num_frames) < rng.uniform(0.2, 1.0))
        if not len(on):
            continue
        kind = rng.integers(3)
        if kind == 0:  # two people walking, each on a random subset of frames
            for _ in range(2):
                corner = rng.integers(0, 400, (len(on), 2)).astype(np.float64)
                size = rng.integers([10, 40], [40, 120], (len(on), 2))
                boxes.append(np.c_[corner, corner + size])
                frames.append(np.sort(rng.choice(on, rng.integers(1, len(on) + 1), replace=False)))
        elif kind == 1 and len(boxes) >= 2:  # the last pair, moved
            shift = np.tile(rng.integers(-50, 50, 2), 2)
            boxes += [boxes[-2] + shift, boxes[-1] + shift]
            frames += [frames[-2], frames[-1]]
        else:  # two standing k quarter-heights apart
            left = np.array([rng.integers(0, 300), rng.integers(0, 300), 0, 0], dtype=np.float64)
            left[2:] = left[:2] + [25, 100]
            apart = [25 * rng.integers(1, 4), 0, 25 * rng.integers(1, 4), 0]
            for box in (left, left + apart):
                boxes.append(np.tile(box, (len(on), 1)))
                frames.append(on)
    ids = np.sort(rng.choice(1000, len(boxes), replace=False))
    histories = [TrackHistory(int(i), f.astype(np.int64), b[:len(f)]) for i, f, b in zip(ids, frames, boxes)]
    return [histories[i] for i in rng.permutation(len(histories))] if rng.random() < 0.3 else histories


@pytest.mark.parametrize("pairs_per_chunk", [1, 7, 1 << 20])
def test_the_pair_is_the_one_every_two_tracks_give_ties_and_the_shared_frames_limit_included(monkeypatch, pairs_per_chunk):
    monkeypatch.setattr(tracking, "_PAIRS_PER_CHUNK", pairs_per_chunk)
    rng = np.random.default_rng(pairs_per_chunk)
    checked = tied = rejected = 0
    for _ in range(300):
        histories = random_histories(rng)
        if len(histories) < 2:
            continue
        min_shared = int(rng.integers(1, 10))
        expected = pair_reference(histories, min_shared)
        if expected is None:
            with pytest.raises(RejectedInput, match="no two of them together"):
                tracking._closest_pair(histories, min_shared, 30)
            rejected += 1
            continue
        a, b = tracking._closest_pair(histories, min_shared, 30)
        assert (a.track_id, b.track_id) == expected
        _, shared, total = tracking._co_visible_pairs(histories)
        proximity = (total / shared)[shared >= min_shared]
        tied += (proximity == proximity.min()).sum() > 1  # the tie-break chose
        checked += 1
    assert checked > 150 and tied > 30 and rejected > 10


def test_each_pair_sums_its_frames_in_frame_order_whatever_the_chunking(monkeypatch):
    rng = np.random.default_rng(11)
    histories = random_histories(rng, num_frames=60)
    while len(histories) < 4:
        histories = random_histories(rng, num_frames=60)
    results = []
    for pairs_per_chunk in (1, 3, 1 << 20):
        monkeypatch.setattr(tracking, "_PAIRS_PER_CHUNK", pairs_per_chunk)
        pairs, shared, total = tracking._co_visible_pairs(histories)
        results.append({(int(i), int(j)): (int(n), float(s)) for (i, j), n, s in zip(pairs, shared, total)})
    expected = {}
    for (i, a), (j, b) in combinations(enumerate(histories), 2):
        ia, _, total = shared_frames_sum(a, b)
        if len(ia):
            expected[(i, j)] = (len(ia), total)
    assert results[0] == results[1] == results[2] == expected  # the same bits: sums run frame by frame


def test_the_pair_of_a_crowd_is_the_one_every_two_tracks_give():
    tracker = ByteTracker()
    for frame, dets in lossy_crowd(600, 20, seed=4).items():
        tracker.step(frame, dets)
    histories = tracker.histories()
    assert len(histories) > 100
    for min_shared in (1, 5, 100):
        a, b = tracking._closest_pair(histories, min_shared, 600)
        assert (a.track_id, b.track_id) == pair_reference(histories, min_shared)
