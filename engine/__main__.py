"""``python -m motionfleet``: the same command line as ``motionfleet``."""

import sys

from motionfleet.cli import main

sys.exit(main())
