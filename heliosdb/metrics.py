"""Every metric the engine keeps, defined once, with the user guide's names.

``JobMetrics`` is what a running job updates (each counter from one thread) and what
``JobHandle.metrics()`` / ``JobResult.metrics`` report.  Latency is an event's ingestion time
to its arrival at a sink, kept in a log-bucketed histogram weighted by rows, so quantiles cost
nothing on the hot path.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

# The user guide's metric names (Prometheus exposition uses exactly these).
EVENTS_PROCESSED = "streaming_events_processed_total"
STATE_SIZE_BYTES = "streaming_state_size_bytes"
BACKPRESSURE = "streaming_backpressure"
OPERATOR_LATENCY_MS = "streaming_operator_latency_ms"
LATE_EVENTS = "streaming_late_events_total"


class LatencyHistogram:
    """Row-weighted histogram of latencies, 1 us to 1000 s, 40 buckets per decade."""

    PER_DECADE = 40
    LOW_NS = 1_000

    def __init__(self) -> None:
        self.edges = self.LOW_NS * 10 ** (np.arange(0, 9 * self.PER_DECADE + 1) / self.PER_DECADE)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.total = 0
        self._lock = threading.Lock()     # several sink stages may add at once

    def add(self, latency_ns: int, weight: int = 1) -> None:
        i = int(np.searchsorted(self.edges, latency_ns, side="right"))
        with self._lock:
            self.counts[i] += weight
            self.total += weight

    def quantile(self, q: float) -> float:
        """Latency (ms) at quantile ``q``: the upper edge of the bucket holding it (conservative)."""
        if self.total == 0:
            return float("nan")
        target = q * self.total
        i = int(np.searchsorted(np.cumsum(self.counts), target, side="left"))
        i = min(i, len(self.edges) - 1)
        return float(self.edges[i]) / 1e6


@dataclass
class OperatorStats:
    name: str
    kind: str
    rows_in: int = 0
    rows_out: int = 0
    batches: int = 0
    busy_ns: int = 0


@dataclass
class JobMetrics:
    """Live counters of one job run."""

    job: str
    started: float = field(default_factory=time.perf_counter)
    finished: float = 0.0
    events_in: int = 0
    operators: Dict[str, OperatorStats] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    channels: List = field(default_factory=list)
    state_ops: List = field(default_factory=list)

    def operator(self, name: str, kind: str) -> OperatorStats:
        st = self.operators.get(name)
        if st is None:
            st = self.operators[name] = OperatorStats(name, kind)
        return st

    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def snapshot(self) -> Dict[str, object]:
        """A plain dict of the current figures (safe to call from any thread)."""
        el = max(self.elapsed(), 1e-9)
        blocked = {ch.name: ch.blocked_ns / 1e9 for ch in self.channels}
        operators = list(self.operators.items())      # one-step copies: stage threads write
        state_ops = list(self.state_ops)
        return {
            "job": self.job,
            "elapsed_s": el,
            EVENTS_PROCESSED: self.events_in,
            "events_out": sum(s.rows_in for _, s in operators if s.kind.endswith("sink")),
            "events_per_s": self.events_in / el,
            "latency_p50_ms": self.latency.quantile(0.50),
            "latency_p99_ms": self.latency.quantile(0.99),
            STATE_SIZE_BYTES: sum(op.state_size_bytes() for op in state_ops),
            "open_windows": sum(op.open_windows() for op in state_ops if hasattr(op, "open_windows")),
            LATE_EVENTS: sum(getattr(op, "late_events", 0) for op in state_ops),
            BACKPRESSURE: int(any(v / el > 0.1 for v in blocked.values())),
            "blocked_s": blocked,
            "operators": {
                n: {"kind": s.kind, "rows_in": s.rows_in, "rows_out": s.rows_out,
                    "batches": s.batches, "busy_s": s.busy_ns / 1e9,
                    OPERATOR_LATENCY_MS: (s.busy_ns / s.batches / 1e6) if s.batches else 0.0}
                for n, s in operators
            },
        }
