"""YOLOX person detector (``socialmirror.detect``) on the CPU: frames/s at the test size and at
the released one (ByteTrack's YOLOX-x, 800 x 1440 test size, 1920 x 1080 frames), and the FLOPs
per frame of the released model, so that a GPU figure can be read against the arithmetic floor.

A call covers the whole detector: letterbox (resize, pad, normalise), one forward per batch, decode
and NMS. Dummy weights: the FLOPs and the forward's time do not depend on them; NMS time does a
little (the released weights keep far fewer boxes than the 0.23 threshold lets through here).
"""

import numpy as np
import pytest
import torch

from benchmarks.conftest import record
from motionfleet.bench import count_flops
from motionfleet.common import yolox
from motionfleet.socialmirror.detect import Detector, DetectorSettings

FRAME_SIZE = (1080, 1920)  # height, width
CASES = {  # name: (preset, test size, frames per call)
    "test": ("test", (256, 448), 8),
    "released": ("x", (800, 1440), 4),
}


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8) for _ in range(count)]


def flops_per_frame(config: yolox.YoloxConfig, test_size: tuple[int, int]) -> int:
    """FLOPs of one frame's forward (2 per multiply-add), counted on the meta device (no compute)."""
    with torch.device("meta"):
        model = yolox.YOLOX(config).eval()
        images = torch.empty(1, 3, *test_size)
    with torch.no_grad():
        return count_flops(lambda: model(images))


@pytest.mark.parametrize("case", list(CASES))
def test_detector_frames_per_second(benchmark, case):
    preset, test_size, count = CASES[case]
    config = yolox.PRESETS[preset]
    detector = Detector(yolox.build_yolox(config), DetectorSettings(test_size=test_size, batch_size=count))
    batch = frames(count)
    # released: 4 frames x 790 GFLOP a call, minutes on a 2-core CPU, so 2 rounds and no warm-up
    benchmark.pedantic(detector, (batch,), rounds=2 if case == "released" else 5, warmup_rounds=0 if case == "released" else 1)
    flops = flops_per_frame(config, test_size)
    record(benchmark, flops * count, count, note="items: frames", flops_per_frame=flops, preset=preset,
           test_size=list(test_size), frame_size=list(FRAME_SIZE))
