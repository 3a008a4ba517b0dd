"""What every keyed window operator shares (``operators/window.py``: windows of panes,
``operators/session.py``: sessions): on top of the keyed base (keys, aggregates), the clock
(``operators/clock.py``: event or processing time), lateness and the late output, the output
schema, and the helpers for runs of cut batches and snapshots.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

from .base import WATERMARK_MAX, Item, SideOutput, Tick, Watermark
from .clock import Clock
from .keyedbase import Aggs, KeyedOperator

log = logging.getLogger("heliosdb.window")

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")
LATE = "late"


def _ts_array(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.int64()).view(WINDOW_TYPE)


class WindowOperator(KeyedOperator):
    """What every keyed window operator shares: its clock, lateness and the late output, the
    output schema (``window_start``, ``window_end``, the keys, the aggregates), the watermark
    it reached, and the counters its snapshots carry."""

    kind = "window"
    state_noun = "window state"
    memory_fix = "raise StateBackend.memory(max_size_bytes=), use smaller windows or fewer keys"
    #: Set by the planner: ``max_out_of_orderness`` (ns) of the watermark this window reads
    #: (None: not known, e.g. an operator built outside a plan).  Only quoted in the warning.
    out_of_orderness_ns: Optional[int] = None
    _late_warned = False

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window, clock: Clock,
                 aggs: Aggs, max_state_bytes: int, allowed_lateness_ns: int,
                 backend=None):
        super().__init__(name, schema, keys, aggs, max_state_bytes, backend)
        self.window = window                  # the spec (shown by describe())
        self.clock = clock
        self.time = clock.column              # None: processing time (arrival at this operator)
        self.lateness = allowed_lateness_ns
        #: With allowed lateness, an event for an emitted window re-emits it: an update row.
        self.emits_updates = allowed_lateness_ns > 0
        fields = [pa.field("window_start", WINDOW_TYPE, nullable=False),
                  pa.field("window_end", WINDOW_TYPE, nullable=False)]
        fields += [schema.field(k) for k in keys]
        self.output_schema = pa.schema(fields + self.acc.output_fields)
        self.watermark = _I64_MIN
        self.late_events = 0
        self.updates = 0                      # update rows emitted for already-emitted windows

    # -- time ----------------------------------------------------------------------------------
    @property
    def takes_runs(self) -> bool:
        """Event time takes a batch cut by watermarks in one call; processing time reads the
        wall clock per batch."""
        return self.clock.takes_runs

    def _fire(self, t: int) -> List[Item]:
        """Time reaches ``t``: emit what closes, drop what is past its lateness, and forward
        ``Watermark(t)`` (last)."""
        raise NotImplementedError  # pragma: no cover

    def on_watermark(self, t: int) -> List[Item]:
        if self.clock.closes_at(t):
            return self._fire(t)
        return [Watermark(t)]

    def on_tick(self, now: int) -> List[Item]:
        return self._advance_clock() + [Tick(now)]

    def _advance_clock(self) -> List[Item]:
        """Processing time: windows close as the wall clock passes their end (after every
        batch and on ticks); event time waits for watermarks."""
        t = self.clock.after_batch()
        return [] if t is None else self._fire(t)[:-1]

    def watermark_ns(self) -> Optional[int]:
        """The event-time watermark the window has reached (None: processing time, no
        watermark yet, or the input has ended)."""
        wm = self.watermark
        if not self.clock.reports_watermark or wm == _I64_MIN or wm >= WATERMARK_MAX:
            return None
        return int(wm)

    # -- late rows -----------------------------------------------------------------------------
    def _late(self, rows: List[pa.RecordBatch]) -> List[Item]:
        """Count late ``rows``; send them to the late output, or drop them (warning once)
        when nothing reads it."""
        if not rows:
            return []
        n = sum(r.num_rows for r in rows)
        self.late_events += n
        if not self.late_output_read:
            if not self._late_warned:
                self._late_warned = True
                self._warn_dropped()
            return []
        log.debug("step %r: %d late events to the late output", self.name, n,
                 extra={"operator": self.name})
        batch = rows[0] if len(rows) == 1 else pa.Table.from_batches(rows).combine_chunks().to_batches()[0]
        return [SideOutput(LATE, batch)]

    def _warn_dropped(self) -> None:
        n = self.late_events
        bound = "unknown" if self.out_of_orderness_ns is None else f"{self.out_of_orderness_ns / 1e9:g}s"
        log.warning(
            "step %r: %s late event%s dropped so far: %s after %s window had closed "
            "(watermark max_out_of_orderness=%s, allowed_lateness=%gs) and nothing reads this "
            "window's late_output(). To keep them: sink its .late_output(), raise "
            "with_watermark(max_out_of_orderness=) to the source's real disorder, or pass "
            "window(..., allowed_lateness=). Further drops are only counted "
            "(streaming_late_events_total, JobResult.late_events); this warning is logged once.",
            self.name, f"{n:,}", "" if n == 1 else "s", "it arrived" if n == 1 else "they arrived",
            "its" if n == 1 else "their", bound, self.lateness / 1e9,
            extra={"operator": self.name})

    # -- snapshots -------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"watermark": self.watermark, "seq": self.seq, "late_events": self.late_events,
                "updates": self.updates}

    def _restore_meta(self, metas: List[dict], first: bool) -> None:
        if metas:
            self.watermark = max(m["watermark"] for m in metas)
            self.seq = max(m["seq"] for m in metas)
            if first:       # counters: one subtask carries them on
                self.late_events = sum(m["late_events"] for m in metas)
                self.updates = sum(m["updates"] for m in metas)

    def _batch(self, start: np.ndarray, end: np.ndarray, keys: np.ndarray, aggs: List[pa.Array]) -> pa.RecordBatch:
        arrays = [_ts_array(start), _ts_array(end)] + self._decode_keys(keys) + aggs
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    def describe(self) -> str:
        keys, aggs = self._describe_aggs()
        late = f", allowed lateness {self.lateness / 1e9:g}s" if self.lateness else ""
        return f"window[{self.name}] key_by({keys}) {self.window!r} {self.clock.describe()}{late}: {aggs}"


def run_parts(items: List[Item]):
    """A run's items as ``(first, batches, bounds, after)``: the watermark before any rows
    (None: none), the batches, the row bounds of the parts (batches between two watermarks),
    and the watermark after each part (the largest, if several; None: none after the last)."""
    first: Optional[int] = None
    batches: List[pa.RecordBatch] = []
    bounds = [0]
    after: List[Optional[int]] = []
    for it in items:
        if isinstance(it, Watermark):
            if not batches:
                first = it.t if first is None else max(first, it.t)
            else:
                after[-1] = it.t if after[-1] is None else max(after[-1], it.t)
        elif it.num_rows:
            if not after or after[-1] is not None:
                bounds.append(bounds[-1])
                after.append(None)
            batches.append(it)
            bounds[-1] += it.num_rows
    return first, batches, bounds, after


def concat_batches(batches: List[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def concat_state(tables: List[pa.Table], extras: List[Dict[str, pa.Table]], name: str) -> Dict[str, pa.Table]:
    """One snapshot table ``name`` from parts, with the per-row value sets renumbered."""
    if not tables:
        return {}
    out: Dict[str, List[pa.Table]] = {}
    offset = 0
    for t, extra in zip(tables, extras):
        for k, e in extra.items():
            rows = e.column("row").to_numpy() + offset
            out.setdefault(k, []).append(e.set_column(0, "row", pa.array(rows)))
        offset += t.num_rows
    result = {name: pa.concat_tables(tables)}
    result.update({k: pa.concat_tables(v) for k, v in out.items()})
    return result

