"""The one place Numba's flags live.

Every kernel is ``nopython`` and ``nogil`` (stages run on threads, so kernels must release the
GIL), uses numpy's error model (no Python exceptions from arithmetic in the hot loop), and is
cached on disk unless ``HELIOSDB_NUMBA_CACHE=0``.  The cache directory is set before Numba is
imported so generated kernels and shipped ones share it.

Kernels sit below the API, so the two settings are read here from the environment; the
variables are documented with the rest of the configuration in ``heliosdb.config``
(``ENV_CACHE_DIR``, ``ENV_NUMBA_CACHE``), whose ``cache_dir()`` and ``numba_cache_enabled()``
give the same answers.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Where generated kernels and Numba's on-disk cache live (default ``~/.cache/heliosdb``).
ENV_CACHE_DIR = "HELIOSDB_CACHE_DIR"
#: Set to "0" to disable Numba's on-disk cache (every process compiles afresh).
ENV_NUMBA_CACHE = "HELIOSDB_NUMBA_CACHE"


def cache_dir() -> Path:
    """The directory for generated kernel sources and the Numba cache.

    ``$HELIOSDB_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/heliosdb`` (``~/.cache/heliosdb``).
    """
    root = os.environ.get(ENV_CACHE_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "heliosdb",
    )
    return Path(root)


def cache_enabled() -> bool:
    """Whether compiled kernels are cached on disk (``$HELIOSDB_NUMBA_CACHE``, default on)."""
    return os.environ.get(ENV_NUMBA_CACHE, "1") not in ("0", "false", "no", "off")


os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))

import numba  # noqa: E402  (must come after NUMBA_CACHE_DIR is set)

FLAGS = dict(nopython=True, nogil=True, error_model="numpy", cache=cache_enabled())


def jit(fn):
    """Compile ``fn`` with the engine's flags (a kernel module's decorator).

    >>> FLAGS["nogil"], FLAGS["nopython"]
    (True, True)
    """
    return numba.jit(**FLAGS)(fn)
