"""Compiled kernels of HeliosDB (installed as ``heliosdb.kernels``).

Numba kernels are generated or written in Python (``window``, ``partition``, ``pyops``); the
fixed stateful kernels (hash table key -> dense group id, grouped accumulators) are Cython
(``_hashagg``, ``_accum``).  Every public kernel has a plain numpy twin in ``reference`` that the
tests compare against.

Generated kernels: the expression IR (``ir``) is what the engine's expressions are made of; a
chain of stateless steps becomes a ``program``; ``codegen`` compiles a program for one null
pattern of its input: ``rewrite`` (constant folding on the tree), ``emit`` (the tree as the
source of one Numba kernel, with ``arrow_eval`` for strings) and ``kernel_cache`` (each source
compiled once, and cached on disk).  Nothing here imports the layers above: settings come from
the environment (``_jit``) or from the caller.
"""
from __future__ import annotations

import time


_WARM = False


def warmup() -> float:
    """Compile (or load from the on-disk cache) every fixed kernel; returns the seconds it took.

    The engine calls it once per process when it plans the first job, so no batch waits for a
    compiler; call it yourself in a notebook's first cell to pay that cost up front.

    Examples
    --------
    >>> from heliosdb import kernels
    >>> kernels.warmup() >= 0
    True
    """
    global _WARM
    import numpy as np

    from . import partition, window

    t0 = time.perf_counter()
    if _WARM:
        return 0.0
    lo = np.iinfo(np.int64).min

    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    # Arrays that come from Arrow buffers are read-only, and Numba compiles read-only and
    # writable arguments separately: warm both.
    for ts in (np.arange(4, dtype=np.int64), readonly(np.arange(4, dtype=np.int64))):
        window.tumbling_starts(ts, 1_000_000, 10)
        window.tumbling_runs(ts, 1_000_000, 10, 4)
        window.watermark_splits(ts, 1_000_000, 0, lo, lo)
        h = np.zeros(4, np.uint64)
        partition.hash_int64(ts, np.empty(0, np.uint8), h)
        partition.hash_int64(ts, np.ones(4, np.uint8), h)
        for off in (np.zeros(5, np.int32), np.zeros(5, np.int64)):
            for data in (np.zeros(1, np.uint8), readonly(np.zeros(1, np.uint8))):
                partition.hash_strings(off, data, np.empty(0, np.uint8), h)
                partition.hash_strings(readonly(off), data, np.empty(0, np.uint8), h)
    _WARM = True
    return time.perf_counter() - t0
