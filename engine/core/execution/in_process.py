"""The in-process executor: one worker in the driver's process, no Ray.

A worker that batches across shards (``batcher``) takes shards in order while its batch is not
full and commits each when its last item is done; any other runs one shard after another.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from motionfleet.core.execution.batcher import ShardBatcher
from motionfleet.core.execution.executor import Executor
from motionfleet.core.execution.ledger import Ledger, RunOutcome, progress_bar
from motionfleet.core.execution.policy import OutputUnwritable, one_line
from motionfleet.core.execution.worker import Started, process_shard, run_split_on_oom, write_run
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
            if getattr(make_worker, "batches_across_shards", False):
                self._run_batched(worker, pending, ledger)
            else:
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

    def _run_batched(self, worker, pending: list[Shard], ledger: Ledger) -> None:
        """Batches across the open shards; a shard that fails is retried as the policy says."""
        batcher = ShardBatcher(worker, lambda items: run_split_on_oom(worker, items), ledger.items_done)
        queue, started = deque(pending), {}
        while queue or batcher.open_shards:
            while queue and not batcher.full():
                shard = queue.popleft()
                started[shard.shard_id] = Started.now()
                try:
                    batcher.open(shard)  # reads a streamed shard's rows (they may have changed since planning)
                except Exception as err:
                    self._retry_or_record(shard, err, ledger, queue)
            for run in batcher.run_batch():
                if run.error is not None:
                    self._retry_or_record(run.shard, run.error, ledger, queue)
                    continue
                ledger.commit(run.shard, write_run(run, started[run.shard.shard_id], self.context.out_dir,
                                                   self.context.metadata))

    @staticmethod
    def _retry_or_record(shard: Shard, err: Exception, ledger: Ledger, queue: deque) -> None:
        if ledger.error(shard, one_line(err)):
            queue.appendleft(shard)
