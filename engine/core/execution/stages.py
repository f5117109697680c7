"""Stages: work that a job's shards read, done once and committed before them.

A stage is a job of its own in ``<out>/stages/<name>`` (a job folder like any: its own
``job.json``, leases, commit records, resumable, checked by ``verify``). Its shards run first, on
the same executor and workers layout; then the driver reads the stage's commit records once (the
folder's compacted cache: one Parquet file, not one read per input) and ``Stage.attach`` hands each
of the job's shards the ``StageFiles`` of the stage shards it reads. Identities that must not
depend on sharding (a video's person tracks, read by every clip shard of the video) are computed
this way: once per stage shard, whatever the job's shard size or worker count.

A stage's files are found from its validated commit records (``sink.record_problem``: each path is
``<table>/<shard>.<attempt>.parquet`` inside the stage folder), never from a name an input gives.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from motionfleet.core.jobfolder.sink import STAGES_DIR, committed_records
from motionfleet.core.jobfolder.storage import Storage
from motionfleet.core.shards import Shard


@dataclass(frozen=True)
class StageFiles:
    """One committed stage shard's tables: ``location`` its stage's job folder, ``results`` and
    ``rejected`` the paths inside it that its commit record names."""

    location: str
    results: str
    rejected: str

    def read(self, table: str = "results") -> pa.Table:
        return pq.read_table(io.BytesIO(Storage(self.location).read(getattr(self, table))))


@dataclass(frozen=True)
class Stage:
    """``shards`` run by ``runner(spec, settings)`` (a family runner) into ``stages/<name>``;
    ``job`` decides their bytes; ``attach(job shards, {stage shard id: StageFiles})`` returns the
    job's shards with what each reads from the stage (a stage shard that failed after its retries
    has no files: ``attach`` decides what its readers do)."""

    name: str
    shards: list[Shard]
    job: dict
    runner: type
    attach: Callable[[list[Shard], dict[str, StageFiles]], list[Shard]]
    unit: str = "shard"  # what the progress display counts


def stage_location(out_dir: str, name: str) -> str:
    return f"{out_dir.rstrip('/')}/{STAGES_DIR}/{name}"


def committed_files(location: str) -> dict[str, StageFiles]:
    """stage shard id -> its committed files, from the stage folder's commit records."""
    storage = Storage(location)
    records = committed_records(storage)
    return {shard_id: StageFiles(storage.location, record["files"]["results"]["path"], record["files"]["rejected"]["path"])
            for shard_id, record in records.items()}
