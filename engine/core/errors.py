"""Errors the engine turns into rejected rows instead of failed jobs."""


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
