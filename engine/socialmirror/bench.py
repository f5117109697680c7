"""socialmirror's ``motionfleet bench`` case ``diffuse``: the DDIM steps of the denoiser over clips
of encoded frames (one call per step through the backend); items are clips of 2 people x 16 frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from motionfleet.core.registry import BenchCase, bench_setting
from motionfleet.socialmirror.model import PRESETS

if TYPE_CHECKING:  # motionfleet.bench is imported when a bench runs, not with the family
    from motionfleet.bench import BenchSettings, SetupClock


@dataclass(frozen=True)
class DiffuseBench:
    socialmirror_preset: str = bench_setting("released", "socialmirror model size of the dummy weights", choices=tuple(PRESETS))


def cases(own: DiffuseBench, settings: BenchSettings, clock: SetupClock) -> Callable[[int], dict[str, Callable[[], None]]]:
    from motionfleet.core.runtime import backends
    from motionfleet.socialmirror import model as socialmirror
    from motionfleet.socialmirror.runner import ReconstructSettings

    config = PRESETS[own.socialmirror_preset]
    model = socialmirror.build_model(config).to(settings.device).eval()
    steps = ReconstructSettings().steps
    runners = {name: clock.build(name, lambda: backends.make_backend(name, model, settings.precision, settings.device,
                                                                     weights="dummy, seed 0"))
               for name in settings.backends}

    def of_batch(batch: int) -> dict[str, Callable[[], None]]:
        x, _, image, bbox, text = (t.to(settings.device) for t in socialmirror.example_inputs(config, batch))
        timesteps = [round(100 * (1 - i / steps)) - 20 for i in range(steps)]  # 80, 60, 40, 20, 0

        def diffuse(run) -> None:
            y = x
            for t in timesteps:
                y = run(y, t, image, bbox, text)

        return {name: torch.no_grad()(lambda r=r: diffuse(r)) for name, r in runners.items()}

    return of_batch


BENCH = BenchCase(case="diffuse", unit="clips", settings=DiffuseBench, preset="socialmirror_preset", cases=cases)
