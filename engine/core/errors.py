"""Errors: the ones the engine turns into rejected rows, and how the command line reports the rest."""

from contextlib import contextmanager


class RejectedInput(ValueError):
    """One input (prompt, video, estimate, checkpoint row) that cannot be processed.

    The job records ``reason`` in its ``rejected`` table and goes on with the rest.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint that can only be read by running arbitrary pickle code."""


class MissingFile(FileNotFoundError):
    """A model or data file the user must provide; the message names it and where it goes."""


class ClusterUnreachable(ConnectionError):
    """``--address`` names no Ray cluster this machine can reach."""


class DataError(RuntimeError):
    """A data or checkpoint file that cannot be used; the message names the file and the fix (exit 1)."""


@contextmanager
def checkpoint_errors(path, family: str):
    """Turn whatever a model loader raises on a bad file (missing or wrong-shape keys, a bad
    config.json, a truncated file) into one DataError naming the file and the fix."""
    if path is None:
        yield
        return
    try:
        yield
    except (MissingFile, UnsafeCheckpoint, DataError):
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a usable {family} checkpoint ({first}); give a model folder written by "
                        f"motionfleet (model.safetensors + config.json) or the family's released checkpoint") from err


def exit_code_and_message(err: BaseException) -> tuple[int | None, str]:
    """(exit code, one-line message) for an error a user can cause: 2 for a bad invocation, 1 for
    a data or checkpoint problem; (None, "") for anything else (a bug: its traceback is wanted)."""
    err = _unwrap_ray(err)
    usage = _usage_errors()
    message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, usage):
        return 2, message
    if isinstance(err, _data_errors()):
        return 1, message
    return None, ""


def _usage_errors() -> tuple[type, ...]:
    from motionfleet.core.backends import BackendUnavailable
    from motionfleet.core.options import UsageError
    from motionfleet.core.sink import FolderRefused

    return UsageError, BackendUnavailable, FolderRefused, ClusterUnreachable


def _data_errors() -> tuple[type, ...]:
    import json

    import pyarrow as pa

    from motionfleet.core.executors import NoWorkers
    from motionfleet.evaluation.results import IncompleteEvaluation

    return (DataError, MissingFile, UnsafeCheckpoint, RejectedInput, OSError, json.JSONDecodeError,
            pa.ArrowException, ValueError, NoWorkers, IncompleteEvaluation)


def _unwrap_ray(err: BaseException) -> BaseException:
    """The error a Ray worker raised, without Ray's wrapper (and its remote traceback)."""
    import sys

    if "ray" not in sys.modules:
        return err
    from ray import exceptions

    if isinstance(err, exceptions.RayTaskError) and err.cause is not None:
        return _unwrap_ray(err.cause)
    if isinstance(err, exceptions.RayActorError):
        cause = getattr(err, "error_msg", "") or str(err)
        return DataError(f"a Ray worker died: {cause.strip().splitlines()[0]}")
    return err
