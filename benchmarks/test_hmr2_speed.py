"""HMR 2.0 speed on CPU: crops per second through crop + ViT + decoder head (``demo_estimates``)
at the tiny and the released (ViT-H) sizes, and the FLOPs per crop, counted on the meta device.

Released size: ~630M parameters (2.5 GB of fp32 dummy weights), 256 x 192 ViT input, 192 tokens.
The frames are 640 x 360 with two people of 120 x 300 pixels (no blur).
"""

import numpy as np
import pytest
import torch

from benchmarks.conftest import record
from motionfleet.bench import count_flops
from motionfleet.socialmirror import hmr2
from motionfleet.socialmirror.hmr2_estimate import CHUNK, demo_estimates

FRAMES = 4  # 8 crops: one model call of CHUNK
BOXES = np.array([[[100, 30, 220, 330], [380, 40, 500, 340]]] * FRAMES, dtype=np.float32)


def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (FRAMES, 360, 640, 3), dtype=np.uint8)


def flops_per_crop(config: hmr2.HMR2Config) -> int:
    with torch.device("meta"):
        model = hmr2.HMR2(config).eval()
        crops = torch.zeros(CHUNK, 3, 256, 256)
    with torch.no_grad():
        return count_flops(lambda: model(crops)) // CHUNK


@pytest.mark.parametrize("preset, rounds", [("tiny", 5), ("released", 1)])
def test_crops_per_second(benchmark, preset, rounds):
    model = hmr2.build_model(hmr2.PRESETS[preset])
    video = frames()
    benchmark.pedantic(demo_estimates, (model, video, BOXES), rounds=rounds, warmup_rounds=1)
    crops = FRAMES * BOXES.shape[1]
    flops = flops_per_crop(hmr2.PRESETS[preset])
    assert flops > 0
    benchmark.extra_info["flops_per_crop"] = flops
    if benchmark.stats:  # None under --benchmark-disable (the function ran once)
        record(benchmark, flops * crops, crops, note="items: crops",
               crops_per_s=crops / benchmark.stats.stats.median)
