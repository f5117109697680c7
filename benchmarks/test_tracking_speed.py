"""The tracks stage's CPU work after detection (issue 20: tracking on CPU workers has to keep up
with a GPU detector, 500 video frames/s per H100): ``track_pair`` over one video, ByteTrack and the
pair search, in frames/s on seeded synthetic crowds (``demo.videos.crowd_detections``: people
walking across a 1920 x 1080 frame, each in view for 300 frames, every box detected).

Cases: people in view x frames. The pair search costs the sum over frames of (people on the
frame)^2, ByteTrack about people x frames; ``tracks`` is the number of confirmed tracks found.
"""

import pytest

from benchmarks.conftest import record
from motionfleet.demo.videos import crowd_detections
from motionfleet.socialmirror.tracking import track_pair

CASES = {  # name: (people in view, frames)
    "10x900": (10, 900),
    "30x3000": (30, 3000),
    "60x1000": (60, 1000),
}


@pytest.mark.parametrize("case", list(CASES))
def test_track_pair_frames_per_second(benchmark, case):
    people, frames = CASES[case]
    detections = crowd_detections(frames, people, seed=0)
    pair = benchmark.pedantic(track_pair, (detections,), rounds=3, iterations=1, warmup_rounds=1)
    record(benchmark, 0, frames, note="items: video frames", people=people, frames=frames, tracks=pair.people_seen,
           boxes=sum(len(d) for d in detections.values()))
