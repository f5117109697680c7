"""ByteTrack and the pair (engine/socialmirror/tracking.py, bytetrack.py) on synthetic detections:
ground-truth boxes with jitter, missed and occluded detections, a third person, false positives."""

import av
import numpy as np
import pytest

from motionfleet.core.errors import RejectedInput
from motionfleet.core.options import UsageError
from motionfleet.demo.videos import TRACKING_COLOURS, TRACKING_SIZE, tracking_scene_boxes, write_tracking_video
from motionfleet.socialmirror.bytetrack import box_iou
from motionfleet.socialmirror.track_stage import lost_in_clip, tracks_from_table, tracks_table
from motionfleet.socialmirror.tracking import PairSettings, track_pair


def detections_of(boxes: np.ndarray, seed: int = 0, jitter: float = 0.5, score: float = 0.9, frames=None) -> dict[int, np.ndarray]:
    """``{frame: (N, 5)}`` from ``(T, P, 4)`` ground truth (NaN: not found), each box jittered."""
    rng = np.random.default_rng(seed)
    out = {}
    for frame in range(len(boxes)) if frames is None else frames:
        found = boxes[frame][~np.isnan(boxes[frame, :, 0])]
        out[frame] = np.c_[found + rng.normal(0, jitter, found.shape), np.full(len(found), score)]
    return out


def walking_pair(num_frames: int, speed: float = 0.3) -> np.ndarray:
    """``(T, 2, 4)``: two people 60 px tall side by side on a 640 x 360 frame, walking right."""
    x = 100 + speed * np.arange(num_frames)
    left = np.stack([x, np.full_like(x, 200), x + 20, np.full_like(x, 260)], axis=1)
    return np.stack([left, left + [40, 0, 40, 0]], axis=1)


def occluded_behind(boxes: np.ndarray, front: int, back: int, iou: float = 0.3) -> np.ndarray:
    """``boxes`` with ``back`` hidden (NaN) on frames where ``front`` covers it by more than ``iou``."""
    hidden = boxes.copy()
    covered = np.array([box_iou(b[[front]], b[[back]])[0, 0] > iou for b in boxes])
    hidden[covered, back] = np.nan
    return hidden


def box_error(pair, truth: np.ndarray) -> float:
    """Largest coordinate error of the pair's (interpolated) boxes against ``(T, 2, 4)`` truth."""
    return float(np.abs(pair.tracks.boxes_at(np.arange(len(truth))) - truth).max())


def test_the_closest_two_are_the_pair_and_keep_their_identity_across_a_crossing():
    truth = tracking_scene_boxes(40).astype(np.float64)
    seen = occluded_behind(truth, front=0, back=1)
    hidden = np.isnan(seen[:, 1, 0]).sum()
    assert 0 < hidden <= PairSettings().max_gap  # figure 1 walks behind figure 0, a bridged gap
    pair = track_pair(detections_of(seen))
    assert pair.lost == ()
    # person 0 starts on the left and ends on the right: the crossing did not swap them
    assert box_error(pair, truth[:, :2]) < 2.5
    assert not np.isin(np.flatnonzero(np.isnan(seen[:, 1, 0])), pair.tracks.frames[1]).any()


def test_a_low_score_box_keeps_a_half_hidden_person_on_their_track():
    truth = tracking_scene_boxes(40).astype(np.float64)
    detections = detections_of(truth)
    covered = [f for f in range(40) if box_iou(truth[f, [0]], truth[f, [1]])[0, 0] > 0.3]
    for frame in covered:  # figure 1 is the second row wherever figure 2 is off the frame
        assert np.isnan(truth[frame, 2, 0])
        detections[frame][1, 4] = 0.3
    pair = track_pair(detections)
    assert pair.people_seen == 3  # no fourth track born after the crossing
    assert np.isin(covered, pair.tracks.frames[1]).all()
    assert box_error(pair, truth[:, :2]) < 2.5


def test_a_false_positive_beside_someone_is_never_the_pair():
    truth = tracking_scene_boxes(40).astype(np.float64)
    detections = detections_of(truth)
    ghost = truth[10, 0] + [3, 0, 3, 0]  # nearly on person 0: as close as anyone can be
    detections[10] = np.r_[detections[10], [[*ghost, 0.95]]]
    for frame in (20, 21, 22):  # a ghost confirmed as a track, but seen beside person 0 on 3 < 5 frames
        detections[frame] = np.r_[detections[frame], [[*(truth[frame, 0] + [5, 0, 5, 0]), 0.95]]]
    pair = track_pair(detections)
    assert pair.people_seen == 4
    assert box_error(pair, truth[:, :2]) < 2.5


def test_missed_detections_are_interpolated():
    truth = walking_pair(120)
    seen = truth.copy()
    rng = np.random.default_rng(3)
    seen[rng.random(120) < 0.3, 0] = np.nan
    seen[40:55, 1] = np.nan  # 15 frames = max_gap: still bridged
    pair = track_pair(detections_of(seen, jitter=0.3))
    assert pair.lost == ()
    assert len(pair.tracks.frames[0]) < 100
    assert box_error(pair, truth) < 1.5


def test_a_gap_longer_than_max_gap_is_lost_and_rejects_the_clips_over_it():
    truth = walking_pair(120)
    seen = truth.copy()
    seen[40:56, 1] = np.nan  # 16 frames
    seen[:20, 0] = np.nan  # person 0 walks in late
    pair = track_pair(detections_of(seen))
    assert pair.lost == ((0, 19), (40, 55))
    assert pair.track_ids == (1, 0)  # the same track before and after the gap
    lost = np.concatenate([np.arange(first, last + 1) for first, last in pair.lost])
    table = tracks_from_table(tracks_table("v", pair.tracks, lost))  # as the job's tracks stage commits it
    assert table.lost.tolist() == lost.tolist() and [len(f) for f in table.tracks.frames] == [len(f) for f in pair.tracks.frames]
    owned = np.ones(16, dtype=bool)
    assert lost_in_clip(table.lost, np.arange(56, 72), owned) == []  # a clip after the gap is kept
    assert lost_in_clip(table.lost, np.arange(48, 64), owned) == list(range(48, 56))  # one over it is rejected
    assert lost_in_clip(table.lost, np.arange(48, 64), np.arange(16) >= 8) == []  # unless it does not own those frames
    assert track_pair(detections_of(seen), num_frames=150).lost == ((0, 19), (40, 55), (120, 149))
    assert track_pair(detections_of(seen), PairSettings(max_gap=20)).lost == ()


def test_proximity_is_measured_in_body_heights():
    near = np.array([[100, 100, 160, 300], [250, 100, 310, 300]], dtype=np.float64)  # 150 px apart, 200 px tall
    far = np.array([[400, 50, 412, 90], [460, 50, 472, 90]], dtype=np.float64)  # 60 px apart, 40 px tall
    truth = np.repeat(np.r_[near, far][None], 30, axis=0)
    pair = track_pair(detections_of(truth))
    assert pair.people_seen == 4
    assert box_error(pair, truth[:, :2]) < 2


def test_fewer_than_two_people_is_no_pair():
    truth = walking_pair(30)
    with pytest.raises(RejectedInput, match=r"^no_pair: 1 person found in 30 searched frames"):
        track_pair(detections_of(truth[:, :1]))
    with pytest.raises(RejectedInput, match=r"^no_pair: 0 people"):
        track_pair({frame: np.zeros((0, 5)) for frame in range(30)})
    apart = truth.copy()
    apart[:15, 1] = np.nan
    apart[15:, 0] = np.nan
    apart[15:, 1] += [300, 0, 300, 0]  # too far to be the same track as person 0
    with pytest.raises(RejectedInput, match="no two of them together"):
        track_pair(detections_of(apart))


def test_detecting_every_kth_frame_is_bridged():
    truth = tracking_scene_boxes(40).astype(np.float64)
    frames = list(range(0, 40, 3)) + [39]
    pair = track_pair(detections_of(truth, jitter=0.2, frames=frames))
    assert set(pair.tracks.frames[0]) | set(pair.tracks.frames[1]) <= set(frames)
    assert pair.lost == ()
    assert box_error(pair, truth[:, :2]) < 2.5
    # the spacing may change within a video (every frame, then every 5th): the filter predicts per source frame
    fast = walking_pair(90, speed=4.0)
    frames = list(range(30)) + list(range(30, 90, 5)) + [89]
    pair = track_pair(detections_of(fast, jitter=0.2, frames=frames))
    assert pair.people_seen == 2 and pair.lost == ()
    assert box_error(pair, fast) < 1.5
    with pytest.raises(UsageError, match="every 17th frame"):
        track_pair(detections_of(walking_pair(40), frames=[0, 17, 34]))


def test_results_do_not_depend_on_detection_order():
    truth = occluded_behind(tracking_scene_boxes(40).astype(np.float64), front=0, back=1)
    detections = detections_of(truth)
    rng = np.random.default_rng(7)
    shuffled = {frame: detections[frame][rng.permutation(len(detections[frame]))] for frame in rng.permutation(40)}
    a, b = track_pair(detections), track_pair(shuffled)
    assert a.track_ids == b.track_ids and a.lost == b.lost and a.people_seen == b.people_seen
    for person in (0, 1):
        assert np.array_equal(a.tracks.frames[person], b.tracks.frames[person])
        assert np.array_equal(a.tracks.boxes[person], b.tracks.boxes[person])


def test_the_tracking_video_draws_each_figure_inside_its_box(tmp_path):
    truth = write_tracking_video(tmp_path / "three.mp4")
    with av.open(str(tmp_path / "three.mp4")) as container:
        images = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(images) == len(truth) == 40 and images[0].shape == (TRACKING_SIZE[1], TRACKING_SIZE[0], 3)
    colours = np.array(TRACKING_COLOURS, dtype=np.float64)
    checked = 0
    for image, boxes in zip(images, truth):
        for figure, (x0, y0, x1, y1) in enumerate(boxes):
            cx, cy = (x0 + x1) / 2, (y0 + (x1 - x0) + y1) / 2  # the body ellipse's centre, under the head
            in_front = boxes[:figure]  # and 4 px around it: yuv420p shares a pixel's colour with its neighbours
            if np.isnan(x0) or not 0 <= cx < TRACKING_SIZE[0] or ((in_front[:, 0] - 4 <= cx) & (cx < in_front[:, 2] + 4)).any():
                continue
            pixel = image[int(cy), int(cx)].astype(np.float64)
            assert np.argmin(np.linalg.norm(colours - pixel, axis=1)) == figure
            assert np.linalg.norm(colours[figure] - pixel) < 60
            checked += 1
        corner = image[2, 2].astype(np.float64)  # background, left of every figure
        assert np.linalg.norm(colours - corner, axis=1).min() > 60
    assert checked > 60  # of the 94 figures whose centre is on the frame, those not beside one in front


def test_tracking_fed_in_chunks_gives_the_pair_of_the_whole_video_at_once():
    from motionfleet.socialmirror.tracking import PairTracking

    detections = detections_of(walking_pair(90), jitter=0.5)
    whole = track_pair(detections, num_frames=95)
    frames = sorted(detections)
    for size in (1, 7, 64):
        tracking = PairTracking()
        for i in range(0, len(frames), size):
            tracking.add({f: detections[f] for f in frames[i:i + size]})
        chunked = tracking.pair(num_frames=95)
        assert chunked.track_ids == whole.track_ids and chunked.lost == whole.lost
        for a, b in zip(chunked.tracks.frames + chunked.tracks.boxes, whole.tracks.frames + whole.tracks.boxes):
            assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="ascending"):
        tracking.add({0: detections[0]})
