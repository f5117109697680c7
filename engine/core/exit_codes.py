"""How the command line reports an error a user can cause: one line and an exit code."""

from __future__ import annotations

import json

from motionfleet.core.errors import ClusterUnreachable, DataError, MissingFile, NoWorkers, RejectedInput, UnsafeCheckpoint
from motionfleet.core.jobfolder.lease import FolderRefused
from motionfleet.core.options import UsageError


def exit_code_and_message(err: BaseException) -> tuple[int | None, str]:
    """(exit code, one-line message) for an error a user can cause: 2 for a bad invocation, 1 for
    a data or checkpoint problem (an evaluation's ``IncompleteEvaluation`` is a ``DataError``);
    (None, "") for anything else (a bug: its traceback is wanted). A Ray worker's error arrives
    here as itself (``execution.ray.scheduler.plain_errors``)."""
    message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, _usage_errors()):
        return 2, message
    if isinstance(err, _data_errors()):
        return 1, message
    return None, ""


def _usage_errors() -> tuple[type, ...]:
    from motionfleet.core.runtime.backends import BackendUnavailable  # torch: imported once an error is shown

    return UsageError, BackendUnavailable, FolderRefused, ClusterUnreachable


def _data_errors() -> tuple[type, ...]:
    import pyarrow as pa

    return (DataError, MissingFile, UnsafeCheckpoint, RejectedInput, OSError, json.JSONDecodeError, pa.ArrowException,
            ValueError, NoWorkers)
