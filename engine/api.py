"""The Python API; the command line is a thin layer over it.

    import motionfleet
    report = motionfleet.generate(["two people shake hands", "one pushes the other"],
                                  out="runs/notebook", workers=0, preset="tiny", steps=10)
    table = motionfleet.read_results("runs/notebook")      # a pyarrow.Table

Keywords are the command line's flags without dashes (``guidance_scale=`` for
``--guidance-scale``), checked the same way: a bad value raises ``UsageError`` before any work.
Each job returns its report (the dict written to report.json), or None when every shard of
``out`` was already committed. Ctrl-C, or SIGTERM where the process has no SIGTERM handler of its
own, stops a job cleanly (lease released, committed shards kept) and raises ``KeyboardInterrupt``
(``Terminated`` for SIGTERM, from ``motionfleet.core.io.interrupts``); calling it again resumes.
``evaluate`` runs a family's evaluation protocol and ``leaderboard`` several models through one
protocol (README: evaluate, leaderboard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pyarrow as pa

Inputs = Union[str, Path, Sequence[Any], None]


def run(command: str, inputs: Inputs = None, *, out: str | Path, **settings) -> Optional[dict]:
    """Run (or resume) the job of any registered family (``command`` or family name)."""
    from motionfleet.core import jobs
    from motionfleet.core.io.interrupts import sigterm_interrupts

    with sigterm_interrupts():  # SIGTERM raises KeyboardInterrupt (Terminated): the lease is released
        return jobs.run(command, inputs, out=out, **settings)


def generate(prompts: Inputs = None, *, out: str | Path, workers: int | str = "auto", **settings) -> Optional[dict]:
    """Text -> two-person motion (dhvae). ``prompts``: a .txt / .jsonl / .parquet path, a list of
    strings or of dicts with the jsonl fields (``text``, ``id``, ``num_frames``), or None for the
    built-in set."""
    return run("generate", prompts, out=out, workers=workers, **settings)


def reconstruct(videos: Inputs = None, *, out: str | Path, workers: int | str = "auto", demo: bool = False,
                **settings) -> Optional[dict]:
    """Video corpus -> two-person SMPL motion (socialmirror). ``videos``: a folder, a .txt or
    .parquet manifest, or one video file; ``demo=True``: built-in synthetic videos."""
    return run("reconstruct", videos, out=out, workers=workers, demo=demo, **settings)


def refine(estimates: Inputs = None, *, out: str | Path, workers: int | str = "auto", demo: bool = False,
           **settings) -> Optional[dict]:
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
    "markdown": ...}`` (also written to OUT/leaderboard.parquet and .md)."""
    from motionfleet.evaluation import leaderboard as board

    return board.run(config, out)
