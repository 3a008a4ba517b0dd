"""Compiled kernels of HeliosDB (installed as ``heliosdb.kernels``).

Numba kernels are generated or written in Python (``codegen``, ``window``); the fixed stateful
kernels (hash table key -> dense group id, grouped accumulators) are Cython (``_hashagg``).
Every public kernel has a plain numpy twin in ``reference`` that the tests compare against.
"""
from __future__ import annotations

import time


def warmup() -> float:
    """Compile (or load from the on-disk cache) the fixed kernels; returns the seconds it took.

    Call it in a notebook's first cell so the first pipeline does not wait for compilation.

    Examples
    --------
    >>> from heliosdb import kernels
    >>> kernels.warmup() >= 0
    True
    """
    import numpy as np

    from . import window

    t0 = time.perf_counter()
    ts = np.arange(4, dtype=np.int64)
    window.tumbling_starts(ts, 1_000_000, 10)
    return time.perf_counter() - t0
