"""``python -m motionfleet``: the same command line as ``motionfleet``."""

from motionfleet.cli import console

console()
