"""scorehoi's ``motionfleet bench`` case ``refine``: a refinement batch of the demo scenes
(``ScoreHOIRefiner.run_batch``: inversion, guided DDIM rounds and contact updates, metrics
excluded); items are images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch

from motionfleet.core.registry import BenchCase, bench_setting
from motionfleet.scorehoi.model import PRESETS
from motionfleet.scorehoi.settings import SAMPLER_PRESETS

if TYPE_CHECKING:  # motionfleet.bench is imported when a bench runs, not with the family
    from motionfleet.bench import BenchSettings, SetupClock


@dataclass(frozen=True)
class RefineBench:
    scorehoi_preset: str = bench_setting("released", "scorehoi model size of the dummy weights", choices=tuple(PRESETS))
    refine_preset: str = bench_setting("fast", "scorehoi sampler preset", choices=tuple(SAMPLER_PRESETS))  # paper: N 10, tau 50, step 2
    refine_rounds: Optional[int] = bench_setting(None, "scorehoi refinement rounds, instead of the sampler preset's (default: the "
                                           "preset's)", type=int, low=1, metavar="N")


def cases(own: RefineBench, settings: BenchSettings, clock: SetupClock) -> Callable[[int], dict[str, Callable[[], object]]]:
    from motionfleet.demo.scenes import demo_scenes
    from motionfleet.scorehoi.runner import ScoreHOIRefiner
    from motionfleet.scorehoi.settings import RefineSettings, model_spec
    from motionfleet.scorehoi.source import EstimateRecord, RefineItem

    spec = model_spec(own.scorehoi_preset)
    refiners = {}
    for name in settings.backends:
        rounds = {} if own.refine_rounds is None else {"rounds": own.refine_rounds}
        run = RefineSettings.from_preset(own.refine_preset, **rounds, batch_size=max(settings.batch_sizes),
                                         device=settings.device, backend=name, precision=settings.precision)
        refiners[name] = clock.build(name, lambda: ScoreHOIRefiner(spec, run))
    records = demo_scenes(PRESETS[own.scorehoi_preset].condition_dim).records

    def of_batch(batch: int) -> dict[str, Callable[[], object]]:
        items = [RefineItem(EstimateRecord(f"{records[i % len(records)].sample_id}-{i}", records[i % len(records)].values),
                            "guided") for i in range(batch)]
        return {name: torch.no_grad()(lambda r=r: r.run_batch(items, "guided")) for name, r in refiners.items()}

    return of_batch


BENCH = BenchCase(case="refine", unit="images", settings=RefineBench, preset="scorehoi_preset", cases=cases,
                  loop_settings=("refine_preset", "refine_rounds"))
