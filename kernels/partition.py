"""Numba kernels for the hash exchange: a stable 64-bit hash of key columns, and a counting
sort of rows by partition.

The hash depends only on the key values (never on Python's per-process hash seed), so a key
lands in the same partition in every run and every process.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit

_C1 = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x5BD1E9955BD1E995)


@jit
def _mix(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@jit
def _combine(h, v):
    return _mix(h ^ (v + _C1 + (h << np.uint64(6)) + (h >> np.uint64(2))))


@jit
def hash_int64(values, valid, h):
    """Fold int64 ``values`` (``valid``: uint8 or an empty array for no nulls) into ``h``."""
    check = valid.shape[0] > 0
    for i in range(values.shape[0]):
        if check and valid[i] == 0:
            h[i] = _combine(h[i], _NULL)
        else:
            h[i] = _combine(h[i], _mix(np.uint64(values[i])))


@jit
def hash_strings(offsets, data, valid, h):
    """Fold Arrow strings (``offsets`` into ``data``) into ``h`` with FNV-1a per string."""
    check = valid.shape[0] > 0
    for i in range(h.shape[0]):
        if check and valid[i] == 0:
            h[i] = _combine(h[i], _NULL)
            continue
        x = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            x ^= np.uint64(data[j])
            x *= np.uint64(0x100000001B3)
        h[i] = _combine(h[i], x)
