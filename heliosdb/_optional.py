"""Optional dependencies: each belongs to an extra of the distribution, and a job that needs
one that is missing fails when it is built, naming the extra to install, never mid-run.

>>> require("json", "kafka", "kafka_source()")   # present: returns quietly
"""
from __future__ import annotations

import importlib.util
import sys

from .errors import ConfigError

DISTRIBUTION = "heliosdb-streaming"


def missing(module: str) -> bool:
    """Whether ``module`` cannot be imported here (without importing it)."""
    if sys.modules.get(module) is not None:
        return False                       # already imported (or provided by the host)
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):      # a parent package is absent, or a broken install
        return True


def require(module: str, extra: str, feature: str) -> None:
    """Raise a ``ConfigError`` naming the extra when ``module`` (which ``feature`` needs) is
    not installed.

    >>> require("surely_not_installed_mod", "rocksdb", "StateBackend.rocksdb()")
    Traceback (most recent call last):
    ...
    heliosdb.errors.ConfigError: StateBackend.rocksdb() needs the Python package 'surely_not_installed_mod', which is not installed; install the extra: pip install 'heliosdb-streaming[rocksdb]'
    """
    if missing(module):
        msg = (f"{feature} needs the Python package {module!r}, which is not installed; install "
               f"the extra: pip install '{DISTRIBUTION}[{extra}]'")
        raise ConfigError(msg)


#: fsspec protocols whose implementation comes with an extra of ours.
_PROTOCOLS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


def require_storage(url: str, feature: str) -> None:
    """Check that the filesystem behind ``url`` (an fsspec URL) can be used here.

    >>> require_storage("/tmp/out", "sinks.parquet()")
    """
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    if protocol in _PROTOCOLS:
        module, extra = _PROTOCOLS[protocol]
        require(module, extra, f"{feature} with {protocol}:// URLs")
