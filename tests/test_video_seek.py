"""A shard in the middle of a video decodes from the keyframe before it, not from frame 0, and
gets exactly the frames and clips a full decode gives there."""

import av
import numpy as np
import pytest

from motionfleet.demo.videos import write_demo_video
from motionfleet.socialmirror import video
from motionfleet.socialmirror.video import iter_clips, iter_frames


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("seek") / "long.mp4"
    write_demo_video(path, num_frames=240, fps=30, size=(96, 64), keyframe_interval=24)  # B-frames on (x264)
    return path


def frame_key(frame):
    return frame.index, frame.timestamp_s, frame.source_index, frame.scale, frame.rgb.tobytes()


@pytest.mark.parametrize("fps", [30.0, 12.5])
def test_frames_from_a_start_frame_are_those_of_a_full_decode(long_video, fps):
    full = [frame_key(f) for f in iter_frames(long_video, fps)]
    for start in (1, 30, 57, len(full) - 3):
        assert [frame_key(f) for f in iter_frames(long_video, fps, start_frame=start)] == full[start:]


def test_frames_before_the_last_keyframe_are_not_decoded(long_video):
    with av.open(str(long_video)) as container:
        stream = container.streams.video[0]
        skipped, keyframe = video._skip_plan(container, stream, before_s=5)
        first = next(container.decode(stream))
    assert keyframe is not None and first.pts == keyframe
    assert 120 <= len(skipped) <= 150  # every frame before the keyframe at or before 5 s, stood in for


def test_clips_from_a_first_clip_are_those_of_a_full_stream(long_video):
    def keys(clips):
        return [(c.start_frame, c.owned.tobytes(), c.mask.tobytes(), c.frames.tobytes()) for c in clips]

    full = keys(iter_clips(iter_frames(long_video, 30.0), clip_len=16, stride=12))
    for first in (1, 7, len(full) - 1):
        part = iter_clips(iter_frames(long_video, 30.0, start_frame=first * 12), clip_len=16, stride=12, first_clip=first)
        assert keys(part) == full[first:]
    owned = np.concatenate([np.frombuffer(o, bool) for _, o, _, _ in full])
    assert owned.sum() == 240  # every frame owned once over the clips
