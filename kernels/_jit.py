"""The one place Numba's flags live.

Every kernel is ``nopython`` and ``nogil`` (stages run on threads, so kernels must release the
GIL), uses numpy's error model (no Python exceptions from arithmetic in the hot loop), and is
cached on disk unless ``HELIOSDB_NUMBA_CACHE=0``.  The cache directory is set before Numba is
imported so generated kernels and shipped ones share it.
"""
from __future__ import annotations

import os

from ..config import cache_dir, numba_cache_enabled

os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))

import numba  # noqa: E402  (must come after NUMBA_CACHE_DIR is set)

FLAGS = dict(nopython=True, nogil=True, error_model="numpy", cache=numba_cache_enabled())


def jit(fn):
    """Compile ``fn`` with the engine's flags (a kernel module's decorator).

    >>> FLAGS["nogil"], FLAGS["nopython"]
    (True, True)
    """
    return numba.jit(**FLAGS)(fn)
