"""The synthetic event generator: ``env.generate(...)``.

Events are ``ts`` (epoch ms), ``key``, ``value`` in [0, 1) and ``category``.  Event ``i``'s
key, value and category depend on the seed and ``i`` alone (they are drawn in fixed blocks of
:data:`GENERATOR_BLOCK` events), so a replay gives the same events whatever the batch size,
batch timeout or parallelism.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from .base import Piece, SourceReader, SourceSpec

CATEGORIES = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta")
#: Events are drawn in blocks of this many, block ``b`` from ``default_rng([seed, b])``, so
#: they do not depend on the batch size (65,536, the default batch size, gives the events
#: earlier versions gave at that batch size).
GENERATOR_BLOCK = 65_536
#: A paced generator makes events in chunks of about this many seconds' worth (at least one
#: event), sleeping in between: the sleep is pacing (``SourceReader.paced_ns``), and the source's
#: thread is not kept busy making a few events at a time.
PACE_CHUNK_S = 0.001
GENERATOR_SCHEMA = pa.schema([
    ("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()), ("category", pa.string()),
])


@dataclass(frozen=True, eq=False)
class GeneratorSource(SourceSpec):
    """Synthetic events (see the module docstring).

    With ``rate`` (events/s) it is paced to that rate (made in chunks of
    :data:`PACE_CHUNK_S`, sleeping in between) and stamps events with the wall clock; without,
    it runs as fast as it can, with event time advancing ``events_per_ms`` per ms
    from ``start_ms``.  It stops after ``count`` events or ``duration_s`` seconds (or never).

    >>> reader = GeneratorSource(None, 5, None, keys=3, seed=1, start_ms=0, events_per_ms=2).build()
    >>> reader.open(batch_size=4)
    >>> reader.poll(0)[0][0]["ts"].to_pylist(), reader.position()
    ([0, 0, 1, 1], {'emitted': 4})
    """

    rate: Optional[float]
    count: Optional[int]
    duration_s: Optional[float]
    keys: int
    seed: int
    start_ms: int
    events_per_ms: int

    kind = "generate"

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return self.count is not None or self.duration_s is not None

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ConfigError(f"generate(rate=) must be positive events/s, got {self.rate!r}")
        if self.count is not None and self.count < 0:
            raise ConfigError(f"generate(count=) must be >= 0, got {self.count!r}")
        if self.keys <= 0:
            raise ConfigError(f"generate(keys=) must be positive, got {self.keys!r}")

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return GENERATOR_SCHEMA

    @property
    def declared_rate(self) -> Optional[float]:  # type: ignore[override]
        return self.rate

    def describe(self) -> str:
        rate = "max rate" if self.rate is None else f"{self.rate:,.0f} events/s"
        return f"generate({rate})"

    def build(self) -> "GeneratorReader":
        return GeneratorReader(self)


class GeneratorReader(SourceReader):
    """One run of a :class:`GeneratorSource`; its position is the number of events emitted."""

    replayable = True

    def __init__(self, spec: GeneratorSource):
        super().__init__(spec)
        self.spec = spec
        self._start = 0
        self.emitted = 0
        self.t0 = 0.0
        self._block: Optional[Tuple[int, np.ndarray, np.ndarray, np.ndarray]] = None
        self._cats = pa.array(CATEGORIES)

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self.emitted = self._start
        self._block = None
        # Paced: continue as if the run had been going at ``rate`` since it started.
        rate = self.spec.rate
        self.t0 = time.monotonic() - (self.emitted / rate if rate else 0.0)

    def position(self) -> Any:
        return {"emitted": self.emitted}

    def seek(self, position: Any) -> None:
        self._start = int(position["emitted"])

    def _block_values(self, block: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys, values and category codes of events ``block * GENERATOR_BLOCK`` onwards: a
        function of the seed and the block number alone (the last block is kept)."""
        if self._block is None or self._block[0] != block:
            rng = np.random.default_rng([self.spec.seed, block])
            key = rng.integers(0, self.spec.keys, GENERATOR_BLOCK, dtype=np.int64)
            value = rng.random(GENERATOR_BLOCK)
            cat = rng.integers(0, len(CATEGORIES), GENERATOR_BLOCK, dtype=np.int8)
            self._block = (block, key, value, cat)
        return self._block[1], self._block[2], self._block[3]

    def _make(self, n: int) -> pa.RecordBatch:
        lo, hi = self.emitted, self.emitted + n
        parts = []
        for block in range(lo // GENERATOR_BLOCK, (hi - 1) // GENERATOR_BLOCK + 1):
            base = block * GENERATOR_BLOCK
            a, b = max(lo, base) - base, min(hi, base + GENERATOR_BLOCK) - base
            parts.append(tuple(x[a:b] for x in self._block_values(block)))
        key, value, cat = (parts[0] if len(parts) == 1 else
                           tuple(np.concatenate(c) for c in zip(*parts)))
        if self.spec.rate is None:
            ts = self.spec.start_ms + np.arange(lo, hi, dtype=np.int64) // self.spec.events_per_ms
        else:
            ts = np.full(n, time.time_ns() // 1_000_000, dtype=np.int64)
        self.emitted = hi
        return pa.RecordBatch.from_arrays(
            [pa.array(ts), pa.array(key), pa.array(value), self._cats.take(pa.array(cat))],
            schema=self.schema)

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        elapsed = time.monotonic() - self.t0
        if self.spec.duration_s is not None and elapsed >= self.spec.duration_s:
            return None
        left = None if self.spec.count is None else self.spec.count - self.emitted
        if left == 0:
            return None
        rate = self.spec.rate
        if rate is None:
            n = self.batch_size
        else:
            due = int(rate * elapsed) - self.emitted
            chunk = max(1, min(self.batch_size, int(rate * PACE_CHUNK_S)))
            if due < (chunk if left is None else min(chunk, left)):
                # Sleep until a chunk is due (at most the batcher's wait, at least 0.2 ms): pacing.
                next_at = (self.emitted + chunk) / rate
                t0 = time.perf_counter_ns()
                time.sleep(min(max(next_at - elapsed, 0.0002), max(timeout_s, 0.0002)))
                slept = time.perf_counter_ns() - t0
                self.waited_ns += slept
                self.paced_ns += slept
                return []
            n = min(due, self.batch_size)
        if left is not None:
            n = min(n, left)
        return [(self._make(n), time.time_ns())]
