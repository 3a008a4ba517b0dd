"""Histograms cheap enough to add to once per batch on the hot path: durations in log-spaced
buckets (:class:`LatencyHistogram`) and sizes by power of two (:class:`PowerHistogram`), with
the cumulative buckets a Prometheus histogram exports.
"""
from __future__ import annotations

import math
import threading
from typing import List, Tuple

import numpy as np

_log10 = math.log10


def counts_quantile(edges: np.ndarray, counts: np.ndarray, q: float) -> float:
    """Quantile ``q`` (ms) of bucket ``counts`` laid out as :class:`LatencyHistogram`'s: the
    upper edge of the bucket holding it; NaN when the counts are all zero.

    >>> edges = LatencyHistogram.EDGES
    >>> counts = np.zeros(len(edges) + 1, dtype=np.int64); counts[200] = 10
    >>> counts_quantile(edges, counts, 0.5)                  # bucket 200 ends at 10**8 ns
    100.0
    """
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    if total <= 0:
        return float("nan")
    i = int(np.searchsorted(cum, q * total, side="left"))
    return float(edges[min(i, len(edges) - 1)]) / 1e6


class LatencyHistogram:
    """Weighted histogram of durations, 1 us to 1000 s, 40 log-spaced buckets per decade.

    ``add`` is a few hundred nanoseconds (no numpy call), so it runs once per batch on the hot
    path.  A histogram added to from several threads (the sinks of one job) needs
    ``locked=True``; one written by one thread does not.

    Examples
    --------
    >>> h = LatencyHistogram()
    >>> h.add(2_000_000, weight=3)          # 2 ms, three events
    >>> h.total, round(h.quantile(0.5), 2)
    (3, 2.11)
    """

    PER_DECADE = 40
    LOW_NS = 1_000
    DECADES = 9
    #: Exported (Prometheus) bucket bounds, as indexes into ``edges``: every quarter decade
    #: from 10 us to 100 s (latencies), and from 0.1 s to 1000 s (checkpoint durations).
    EXPORT_EDGES = tuple(range(40, 321, 10))
    SLOW_EXPORT_EDGES = tuple(range(200, 361, 10))

    #: Bucket edges (ns), shared by every histogram (they are all laid out alike, so two
    #: copies of their counts subtract: the observations between two readings).
    EDGES = LOW_NS * 10 ** (np.arange(0, DECADES * PER_DECADE + 1) / PER_DECADE)

    def __init__(self, locked: bool = True) -> None:
        self.edges = self.EDGES
        self.counts = [0] * (len(self.edges) + 1)
        self.total = 0
        self.sum_ns = 0
        self._top = len(self.edges)
        self._offset = round(math.log10(self.LOW_NS) * self.PER_DECADE) - 1
        self._lock = threading.Lock() if locked else None

    def add(self, latency_ns: int, weight: int = 1) -> None:
        # bucket i holds edges[i-1] <= x < edges[i]; edges[k] = LOW_NS * 10**(k / PER_DECADE)
        i = int(_log10(latency_ns) * self.PER_DECADE) - self._offset if latency_ns >= self.LOW_NS else 0
        if i > self._top:
            i = self._top
        if self._lock is None:
            self.counts[i] += weight
            self.total += weight
            self.sum_ns += latency_ns * weight
            return
        with self._lock:
            self.counts[i] += weight
            self.total += weight
            self.sum_ns += latency_ns * weight

    def quantile(self, q: float) -> float:
        """Latency (ms) at quantile ``q``: the upper edge of the bucket holding it (conservative)."""
        return counts_quantile(self.edges, np.array(self.counts, dtype=np.int64), q)

    def read(self) -> np.ndarray:
        """A copy of the bucket counts now (safe while another thread adds).  Two readings
        subtract to the observations in between, for quantiles over a recent window
        (:meth:`quantile_between`).

        Examples
        --------
        A slow start, then fast: the whole run's p99 stays slow, the recent one is fast.

        >>> h = LatencyHistogram()
        >>> h.add(900_000_000, weight=50)            # 50 events at 900 ms
        >>> then = h.read()
        >>> h.add(2_000_000, weight=200)             # then 200 events at 2 ms
        >>> round(h.quantile(0.99)), round(LatencyHistogram.quantile_between(then, h.read(), 0.99), 2)
        (944, 2.11)
        """
        return np.array(self.counts, dtype=np.int64)     # one-step copy of the list first

    @classmethod
    def quantile_between(cls, then: "np.ndarray | None", now: np.ndarray, q: float) -> float:
        """Quantile ``q`` (ms) of the observations between two :meth:`read` results (``then``
        None: since the start); NaN when there were none."""
        diff = now if then is None else np.maximum(now - then, 0)
        return counts_quantile(cls.EDGES, diff, q)

    def buckets(self, unit_ns: float, export: Tuple[int, ...] = EXPORT_EDGES
                ) -> Tuple[List[Tuple[float, int]], int, float]:
        """(cumulative counts at the ``export`` bounds in ``unit_ns`` units, total, sum in units)."""
        counts = list(self.counts)                 # one-step copy: the writer keeps going
        cum = np.cumsum(counts)
        # counts[i] holds edges[i-1] <= x < edges[i], so "x below edges[k]" is cum[k].
        out = [(float(self.edges[k]) / unit_ns, int(cum[k])) for k in export]
        return out, int(cum[-1]), self.sum_ns / unit_ns


class PowerHistogram:
    """Counts of sizes by power of two (for rows per batch): ``add`` is one list increment."""

    SLOTS = 33
    #: Exported bounds: powers of four, 1 to 4Mi rows.
    EXPORT_POWERS = tuple(range(0, 23, 2))

    def __init__(self) -> None:
        self.counts = [0] * self.SLOTS
        self.sum = 0

    def add(self, n: int) -> None:
        # slot b holds 2**(b-1) < n <= 2**b (n <= 1 in slot 0)
        self.counts[(n - 1).bit_length() if n > 1 else 0] += 1
        self.sum += n

    def buckets(self) -> Tuple[List[Tuple[float, int]], int, float]:
        cum = np.cumsum(list(self.counts))
        out = [(float(2 ** b), int(cum[min(b, self.SLOTS - 1)])) for b in self.EXPORT_POWERS]
        return out, int(cum[-1]), float(self.sum)
