"""The package version, defined once: setup.py reads it from here, ``heliosdb.__version__`` and
``heliosdb --version`` report it."""

__version__ = "0.2.0"
