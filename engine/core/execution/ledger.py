"""Driver side: the ledger of a run (commits, failures, the attempts of each shard) and its progress bar.

Whether an attempt is the shard's first commit is the job folder's decision (``JobFolder.commit``);
the ledger asks it, records the outcome and moves the bar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tqdm import tqdm

from motionfleet.core.execution.context import RunContext
from motionfleet.core.execution.policy import output_errors
from motionfleet.core.execution.worker import ShardDone
from motionfleet.core.jobfolder import failures
from motionfleet.core.jobfolder.sink import JobFolder
from motionfleet.core.shards import Shard


@dataclass
class RunOutcome:
    done: list[ShardDone] = field(default_factory=list)
    failed: list[failures.ShardFailure] = field(default_factory=list)


def progress_bar(context: RunContext, shards: list[Shard], pending: list[Shard]) -> tqdm:
    """The bar of a run: all the job's items, those of committed shards already counted."""
    total = sum(len(s.items) for s in shards)
    return tqdm(total=total, initial=total - sum(len(s.items) for s in pending), unit=context.unit,
                desc=context.job["job"], disable=os.environ.get("MOTIONFLEET_PROGRESS", "1") == "0")


class Ledger:
    """Driver side: commits, failures and the attempts of each shard, shared by both executors."""

    def __init__(self, folder: JobFolder, context: RunContext, bar: tqdm):
        self.folder, self.out_dir, self.policy, self.bar = folder, context.out_dir, context.policy, bar
        self.outcome = RunOutcome()
        self.errors: dict[str, int] = {}
        self.deaths: dict[str, int] = {}
        self.finished: set[str] = set()  # committed or recorded as failed in this run
        self.shown: dict[str, int] = {}  # items of an unfinished shard the bar already counts

    def items_done(self, shard: Shard, count: int) -> None:
        """A batch of ``shard`` finished in a worker: the bar moves now, the commit adds the rest."""
        if shard.shard_id in self.finished:
            return
        count = min(count, len(shard.items) - self.shown.get(shard.shard_id, 0))
        self.shown[shard.shard_id] = self.shown.get(shard.shard_id, 0) + count
        self.bar.update(count)

    def commit(self, shard: Shard, report: ShardDone) -> bool:
        """Commit a finished attempt; False when the job folder already holds another attempt's commit
        (the first commit wins: ``JobFolder.commit`` removes this one's files), or when this run
        already recorded the shard as failed (its files are removed)."""
        if any(f.shard_id == shard.shard_id for f in self.outcome.failed):
            self.folder.discard(report.files)
            return False
        with output_errors(self.out_dir):
            if not self.folder.commit(shard.shard_id, report.files, report.summary()):
                return False
        failures.clear(self.out_dir, shard.shard_id)
        self.finished.add(shard.shard_id)
        self.outcome.done.append(report)
        self.bar.update(len(shard.items) - self.shown.pop(shard.shard_id, 0))
        return True

    def error(self, shard: Shard, err: str) -> bool:
        """An attempt raised (or timed out); True when the shard may be tried again."""
        self.errors[shard.shard_id] = self.errors.get(shard.shard_id, 0) + 1
        return self._retry_or_fail(shard, err, self.errors[shard.shard_id] < self.policy.attempts)

    def died(self, shard: Shard, err: str) -> bool:
        """The worker under an attempt died; True when the shard may be tried again."""
        self.deaths[shard.shard_id] = self.deaths.get(shard.shard_id, 0) + 1
        return self._retry_or_fail(shard, err, self.deaths[shard.shard_id] < self.policy.worker_deaths)

    def _retry_or_fail(self, shard: Shard, err: str, retry: bool) -> bool:
        if shard.shard_id in self.finished:
            return False
        if retry:
            return True
        attempts = self.errors.get(shard.shard_id, 0) + self.deaths.get(shard.shard_id, 0)
        failure = failures.ShardFailure(shard.shard_id, err, attempts)
        failures.record(self.out_dir, failure)
        self.finished.add(shard.shard_id)
        self.bar.update(-self.shown.pop(shard.shard_id, 0))
        self.outcome.failed.append(failure)
        return False
