"""The in-process executor: one worker in the driver's process, shards one after another, no Ray."""

from __future__ import annotations

from typing import Callable

from motionfleet.core.execution.executor import Executor
from motionfleet.core.execution.ledger import Ledger, RunOutcome, progress_bar
from motionfleet.core.execution.policy import OutputUnwritable, one_line
from motionfleet.core.execution.worker import process_shard
from motionfleet.core.io import progress
from motionfleet.core.jobfolder.sink import JobFolder
from motionfleet.core.shards import Shard


class InProcessExecutor(Executor):
    def run(self, make_worker: Callable, shards: list[Shard], folder: JobFolder) -> RunOutcome:
        pending = self.pending(shards, folder)
        if not pending:
            return RunOutcome()
        worker = make_worker()
        with progress_bar(self.context, shards, pending) as bar:
            ledger = Ledger(folder, self.context, bar)
            for shard in pending:
                self._run_shard(worker, shard, ledger)
        return ledger.outcome

    def _run_shard(self, worker, shard: Shard, ledger: Ledger) -> None:
        """Run ``shard`` until it commits or the policy gives it up."""
        while True:
            try:
                with progress.reporting(lambda count: ledger.items_done(shard, count)):
                    done = process_shard(worker, shard, self.context.out_dir, self.context.metadata)
                ledger.commit(shard, done)
                return
            except OutputUnwritable:
                raise
            except Exception as err:  # any other error is this shard's: retried, then recorded
                if not ledger.error(shard, one_line(err)):
                    return
