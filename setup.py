"""The packages are found, not listed: ``motionfleet`` is ``engine/`` (pyproject.toml's
``package-dir``), so a package added under it (a folder with an ``__init__.py``, e.g. a new family)
ships without another line; ``motionfleet.kernels`` and ``motionfleet.export`` are ``kernels/`` and
``export/``, folders without an ``__init__.py``. pyproject.toml holds everything else: setuptools'
``packages.find`` names what it finds after the folder it searches (``core``, not
``motionfleet.core``), so the mapped name is added here."""

from setuptools import find_packages, setup

setup(packages=["motionfleet", *(f"motionfleet.{name}" for name in find_packages("engine")),
                "motionfleet.kernels", "motionfleet.export"])
