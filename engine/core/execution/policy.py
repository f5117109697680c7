"""What a job does about shards that fail, hang or lag, and about a job folder that takes no more files."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from motionfleet.core.errors import OutputUnwritable


@dataclass(frozen=True)
class FaultPolicy:
    """How a job treats shards that fail, hang or lag."""

    attempts: int = 3  # tries of a shard that raises before it is recorded as failed
    shard_timeout_s: Optional[float] = None  # None: derived from the shard times measured so far
    timeout_factor: float = 5.0  # derived timeout = factor x the slowest shard measured ...
    timeout_floor_s: float = 60.0  # ... and never less than this
    first_timeout_s: float = 1800.0  # before any shard has been measured (model load, first compile)
    worker_deaths: int = 5  # a shard under which this many workers died is failed (it may be what kills them)
    speculate_factor: float = 2.0  # with the queue empty, a shard running this x the median also runs on an idle worker
    placement_timeout_s: float = 300.0  # no worker alive and placed for this long: the job stops

    def timeout_s(self, measured: list[float]) -> float:
        if self.shard_timeout_s is not None:
            return self.shard_timeout_s
        if not measured:
            return self.first_timeout_s
        return max(self.timeout_floor_s, self.timeout_factor * max(measured))


_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def output_errors(out_dir: str):
    """Turn a disk-full / read-only / permission error writing the job folder into ``OutputUnwritable``."""
    try:
        yield
    except OSError as err:
        if err.errno not in _UNWRITABLE:
            raise
        where = f" ({err.filename})" if err.filename else ""
        raise OutputUnwritable(f"cannot write to the job folder {out_dir}: {err.strerror or err}{where}; free space or "
                               f"fix its permissions, then rerun (committed shards are kept)") from err


def one_line(err: BaseException) -> str:
    """An attempt's error as ``failed/`` records it: the type and the first line of the message."""
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0][:500] if text else type(err).__name__
