"""motionfleet: batch inference and benchmarking of diffusion models of human interaction.

``import motionfleet`` is light: the API's functions import the engine (torch, Ray, the models)
when first called.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("motionfleet")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_API = {"generate", "reconstruct", "refine", "read_results", "run", "evaluate", "leaderboard", "load", "Pipeline", "Results"}
__all__ = ["__version__", *sorted(_API), "UsageError"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module("motionfleet.api"), name)
    if name == "UsageError":
        return import_module("motionfleet.core.options").UsageError
    raise AttributeError(f"module 'motionfleet' has no attribute {name!r}")
