"""The run context: what every part of a run needs to know, set once when the job folder opens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from motionfleet.core.execution.policy import FaultPolicy


@dataclass(frozen=True)
class RunContext:
    """One run of one job: its folder, its identity, and where and how its shards run."""

    out_dir: str  # the job folder (a path or URI; absolute once opened: workers may run in another folder)
    job: dict  # the job's identity as ``job.json`` records it; ``job["job"]`` names it on the progress bar
    workers: int = 1  # Ray actors, one model each; 0: this process, without Ray
    address: Optional[str] = None  # the Ray cluster to join (None: the embedded one, or RAY_ADDRESS)
    device: str = "cpu"  # where the workers run their models
    unit: str = "item"  # what a work item is called on the progress bar
    batch_items: int = 1  # items per model batch: a worker that batches across shards is sent enough shards to fill one
    policy: FaultPolicy = field(default_factory=FaultPolicy)

    @property
    def metadata(self) -> dict[str, str]:
        """The Parquet metadata every file of the job carries."""
        return {"motionfleet.job": json.dumps(self.job, sort_keys=True, default=str)}
