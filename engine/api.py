"""The Python API; the command line is a thin layer over it.

    import motionfleet
    report = motionfleet.generate(["two people shake hands", "one pushes the other"],
                                  out="runs/notebook", workers=0, preset="tiny", steps=10)
    table = motionfleet.read_results("runs/notebook")      # a pyarrow.Table

Keywords are the command line's flags without dashes (``guidance_scale=`` for
``--guidance-scale``), checked the same way: a bad value raises ``UsageError`` before any work.
Each job returns its report (the dict written to report.json); a call on a folder whose every
shard was already committed runs nothing and returns the folder's report. Ctrl-C, or SIGTERM where the process has no SIGTERM handler of its
own, stops a job cleanly (lease released, committed shards kept) and raises ``KeyboardInterrupt``
(``Terminated`` for SIGTERM, from ``motionfleet.core.io.interrupts``); calling it again resumes.
``evaluate`` runs a family's evaluation protocol and ``leaderboard`` several models through one
protocol (docs/evaluate.md).

``load`` keeps a family's model between calls and returns rows in memory, no job folder:

    pipe = motionfleet.load("dhvae", preset="tiny", steps=10)   # the model is built once, here
    out = pipe.generate(["two people shake hands"])              # out.results, out.rejected: pyarrow.Table
    frame = pipe.generate(pandas.DataFrame({"text": ["two people wave"], "num_frames": [60]})).to_pandas()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import pyarrow as pa

from motionfleet.core.options import UsageError

Inputs = Union[str, Path, Sequence[Any], None]  # a Pipeline also takes a table: pandas / polars DataFrame, pyarrow.Table


def run(command: str, inputs: Inputs = None, *, out: str | Path, **settings) -> dict:
    """Run (or resume) the job of any registered family (``command`` or family name)."""
    from motionfleet.core import jobs
    from motionfleet.core.io.interrupts import sigterm_interrupts

    with sigterm_interrupts():  # SIGTERM raises KeyboardInterrupt (Terminated): the lease is released
        return jobs.run(command, inputs, out=out, **settings)


def generate(prompts: Inputs = None, *, out: str | Path, workers: int | str = "auto", **settings) -> dict:
    """Text -> two-person motion (dhvae). ``prompts``: a .txt / .jsonl / .parquet path, a list of
    strings or of dicts with the jsonl fields (``text``, ``id``, ``num_frames``), or None for the
    built-in set."""
    return run("generate", prompts, out=out, workers=workers, **settings)


def reconstruct(videos: Inputs = None, *, out: str | Path, workers: int | str = "auto", demo: bool = False,
                **settings) -> dict:
    """Video corpus -> two-person SMPL motion (socialmirror). ``videos``: a folder, a .txt or
    .parquet manifest, or one video file; ``demo=True``: built-in synthetic videos."""
    return run("reconstruct", videos, out=out, workers=workers, demo=demo, **settings)


def refine(estimates: Inputs = None, *, out: str | Path, workers: int | str = "auto", demo: bool = False,
           **settings) -> dict:
    """Initial human-object estimates -> score-guided refinement (scorehoi). ``estimates``: a
    Parquet file; ``demo=True``: built-in synthetic scenes."""
    return run("refine", estimates, out=out, workers=workers, demo=demo, **settings)


def read_results(out: str | Path, rejected: bool = False) -> pa.Table:
    """Every committed shard's rows of a job folder (``rejected=True``: the rejected rows)."""
    from motionfleet.core.jobfolder import sink

    return sink.read_results(out, sink.REJECTED_DIR if rejected else sink.RESULTS_DIR)


def evaluate(family: str, out: str | Path, dataset: Optional[str] = None, *, workers: int | str = "auto",
             address: Optional[str] = None, **settings) -> dict:
    """Run (or resume) ``family``'s evaluation protocol into ``out``; returns metrics.json's body.
    ``settings``: ``motionfleet evaluate``'s flags without dashes (``replications=20``)."""
    from motionfleet.evaluation import api

    return api.evaluate(family, out, dataset, workers, address, **settings)


def leaderboard(config: str | Path, out: str | Path) -> dict:
    """Run (or resume) every entry of a leaderboard TOML into ``out``; returns ``{"rows": [...],
    "markdown": ..., "board": ...}`` (also written to OUT/leaderboard.parquet, .md and .json)."""
    from motionfleet.evaluation import leaderboard as board

    return board.run(config, out)


def load(family: str, **settings) -> "Pipeline":
    """``family``'s model (a family or command name), built and warmed up once, checked as the job
    functions check it: ``settings`` are theirs less the run's (no ``out``, ``workers``, shards)."""
    from motionfleet.core import jobs, registry

    chosen = registry.get(family)
    _, spec, config = jobs.checked_build(chosen, settings)
    return Pipeline(chosen, spec, config)


class Results(NamedTuple):
    """A pipeline call's rows: the same columns and bytes a job writes to results/ and rejected/."""

    results: pa.Table
    rejected: pa.Table

    def to_pandas(self):
        """The results as a pandas DataFrame (the rejected rows stay in ``rejected``)."""
        return self.results.to_pandas()


class Pipeline:
    """One family's runner, kept between calls (``load``). ``pipe(inputs)`` (or ``run``, or the
    family's verb: ``generate``, ``refine``, ``reconstruct``) plans ``inputs`` as the job would
    and runs every shard here, in memory: the rows are those ``read_results`` gives for the job."""

    def __init__(self, family, spec, config):
        from motionfleet.core.execution import WarmWorker

        self.family, self.spec, self.config = family, spec, config
        self.runner = WarmWorker(family.runner, spec, config)()

    def __repr__(self) -> str:
        return f"Pipeline({self.family.name!r}, device={self.config.device!r})"

    def run(self, inputs: Any = None, *, demo: bool = False) -> Results:
        """``inputs``: what the job function takes (a path; dhvae: a list of strings or dicts, None:
        the built-in set), or a table of the input file's columns (a pandas / polars DataFrame or a
        pyarrow Table); ``demo=True``: the family's built-in inputs."""
        import tempfile

        from motionfleet.core import jobs
        from motionfleet.core.execution.planning import planning

        if demo and not self.family.demo:
            raise UsageError(f"{self.family.command} has no demo inputs")
        with tempfile.TemporaryDirectory(prefix="motionfleet-pipeline-") as scratch:
            inputs = jobs.checked_inputs(self.family, None if demo else self._as_input(inputs, Path(scratch)), demo)
            with planning(0, None):
                plan = self.family.plan(inputs, self.spec, self.config, None, Path(scratch))
            return _concatenated(run_in_memory(self.runner, plan.shards))

    __call__ = run

    def generate(self, prompts: Any = None) -> Results:
        return self._verb("generate", prompts)

    def refine(self, estimates: Any = None, *, demo: bool = False) -> Results:
        return self._verb("refine", estimates, demo)

    def reconstruct(self, videos: Any = None, *, demo: bool = False) -> Results:
        return self._verb("reconstruct", videos, demo)

    def _verb(self, command: str, inputs: Any, demo: bool = False) -> Results:
        if command != self.family.command:
            raise UsageError(f"this pipeline is {self.family.name} ({self.family.command}); "
                             f"call pipe.{self.family.command}(...) or load the family that does {command}")
        return self.run(inputs, demo=demo)

    def _as_input(self, inputs: Any, scratch: Path) -> Any:
        """A table as the Parquet file the job would read (its columns: the family's page in docs/);
        a list of dicts too, where the family reads files only."""
        if isinstance(inputs, (str, Path)) or inputs is None:
            return inputs
        if isinstance(inputs, (list, tuple)) and self.family.name == "dhvae":
            return list(inputs)
        if self.family.name == "socialmirror":
            raise UsageError("a reconstruct pipeline takes a folder of videos, a .txt or .parquet manifest or one "
                             "video file (its paths resolve against the manifest's folder), or demo=True")
        import pyarrow.parquet as pq

        path = scratch / "inputs.parquet"
        pq.write_table(_as_table(inputs), path)
        return str(path)


def _as_table(inputs: Any) -> pa.Table:
    """A pyarrow Table of a pandas or polars DataFrame, a pyarrow Table or a list of dicts."""
    if isinstance(inputs, pa.Table):
        return inputs
    if isinstance(inputs, (list, tuple)) and all(isinstance(row, dict) for row in inputs):
        return pa.Table.from_pylist(list(inputs))
    if type(inputs).__module__.split(".")[0] == "pandas":
        return pa.Table.from_pandas(inputs, preserve_index=False)  # the index is not an input column
    if hasattr(inputs, "__arrow_c_stream__"):  # polars and other Arrow-speaking tables
        return pa.table(inputs)
    raise UsageError(f"inputs of type {type(inputs).__name__}: give a path, a DataFrame, a pyarrow Table "
                     "or a list of dicts with the input file's columns")


def run_in_memory(runner, shards: list) -> list[tuple[pa.Table, pa.Table]]:
    """(results, rejected) of each shard, in order, run by ``runner`` as a job's worker runs them:
    batches across shards where the runner can, each shard alone otherwise; a shard that fails raises."""
    from collections import deque

    from motionfleet.core.execution.batcher import ShardBatcher, batches_across_shards
    from motionfleet.core.execution.worker import run_split_on_oom

    if not batches_across_shards(runner):
        return [run_split_on_oom(runner, tuple(shard.items))[:2] for shard in shards]
    batcher, queue, tables = ShardBatcher(runner, lambda items: run_split_on_oom(runner, items)), deque(shards), {}
    while queue or batcher.open_shards:
        while queue and not batcher.full():
            batcher.open(queue.popleft())
        for run in batcher.run_batch():
            if run.error is not None:
                raise run.error
            tables[run.shard.shard_id] = (run.results, run.rejected)
    return [tables[shard.shard_id] for shard in shards]


def _concatenated(tables: list[tuple[pa.Table, pa.Table]]) -> Results:
    return Results(*(pa.concat_tables([t[i] for t in tables]).combine_chunks() for i in (0, 1)))
