"""The clock of a window operator: what time a row has and what moves time forward.

Windowing has three parts (as in Bytewax): a clock, a windower (``operators/windower.py``:
which windows a row belongs to, which a watermark closes) and the aggregation (a pane store,
``operators/panes.py``, or a session store).  The clock is one interface with two kinds, so
the window operators never ask which one they have:

- :class:`EventClock`: a row's time is its time column (int64 epoch ms, or a timestamp with
  its own unit), in ns; time moves when a watermark arrives from upstream.
- :class:`ProcessingClock`: a row's time is the wall clock when it reaches the operator;
  time moves with the wall clock after every batch and on every tick, and an upstream
  watermark only matters at the end of input (``WATERMARK_MAX`` closes everything).

Timeline of a 10 ms tumbling window, both clocks::

    event time       rows ts=3, ts=12 | Watermark(10) -> [0, 10) closes
    processing time  rows at 3 ms, 12 ms of wall time | tick at 21 ms -> [0, 10), [10, 20) close
"""
from __future__ import annotations

import time as _time
from typing import Callable, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import DataError, SchemaError
from ..kernels.window import tumbling_runs, tumbling_starts
from .base import WATERMARK_MAX

_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
#: More runs of rows in the same pane than this in one batch part: the part is sorted by pane.
MAX_RUNS = 64

#: ``(run bounds, pane starts)`` of each part of a batch (see :meth:`Clock.pane_runs`).
PaneRuns = List[Tuple[np.ndarray, np.ndarray]]


def time_factor(schema: pa.Schema, column: str, step: str) -> int:
    """Nanoseconds per unit of the time column: int64 is epoch ms, timestamps carry a unit.

    Examples
    --------
    >>> import pyarrow as pa
    >>> time_factor(pa.schema([("ts", pa.int64())]), "ts", "w")
    1000000
    >>> time_factor(pa.schema([("ts", pa.timestamp("us"))]), "ts", "w")
    1000
    """
    idx = schema.get_field_index(column)
    if idx < 0:
        raise SchemaError(
            f"step {step!r}: time column {column!r} is not in the input; it has {schema.names}"
        )
    t = schema.field(idx).type
    if pat.is_timestamp(t):
        return _UNIT_NS[t.unit]
    if pat.is_integer(t) and t.bit_width == 64 and pat.is_signed_integer(t):
        return 1_000_000
    raise SchemaError(
        f"step {step!r}: time column {column!r} must be int64 epoch milliseconds or a timestamp, "
        f"got {t}; convert it with with_columns({column}=col({column!r}).cast('int64'))"
    )


class Clock:
    """What time the rows of a batch have, and when time moves on (see the module docstring).

    Examples
    --------
    >>> clock = ProcessingClock(now=lambda: 25)
    >>> clock.column is None, clock.after_batch(), clock.closes_at(7), clock.describe()
    (True, 25, False, 'on processing time')
    """

    #: The event-time column, or None (processing time).
    column: Optional[str] = None
    #: Whether ``process_run`` may take a run of batches and watermarks in one pass (event
    #: time); processing time reads the wall clock per batch, so it takes them one by one.
    takes_runs = False
    #: Whether the operator's watermark is an event time worth reporting (metrics).
    reports_watermark = False

    def pane_runs(self, batch: pa.RecordBatch, bounds: List[int],
                  pane_ns: int) -> Tuple[PaneRuns, Optional[np.ndarray], Optional[np.ndarray]]:
        """The rows of each part ``bounds[j]:bounds[j+1]`` of ``batch`` as runs of rows in the
        same pane of ``pane_ns``: ``(runs, order, times)``, ``runs[j] = (run bounds, pane
        starts)``; ``order`` (else None) is the row order that makes every run contiguous;
        ``times`` the rows' raw times (for error messages; None for processing time)."""
        raise NotImplementedError

    def times_ns(self, batch: pa.RecordBatch, headroom_ns: int) -> np.ndarray:
        """Every row's time in ns; times so late that ``t + headroom_ns`` overflows raise."""
        raise NotImplementedError

    def closes_at(self, t: int) -> bool:
        """Whether an upstream watermark ``t`` moves the operator's time (closes windows)."""
        raise NotImplementedError

    def bad_time(self, ts: Optional[np.ndarray], row: int) -> DataError:
        """The error for row ``row``, whose time puts a window end past int64 nanoseconds."""
        return DataError(f"row {row} of a batch: its window ends outside the range of int64 "
                         "nanoseconds (years 1678-2262)")

    def after_batch(self) -> Optional[int]:
        """The time the operator moves to after a batch or on a tick (None: it waits for
        watermarks)."""
        return None

    def describe(self) -> str:
        raise NotImplementedError


class EventClock(Clock):
    """Event time from a column; time moves with upstream watermarks.

    Examples
    --------
    >>> import pyarrow as pa
    >>> clock = EventClock(pa.schema([("ts", pa.int64())]), "ts", "w")
    >>> batch = pa.record_batch({"ts": [1, 2, 12]})
    >>> runs, order, _ = clock.pane_runs(batch, [0, 3], 10_000_000)
    >>> runs[0][0].tolist(), runs[0][1].tolist(), order is None
    ([0, 2, 3], [0, 10000000], True)
    >>> clock.times_ns(batch, 0).tolist(), clock.closes_at(5)
    ([1000000, 2000000, 12000000], True)
    """

    takes_runs = True
    reports_watermark = True

    def __init__(self, schema: pa.Schema, column: str, step: str):
        self.column = column
        self.step = step
        self.factor = time_factor(schema, column, step)
        self.idx = schema.get_field_index(column)
        self.is_ts = pat.is_timestamp(schema.field(column).type)

    def times(self, batch: pa.RecordBatch) -> np.ndarray:
        """The time column's raw values (its own unit: ``factor`` ns each)."""
        tcol = batch.column(self.idx)
        if tcol.null_count:
            row = int(tcol.is_null().to_numpy(zero_copy_only=False).argmax())
            raise DataError(
                f"step {self.step!r}: time column {self.column!r} is null at row {row} of a batch; "
                "every event needs an event time (filter nulls out first)"
            )
        return (tcol.view(pa.int64()) if self.is_ts else tcol).to_numpy(zero_copy_only=False)

    def bad_time(self, ts: np.ndarray, row: int) -> DataError:
        return DataError(
            f"step {self.step!r}: time column {self.column!r} value {int(ts[row])} (row {row}) is "
            "outside the range of int64 nanoseconds (years 1678-2262)"
        )

    def pane_runs(self, batch, bounds, pane_ns):
        """A part in few runs (ordered input) keeps its rows where they are; a part with many
        panes interleaved is sorted by pane (stably), exactly as it would be alone."""
        ts = self.times(batch)
        parts: PaneRuns = []
        order, all_starts = None, None
        for j in range(len(bounds) - 1):
            b0, b1 = bounds[j], bounds[j + 1]
            rb, starts, k, bad = tumbling_runs(ts[b0:b1], self.factor, pane_ns, MAX_RUNS)
            if bad >= 0:
                raise self.bad_time(ts, b0 + bad)
            if k >= 0:
                parts.append((rb[: k + 1] + b0, starts[:k]))
                continue
            if all_starts is None:
                all_starts, lo, _, bad = tumbling_starts(ts, self.factor, pane_ns)
                if bad >= 0:
                    raise self.bad_time(ts, bad)
                order = np.arange(len(ts), dtype=np.int64)
            key = (all_starts[b0:b1] - lo) // pane_ns
            if int(key.max()) < 2**16:
                key = key.astype(np.uint16)     # numpy sorts 16-bit keys by radix: O(n)
            o = np.argsort(key, kind="stable")
            order[b0:b1] = o + b0
            sk = key[o]
            rb = np.concatenate([[0], np.flatnonzero(np.diff(sk)) + 1, [b1 - b0]])
            parts.append((rb + b0, all_starts[b0:b1][o][rb[:-1]]))
        return parts, order, ts

    def times_ns(self, batch, headroom_ns):
        ts = self.times(batch)
        limit = (np.iinfo(np.int64).max - headroom_ns) // self.factor
        bad = np.flatnonzero((ts > limit) | (ts < -limit))
        if len(bad):
            raise self.bad_time(ts, int(bad[0]))
        return ts.astype(np.int64) * self.factor

    def closes_at(self, t: int) -> bool:
        return True

    def describe(self) -> str:
        return f"on {self.column!r}"


class ProcessingClock(Clock):
    """Processing time: a row's time is the wall clock (``now()``, ns) when it arrives.

    Examples
    --------
    >>> import pyarrow as pa
    >>> clock = ProcessingClock(now=lambda: 1_234)
    >>> runs, order, times = clock.pane_runs(pa.record_batch({"v": [1, 2]}), [0, 2], 1_000)
    >>> runs[0][0].tolist(), runs[0][1].tolist(), order, times
    ([0, 2], [1000], None, None)
    >>> clock.closes_at(10**9), clock.closes_at(2**63 - 1)
    (False, True)
    """

    def __init__(self, now: Callable[[], int] = _time.time_ns):
        self.now = now

    def pane_runs(self, batch, bounds, pane_ns):
        now = self.now()
        return [(np.array([0, batch.num_rows]), np.array([now - now % pane_ns]))], None, None

    def times_ns(self, batch, headroom_ns):
        return np.full(batch.num_rows, self.now(), np.int64)

    def closes_at(self, t: int) -> bool:
        return t == WATERMARK_MAX           # the end of input

    def after_batch(self) -> Optional[int]:
        return self.now()

    def describe(self) -> str:
        return "on processing time"


def make_clock(schema: pa.Schema, column: Optional[str], step: str) -> Clock:
    """The event-time clock on ``column``, or processing time when it is None.

    Examples
    --------
    >>> import pyarrow as pa
    >>> make_clock(pa.schema([("ts", pa.int64())]), "ts", "w").describe()
    "on 'ts'"
    >>> make_clock(pa.schema([("ts", pa.int64())]), None, "w").describe()
    'on processing time'
    """
    return ProcessingClock() if column is None else EventClock(schema, column, step)
