"""Errors a user can cause: the ones the engine turns into rejected rows, and the ones that stop a job
(``exit_codes`` maps them to the command line's exit codes). This module imports nothing of the engine."""

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


class NoWorkers(RuntimeError):
    """No worker could be placed on the Ray cluster (no node offers the resource, or none stayed alive)."""


class OutputUnwritable(OSError):
    """The job folder cannot take more files (disk full, read-only, no permission, an object store
    that stopped answering or refuses the credentials): no retry helps, the job stops (exit 1)."""


class DataError(RuntimeError):
    """A data or checkpoint file that cannot be used; the message names the file and the fix (exit 1)."""


FAMILY_CHECKPOINTS = ("give a model folder written by motionfleet (model.safetensors + config.json) or the family's "
                      "released checkpoint")


@contextmanager
def checkpoint_errors(path, family: str, expected: str = FAMILY_CHECKPOINTS):
    """Turn whatever a model loader raises on a bad file (missing or wrong-shape keys, a bad
    config.json, a truncated file) into one DataError naming the file and the fix (``expected``:
    which files the loader takes)."""
    if path is None:
        yield
        return
    try:
        yield
    except (MissingFile, UnsafeCheckpoint, DataError):
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a usable {family} checkpoint ({first}); {expected}") from err
