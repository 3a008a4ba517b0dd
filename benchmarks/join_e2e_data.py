"""The data of ``benchmarks.join_e2e``: two event streams per join, uniform and realistic.

Every stream has ``ts`` (int64 epoch ms, ``n`` rows over ``seconds`` of event time), a key
column and a float payload, seeded.  *Uniform*: times in order, keys uniform integers, no
nulls.  *Realistic* (the same sizes and time span): 30% of the rows up to ``disorder_ms``
early (never later than that behind the rows before them: none is late), the left side's keys
Zipf-skewed (a = 1.3: its hottest key holds about a quarter of the rows; the right side
stays uniform, as bids crowd popular auctions while auctions do not repeat), keys as
strings (``"k0001234"``), and 5% null keys on both sides (a null key never matches).

>>> t = stream(1000, 10, 50, seed=1, key="k", value="v", realistic=True)
>>> t.schema.names, t["k"].type, t["k"].null_count > 0
(['ts', 'k', 'v'], DataType(string), True)
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

T0 = 1_700_000_000_000          # ms
MS = 1_000_000                  # ns per ms
DISORDER_MS = 2_000
NULL_SHARE = 0.05
ZIPF_A = 1.3


def stream(n: int, seconds: int, keys: int, seed: int, key: str, value: str, realistic: bool = False,
           skew: bool = False, unique_ts: bool = False) -> pa.Table:
    """``n`` rows over ``seconds`` (see the module docstring); ``skew``: Zipf keys (realistic
    only); ``unique_ts``: one row per millisecond (``n <= seconds * 1000``), in order."""
    rng = np.random.default_rng(seed)
    ts = T0 + (np.arange(n, dtype=np.int64) * (seconds * 1000)) // n
    if unique_ts:
        assert n <= seconds * 1000, "unique_ts needs n <= seconds * 1000"
        ts = T0 + np.arange(n, dtype=np.int64) * ((seconds * 1000) // n)
    if realistic and skew:
        k = (rng.zipf(ZIPF_A, n) - 1) % keys
        k = rng.permutation(keys)[k]                  # the hot keys anywhere in the key space
    else:
        k = rng.integers(0, keys, n, dtype=np.int64)
    v = rng.random(n)
    if not realistic:
        return pa.table({"ts": ts, key: k, value: v})
    early = rng.random(n) < 0.3
    ts = ts - np.where(early, rng.integers(0, DISORDER_MS, n), 0)
    null = rng.random(n) < NULL_SHARE
    digits = pc.utf8_lpad(pc.cast(pa.array(k), pa.string()), 7, "0")
    strings = pc.binary_join_element_wise("k", digits, "")
    strings = pc.if_else(pa.array(null), pa.nulls(n, pa.string()), strings)
    return pa.table({"ts": ts, key: strings, value: v})


def window_data(scale: float, realistic: bool) -> Tuple[pa.Table, pa.Table]:
    """Bids (10M) and auctions (1M) over 1,000 s, 100K auction ids (the issue's window join)."""
    bids = stream(int(10_000_000 * scale), 1000, 100_000, 1, "auction", "price", realistic, skew=True)
    auctions = stream(int(1_000_000 * scale), 1000, 100_000, 2, "id", "reserve", realistic)
    return bids, auctions


def interval_data(scale: float, realistic: bool) -> Tuple[pa.Table, pa.Table]:
    """Two streams of 10M rows over 1,000 s, 1M keys (the issue's interval join)."""
    n = int(10_000_000 * scale)
    return (stream(n, 1000, 1_000_000, 3, "key", "lv", realistic, skew=True),
            stream(n, 1000, 1_000_000, 4, "key", "rv", realistic))


def asof_data(scale: float, realistic: bool = False) -> Tuple[pa.Table, pa.Table]:
    """Orders (5M) and rates (1M, one a millisecond: the latest rate at a time is one row)
    over 1,000 s, 10K keys."""
    return (stream(int(5_000_000 * scale), 1000, 10_000, 5, "k", "lv"),
            stream(int(1_000_000 * scale), 1000, 10_000, 6, "k", "rv", unique_ts=True))


def regular_data(scale: float, realistic: bool = False) -> Tuple[pa.Table, pa.Table]:
    """Two streams of 2M rows over 1,000 s, 1M keys (about 4M matches)."""
    n = int(2_000_000 * scale)
    return stream(n, 1000, 1_000_000, 7, "k", "lv"), stream(n, 1000, 1_000_000, 8, "k", "rv")
