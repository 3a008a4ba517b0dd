"""Keyed window aggregation: tumbling, sliding (pane-based), session; event or processing time.

Windowing has three parts (as in Bytewax): a clock (event time and its watermark, or the wall
clock), a windower (which windows an event belongs to, when they close), and the aggregation
(``accumulators.Partial``: arrays indexed by dense group id, with update and merge).

- Tumbling and sliding windows share one operator.  Events are aggregated once into *panes* of
  ``gcd(size, slide)`` (for tumbling windows a pane is the window): a batch is split into runs
  of rows in the same pane (Numba; ordered input costs a comparison per row), each run's keys
  get group ids in the pane's hash table (Cython) and update its accumulators (Cython, nogil).
  When the watermark passes a window's end, its panes are merged (``size / slide`` merges of
  each key, not one per event per window) and emitted.  A pane is dropped when the last
  window holding it is past its end plus the allowed lateness.
- Sessions: each key's events form sessions ``[first, last + gap)``; ``SessionSet`` (Cython)
  assigns events and merges sessions an event bridges; accumulators are indexed by session id.

Lateness: an event is late when every window it belongs to ended at least
``allowed_lateness`` before the watermark; late events go to the ``late`` side output (and are
counted), never silently dropped: when no stage reads it (the planner sets
``late_output_read``), they are counted and dropped, and the first drop is a warning.  An event for a window that has already been emitted but is
still within the allowed lateness updates the window and emits an *update*: a new row with
the same window and key that supersedes the earlier one.

Timeline of a 10 s tumbling window with 5 s allowed lateness::

    event time   0 ............ 10 ......... 15
    window       [0, 10) open    |  emitted   | dropped
    an event at 3 arriving when watermark = 12 -> update row for [0, 10)
    an event at 3 arriving when watermark = 15 -> late output
"""
from __future__ import annotations

import logging
import time as _time
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import DataError, HeliosError
from ..expr import AggSpec
from ..kernels import _accum, _hashagg
from ..kernels.window import EXACT_GRID, tumbling_runs, tumbling_starts, watermark_splits
from ..windows import SessionWindow, SlidingWindow, TumblingWindow, time_factor
from .accumulators import (AccPlan, Partial, Prepared, filter_rows, partial_from_arrow,
                           partial_to_arrow, snapshot_rows)
from .base import WATERMARK_MAX, Item, Operator, SideOutput, Snapshot, Tick, Watermark
from .keys import KeyEncoder
from .preagg import PanePart, PreAggregated
from .splitclock import SplitClock

log = logging.getLogger("heliosdb.window")

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")
MAX_RUNS = 64
LATE = "late"


def _ts_array(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.int64()).view(WINDOW_TYPE)


class _KeyedBase(Operator):
    """What every keyed window operator shares: keys, time, aggregates, lateness, output."""

    kind = "window"
    stateful = True
    #: Set by the planner: ``max_out_of_orderness`` (ns) of the watermark this window reads
    #: (None: not known, e.g. an operator built outside a plan).  Only quoted in the warning.
    out_of_orderness_ns: Optional[int] = None
    _late_warned = False

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], time: Optional[str],
                 aggs: List[Tuple[str, AggSpec]], max_state_bytes: int, allowed_lateness_ns: int,
                 backend=None):
        self.name = name
        self.input_schema = schema
        self.time = time                      # None: processing time (arrival at this operator)
        if time is not None:
            self.factor = time_factor(schema, time, name)
            self.time_idx = schema.get_field_index(time)
            self.time_is_ts = pat.is_timestamp(schema.field(time).type)
        self.encoder = KeyEncoder(schema, keys, name)
        self.aggs = aggs
        self.acc = AccPlan(schema, aggs, name, backend)
        self.max_state_bytes = max_state_bytes
        self.lateness = allowed_lateness_ns
        fields = [pa.field("window_start", WINDOW_TYPE, nullable=False),
                  pa.field("window_end", WINDOW_TYPE, nullable=False)]
        fields += [schema.field(k) for k in keys]
        self.output_schema = pa.schema(fields + self.acc.output_fields)
        self.width = self.encoder.width
        self.nulls = False                    # whether key tuples carry a null word
        self.watermark = _I64_MIN
        self.late_events = 0
        self.updates = 0                      # update rows emitted for already-emitted windows
        self.seq = 0                          # arrival number of the next row (first/last)

    # -- inputs --------------------------------------------------------------------------------
    def _times(self, batch: pa.RecordBatch) -> np.ndarray:
        tcol = batch.column(self.time_idx)
        if tcol.null_count:
            row = int(tcol.is_null().to_numpy(zero_copy_only=False).argmax())
            raise DataError(
                f"step {self.name!r}: time column {self.time!r} is null at row {row} of a batch; "
                "every event needs an event time (filter nulls out first)"
            )
        return (tcol.view(pa.int64()) if self.time_is_ts else tcol).to_numpy(zero_copy_only=False)

    def _bad_time(self, ts: np.ndarray, row: int) -> DataError:
        return DataError(
            f"step {self.name!r}: time column {self.time!r} value {int(ts[row])} (row {row}) is "
            "outside the range of int64 nanoseconds (years 1678-2262)"
        )

    def _seqs(self, n: int) -> Optional[np.ndarray]:
        base = self.seq
        self.seq += n
        return np.arange(base, base + n, dtype=np.int64) if self.acc.needs_seq else None

    def _key_columns(self, batch: pa.RecordBatch) -> List[np.ndarray]:
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            self._widen()
            self.nulls = True
        if self.nulls:
            codes = codes + [nullword if nullword is not None else np.zeros(batch.num_rows, np.int64)]
        return codes

    def _widen(self) -> None:
        """Key tuples gain a null word (the first null key arrived)."""
        raise NotImplementedError  # pragma: no cover - each operator widens its tables

    def _decode_keys(self, keys: np.ndarray) -> List[pa.Array]:
        w = self.width
        return self.encoder.decode(keys[:, :w], keys[:, w] if self.nulls else None)

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

    def watermark_ns(self) -> Optional[int]:
        """The event-time watermark the window has reached (None: processing time, no
        watermark yet, or the input has ended)."""
        wm = self.watermark
        if self.time is None or wm == _I64_MIN or wm >= WATERMARK_MAX:
            return None
        return int(wm)

    def _check_memory(self) -> None:
        size = self.state_size_bytes()
        if size > self.max_state_bytes:
            raise HeliosError(
                f"step {self.name!r}: window state is {size:,} bytes ({self._state_summary()}), "
                f"over the memory backend's bound of {self.max_state_bytes:,} bytes; raise "
                "StateBackend.memory(max_size_bytes=), use smaller windows or fewer keys"
            )

    def _state_summary(self) -> str:
        return ""

    def close(self) -> List[Item]:
        self.acc.close_state()
        return []

    def abort(self) -> None:
        self.acc.close_state()

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

    def _key_arrays(self, keys: np.ndarray) -> Dict[str, pa.Array]:
        return dict(zip(self.encoder.names, self._decode_keys(keys)))

    def _key_codes(self, table: pa.Table) -> List[np.ndarray]:
        """Key columns of a snapshot table -> this operator's key codes (widening for nulls)."""
        batch = pa.RecordBatch.from_arrays(
            [table.column(k).combine_chunks() for k in self.encoder.names], names=self.encoder.names)
        return self._key_columns(batch)

    def _batch(self, start: np.ndarray, end: np.ndarray, keys: np.ndarray, aggs: List[pa.Array]) -> pa.RecordBatch:
        arrays = [_ts_array(start), _ts_array(end)] + self._decode_keys(keys) + aggs
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)


class _Pane:
    """The groups of one pane: key tuple -> group id, and their accumulators."""

    __slots__ = ("table", "partial")

    def __init__(self, width: int, plan: AccPlan, capacity: int):
        self.table = _hashagg.GroupTable(width, capacity)
        self.partial = plan.new_state(capacity)

    def add(self, cols: List[np.ndarray], p: Prepared, gids: np.ndarray) -> None:
        self.table.insert(cols, gids)
        self.partial.ensure(self.table.n_groups)
        self.partial.update(gids, p)

    def nbytes(self) -> int:
        return self.table.nbytes + self.partial.nbytes()


class WindowAggregate(_KeyedBase):
    """``key_by(...).window(TumblingWindow | SlidingWindow, time=...).aggregate(...)``."""

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window, time: Optional[str],
                 aggs: List[Tuple[str, AggSpec]], max_state_bytes: int, allowed_lateness_ns: int = 0,
                 backend=None):
        super().__init__(name, schema, keys, time, aggs, max_state_bytes, allowed_lateness_ns, backend)
        self.window = window
        if isinstance(window, TumblingWindow):
            self.size_ns = self.slide_ns = self.pane_ns = window.size_ns
        else:
            self.size_ns, self.slide_ns, self.pane_ns = window.size_ns, window.slide_ns, window.pane_ns
        self.panes: Dict[int, _Pane] = {}
        self._touched: Optional[Dict[int, List[np.ndarray]]] = None   # see _segments
        self._capacity_hint = 1024
        self._gids = np.empty(0, np.int64)
        self._runs: Optional[list] = None     # (pane, group ids, prepared) of each run, if kept

    # -- which windows -------------------------------------------------------------------------
    def _last_window(self, pane: int) -> int:
        """Start of the last window holding ``pane``."""
        return pane - (pane % self.slide_ns)

    def _first_window(self, pane: int) -> int:
        s = pane - self.size_ns + self.pane_ns          # earliest start whose window holds pane
        r = s % self.slide_ns
        return s if r == 0 else s + (self.slide_ns - r)

    def _windows_of(self, pane: int) -> range:
        return range(self._first_window(pane), self._last_window(pane) + 1, self.slide_ns)

    def _is_late(self, pane: int) -> bool:
        return self._last_window(pane) + self.size_ns + self.lateness <= self.watermark

    # -- per batch -----------------------------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if type(batch) is PreAggregated:
            # Two-phase: no row behind the watermark -> nothing late, no emitted window
            # touched, so merging the partials is what the rows would have done.
            if batch.usable and batch.min_ns >= self.watermark:
                return self._merge_pre(batch)
            batch = batch.batch
        if batch.num_rows == 0:
            return []
        return self._segments(batch, [0, batch.num_rows], [])

    takes_runs = True

    def process_run(self, items: List[Item]) -> List[Item]:
        """Batches with the watermarks between them, in one pass: keys encoded, aggregate
        inputs prepared and panes found once for all rows; between the parts, windows fire as
        the watermarks arrive, exactly as one call per item would."""
        if self.time is None:
            return super().process_run(items)
        first: Optional[int] = None          # a watermark before any rows
        parts: List[List[pa.RecordBatch]] = []
        after: List[Optional[int]] = []      # the watermark after part j (None: none yet)
        for it in items:
            if isinstance(it, Watermark):
                if not parts:
                    first = it.t if first is None else max(first, it.t)
                else:
                    after[-1] = it.t if after[-1] is None else max(after[-1], it.t)
            elif it.num_rows:
                if not parts or after[-1] is not None:
                    parts.append([])
                    after.append(None)
                parts[-1].append(it)
        out = [] if first is None else self._fire(first)
        if not parts:
            return out
        bounds = np.cumsum([0] + [sum(b.num_rows for b in p) for p in parts]).tolist()
        batch = _concat_batches([b for p in parts for b in p])
        out += self._segments(batch, bounds, after[:-1])
        if after[-1] is not None:
            out += self._fire(after[-1])
        return out

    def _segments(self, batch: pa.RecordBatch, bounds: List[int], marks: List[int]) -> List[Item]:
        """Rows ``bounds[j]:bounds[j+1]`` of ``batch`` arrive, and watermark ``marks[j]``
        after them (``len(marks) == len(bounds) - 2``)."""
        n = batch.num_rows
        seqs = self._seqs(n)
        if self.time is None:
            now = _time.time_ns()
            runs = [(np.array([0, n]), np.array([now - now % self.pane_ns]))]
        else:
            ts = self._times(batch)
            runs, order = self._pane_runs(ts, bounds)
            if order is not None:
                batch = batch.take(pa.array(order))
                if seqs is not None:
                    seqs = seqs[order]
        cols = self._key_columns(batch)
        prepared = self.acc.prepare(batch, seqs)
        if len(self._gids) < n:
            self._gids = np.empty(max(n, 2 * len(self._gids)), np.int64)
        out: List[Item] = []
        late: Optional[np.ndarray] = None              # rows that are late, if any
        # Emitted windows the rows update -> their keys; the updates go out once for the run,
        # or before a watermark lets the window go (an update supersedes the rows before it:
        # one per run says the same as one per part).
        touched = self._touched = {}
        for j, (rb, starts) in enumerate(runs):
            s0, s1 = int(rb[0]), int(rb[-1])
            self._start_batch([c[s0:s1] for c in cols], s0, s1)
            for r in range(len(starts)):
                pane_start, b0, b1 = int(starts[r]), int(rb[r]), int(rb[r + 1])
                if self._last_window(pane_start) + self.size_ns > _I64_MAX:
                    raise self._bad_time(ts, b0)
                if self._is_late(pane_start):
                    if late is None:
                        late = np.zeros(n, bool)
                    late[b0:b1] = True
                    continue
                pane = self.panes.get(pane_start)
                if pane is None:
                    pane = self.panes[pane_start] = self._new_pane(len(cols))
                run = prepared.slice(b0, b1)
                self._add(pane, cols, run, b0, b1)
                if self._runs is not None:              # pre-aggregating: keep the run's rows
                    self._runs.append((pane_start, self._run_gids(b0, b1), run))
                updated = None
                for s in self._windows_of(pane_start):
                    end = s + self.size_ns
                    # Emitted, but still within the allowed lateness: an update.  (A window past
                    # end + lateness is gone; the event still counts for the panes' other windows.)
                    if end <= self.watermark < end + self.lateness:
                        if updated is None:
                            updated = self._updated(cols, b0, b1)
                        touched.setdefault(s, []).append(updated)
            if self._runs is None:          # a replica's panes last one batch: nothing to bound
                self._check_memory()
            if j < len(marks):
                gone = marks[j] - self.size_ns - self.lateness
                out += self._updates([s for s in touched if s <= gone])
                out += self._fire(marks[j])
        out += self._updates(list(touched))
        self._touched = None
        late_rows = [] if late is None else [batch.filter(pa.array(late))]
        return out + self._late(late_rows) + self._advance_processing_time()

    def _updates(self, starts: List[int]) -> List[Item]:
        """The update rows of the touched windows ``starts`` (then no longer touched)."""
        out = []
        for s in sorted(starts):
            b = self._emit(s, np.concatenate(self._touched.pop(s)))
            if b is not None:
                out.append(b)
                self.updates += b.num_rows
        return out

    def _pane_runs(self, ts: np.ndarray, bounds: List[int]) -> Tuple[list, Optional[np.ndarray]]:
        """Per part of the batch, its runs of rows in the same pane: ``(run bounds, pane
        starts)``.  Rows in few runs (ordered input) stay where they are; otherwise the batch
        is sorted once, stably, by (part, pane), and ``order`` (else None) is that row order."""
        n = len(ts)
        rb, starts, k, bad = tumbling_runs(ts, self.factor, self.pane_ns, MAX_RUNS)
        if bad >= 0:
            raise self._bad_time(ts, bad)
        order = None
        if k < 0:
            # Many panes interleaved: sort by (part, pane), then every pane of a part is one run.
            all_starts, lo, _, bad = tumbling_starts(ts, self.factor, self.pane_ns)
            if bad >= 0:
                raise self._bad_time(ts, bad)
            key = (all_starts - lo) // self.pane_ns
            if len(bounds) > 2:
                part = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))
                span = int(key.max()) + 1
                if span <= 2**62 // len(bounds):
                    key += part * span
                else:                       # panes spread too far to pack: sort on both
                    key = np.lexsort((key, part)).argsort().astype(np.int64)
            if int(key.max()) < 2**16:
                key = key.astype(np.uint16)     # numpy sorts 16-bit keys by radix: O(n)
            order = np.argsort(key, kind="stable")
            sorted_starts = all_starts[order]
            rb = np.concatenate([[0], np.flatnonzero(np.diff(key[order])) + 1, [n]])
            starts = sorted_starts[rb[:-1]]
        else:
            rb, starts = rb[: k + 1], starts[:k]
        if len(bounds) > 2:            # runs end at part bounds too
            cut = np.union1d(rb, bounds)
            starts = starts[np.searchsorted(rb, cut[:-1], side="right") - 1]
            rb = cut
        parts = []
        edges = np.searchsorted(rb, bounds)
        for j in range(len(bounds) - 1):
            e0, e1 = int(edges[j]), int(edges[j + 1])
            parts.append((rb[e0: e1 + 1], starts[e0:e1]))
        return parts, order

    # -- two-phase aggregation (parallelism > 1; see operators/preagg.py) ------------------------
    def _values_portable(self) -> bool:
        """Whether aggregate inputs are coded alike in every instance (no string values in
        first/last/count_distinct: their codes come from a per-instance string table)."""
        codecs = [*self.acc.first.values(), *self.acc.last.values(), *self.acc.distinct.values()]
        return all(c.encoder is None or "str" not in c.encoder.kinds for c in codecs)

    def _reset_partials(self) -> None:
        self.panes = {}
        self.seq = 0

    def pre_aggregate(self, batch: pa.RecordBatch, pre: PreAggregated) -> None:
        """As a replica (its watermark never moves): fold ``batch`` into fresh panes and hand
        them to ``pre`` with each run's rows (group ids and prepared values), so the final
        window can either take a new pane whole or replay the rows' updates in order."""
        if not self._values_portable():
            return                                    # the final window takes the rows
        self._reset_partials()
        self._runs = []
        try:
            self.process_batch(batch)
            runs: Dict[int, list] = {}
            for start, gids, p in self._runs:
                runs.setdefault(start, []).append((gids, p))
        finally:
            self._runs = None
        pre.direct = "str" not in self.encoder.kinds     # key codes mean the same everywhere
        pre.nulls = self.nulls
        self._hand_over(pre, runs)
        self.panes = {}

    def _hand_over(self, pre: PreAggregated, runs: Dict[int, list]) -> None:
        pre.parts = []
        for start, pane in self.panes.items():
            n = pane.table.n_groups
            self._capacity_hint = max(self._capacity_hint, n)
            keys = None if pre.direct else self._key_table(pane.table.keys_view()[:n])
            pre.parts.append(PanePart(start, pane, runs[start], keys))

    def _key_table(self, keys: np.ndarray) -> pa.Table:
        return pa.table(self._key_arrays(keys))

    def _run_gids(self, b0: int, b1: int) -> np.ndarray:
        return self._gids[: b1 - b0].copy()

    def _codes_of(self, pre: PreAggregated, keys) -> List[np.ndarray]:
        """This window's key codes of a replica's keys (its table, or decoded keys)."""
        if not pre.direct:
            return self._key_codes(keys)
        m = keys.n_groups
        view = keys.keys_view()[:m]
        cols = [np.ascontiguousarray(view[:, j]) for j in range(view.shape[1])]
        if self.nulls and not pre.nulls:
            cols.append(np.zeros(m, np.int64))
        return cols

    def _merge_pre(self, pre: PreAggregated) -> List[Item]:
        base = self.seq
        self.seq += pre.num_rows
        if pre.direct and pre.nulls and not self.nulls:
            self._widen()
            self.nulls = True
        self._merge_parts(pre, base)
        self._check_memory()
        return []

    def _merge_parts(self, pre: PreAggregated, base: int) -> None:
        memory = self.acc.backend is None or self.acc.backend.kind == "memory"
        for part in pre.parts:
            if part.start not in self.panes and memory and pre.direct and pre.nulls == self.nulls:
                # A new pane: the replica summed the same rows in the same order from empty.
                _shift_seqs(part.pane.partial, base)
                part.pane.partial.plan = self.acc
                self.panes[part.start] = part.pane
                continue
            codes = self._codes_of(pre, part.pane.table if pre.direct else part.keys)
            pane = self.panes.get(part.start)
            if pane is None:
                pane = self.panes[part.start] = self._new_pane(len(codes))
            to = np.empty(len(codes[0]), np.int64)
            pane.table.insert(codes, to)
            pane.partial.ensure(pane.table.n_groups)
            for gids, p in part.runs:
                pane.partial.update(np.ascontiguousarray(to[gids]), _shifted(p, base))

    # -- pane storage: a hash table per pane (tumbling: the pane is the window) ----------------
    def _start_batch(self, cols: List[np.ndarray], s0: int, s1: int) -> None:
        """Rows s0:s1 (whose key columns are ``cols``) are next."""

    def _new_pane(self, width: int) -> _Pane:
        return _Pane(width, self.acc, self._capacity_hint)

    def _add(self, pane: _Pane, cols: List[np.ndarray], p: Prepared, b0: int, b1: int) -> None:
        """Fold rows b0:b1 into ``pane``."""
        pane.add([c[b0:b1] for c in cols], p, self._gids[: b1 - b0])

    def _updated(self, cols: List[np.ndarray], b0: int, b1: int) -> np.ndarray:
        """What identifies the keys of rows b0:b1 for an update (only asked for when one is
        due, right after ``_add`` folded them into their pane, which is the window): their
        group ids in the pane."""
        return self._gids[: b1 - b0].copy()

    def _advance_processing_time(self) -> List[Item]:
        if self.time is not None or not self.panes:
            return []
        return self._fire(_time.time_ns())[:-1]

    def _widen(self) -> None:
        for pane in self.panes.values():
            pane.table = pane.table.widen(0)

    def _state_summary(self) -> str:
        groups = sum(p.table.n_groups for p in self.panes.values())
        return f"{groups:,} groups in {len(self.panes)} panes"

    def state_size_bytes(self) -> int:
        # list() copies in one step: a metrics reader on another thread never iterates the dict
        # while the window thread changes it.
        return sum(p.nbytes() for p in list(self.panes.values())) + self.encoder.nbytes() + self.acc.codec_bytes()

    def open_windows(self) -> int:
        return len(self.panes)

    # -- closing windows -------------------------------------------------------------------------
    def on_watermark(self, t: int) -> List[Item]:
        if self.time is None:
            # Processing time: only the end of input (max watermark) closes everything.
            return (self._fire(t) if t == WATERMARK_MAX else []) + [Watermark(t)]
        return self._fire(t)

    def on_tick(self, now: int) -> List[Item]:
        out = self._advance_processing_time()
        return out + [Tick(now)]

    def _fire(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            before, self.watermark = self.watermark, t
            if self.panes:
                for s in self._due(before, t):
                    b = self._emit(s)
                    if b is not None:
                        out.append(b)
                for p in [p for p in self.panes if self._is_late(p)]:
                    self._drop(self.panes.pop(p))
        out.append(Watermark(t))
        return out

    def _due(self, before: int, t: int) -> List[int]:
        """Starts of the windows holding a pane whose end the watermark passed moving from
        ``before`` to ``t`` (end in (before, t]), in order.  Each pane contributes the
        slide-aligned starts of its windows in [before - size + 1, t - size], by arithmetic:
        one step per pane, not one per pane and window (a day-long window sliding by the minute
        holds 1,440 panes, each in 1,440 windows)."""
        lo, hi, slide = before - self.size_ns + 1, t - self.size_ns, self.slide_ns
        due = set()
        for p in self.panes:
            a, b = max(self._first_window(p), lo), min(self._last_window(p), hi)
            if a <= b:
                r = a % slide
                due.update(range(a if r == 0 else a + slide - r, b + 1, slide))
        return sorted(due)

    def _drop(self, pane: _Pane) -> None:
        self._capacity_hint = max(1024, pane.table.n_groups)
        if hasattr(pane.partial, "drop"):
            pane.partial.drop()

    def _window(self, s: int) -> Optional[Tuple[np.ndarray, Partial]]:
        """(key tuples, accumulators) of the window starting at ``s``: its panes merged."""
        panes = [self.panes[p] for p in range(s, s + self.size_ns, self.pane_ns) if p in self.panes]
        panes = [p for p in panes if p.table.n_groups]
        if not panes:
            return None
        if len(panes) == 1:
            p = panes[0]
            return p.table.keys_view()[: p.table.n_groups], p.partial
        width = panes[0].table.width
        table = _hashagg.GroupTable(width, max(p.table.n_groups for p in panes) * 2)
        acc = Partial(self.acc, max(p.table.n_groups for p in panes))
        for p in panes:
            m = p.table.n_groups
            keys = p.table.keys_view()[:m]
            ids = np.empty(m, np.int64)
            table.insert([np.ascontiguousarray(keys[:, j]) for j in range(width)], ids)
            acc.ensure(table.n_groups)
            acc.merge(p.partial, np.arange(m, dtype=np.int64), ids)
        return table.keys_view()[: table.n_groups], acc

    def _emit(self, s: int, only: Optional[np.ndarray] = None) -> Optional[pa.RecordBatch]:
        """The rows of window ``s``; with ``only`` (group ids in its pane), an update: the rows
        of those groups alone, in group order, as the whole window would list them."""
        if only is not None:
            pane = self.panes[s]
            ids = np.unique(only)
            keys = pane.table.gather_keys(ids)
            return self._window_rows(s, keys, pane.partial.results(ids))
        w = self._window(s)
        if w is None:
            return None
        keys, acc = w
        return self._window_rows(s, keys, acc.results(None)) if len(keys) else None

    def _window_rows(self, s: int, keys: np.ndarray, aggs: List[pa.Array]) -> pa.RecordBatch:
        m = len(keys)
        return self._batch(np.full(m, s, np.int64), np.full(m, s + self.size_ns, np.int64), keys, aggs)

    # -- snapshots -------------------------------------------------------------------------------
    def _pane_groups(self, pane) -> Tuple[np.ndarray, np.ndarray, Partial]:
        """(group ids, key tuples, accumulators) of a pane's groups."""
        n = pane.table.n_groups
        return np.arange(n, dtype=np.int64), pane.table.keys_view()[:n], pane.partial

    def _restore_pane(self, start: int, codes: List[np.ndarray], restored: Partial) -> None:
        pane = self.panes.get(start)
        if pane is None:
            pane = self.panes[start] = self._new_pane(len(codes))
        m = len(codes[0])
        gids = np.empty(m, np.int64)
        pane.table.insert(codes, gids)
        pane.partial.ensure(pane.table.n_groups)
        pane.partial.merge(restored, np.arange(m, dtype=np.int64), gids)

    def snapshot(self) -> Snapshot:
        """Open panes as one table: ``pane``, the key columns, the accumulator columns."""
        tables, extras = [], []
        for start in sorted(self.panes):
            ids, keys, part = self._pane_groups(self.panes[start])
            if not len(ids):
                continue
            cols, extra = partial_to_arrow(part, ids)
            t = {"pane": pa.array(np.full(len(ids), start, np.int64))}
            t.update(self._key_arrays(keys))
            t.update(cols)
            tables.append(pa.table(t))
            extras.append(extra)
        return Snapshot(_concat_state(tables, extras, "groups"), self._meta())

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None, first: bool = True,
                owned: bool = False) -> None:
        """Load a snapshot (of any parallelism); ``select(table)`` picks this subtask's rows."""
        self._restore_meta(metas, first)
        rows = snapshot_rows(tables, "groups", select)
        if rows is None:
            return
        t, extra = rows
        panes = t.column("pane").to_numpy()
        for start in np.unique(panes):
            sub, sub_extra = filter_rows(t, extra, panes == start)
            restored = partial_from_arrow(self.acc, sub, sub_extra)
            self._restore_pane(int(start), self._key_codes(sub), restored)

    def describe(self) -> str:
        keys = ", ".join(self.encoder.names)
        aggs = ", ".join(f"{n}={a!r}" for n, a in self.aggs)
        on = f"on {self.time!r}" if self.time else "on processing time"
        late = f", allowed lateness {self.lateness / 1e9:g}s" if self.lateness else ""
        return f"window[{self.name}] key_by({keys}) {self.window!r} {on}{late}: {aggs}"


class SlidingWindowAggregate(WindowAggregate):
    """Sliding windows: every pane indexes one operator-wide key table, so closing a window
    merges its panes' accumulator arrays element by element (vectorised, no hashing), and a
    key's group id is the same in every pane."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = _hashagg.GroupTable(self.width, 1024)
        self._drops = 0                  # panes dropped since the last look for dead keys

    def _start_batch(self, cols: List[np.ndarray], s0: int, s1: int) -> None:
        self.table.insert(cols, self._gids[s0:s1])

    # -- two-phase: one key table for the batch, panes indexed by it ----------------------------
    def _reset_partials(self) -> None:
        super()._reset_partials()
        if self.table.n_groups:
            self.table = _hashagg.GroupTable(self.table.width, max(1024, self.table.n_groups))

    def _run_gids(self, b0: int, b1: int) -> np.ndarray:
        return self._gids[b0:b1].copy()

    def _hand_over(self, pre: PreAggregated, runs: Dict[int, list]) -> None:
        n = self.table.n_groups
        pre.keys = self.table if pre.direct else self._key_table(self.table.keys_view()[:n])
        pre.parts = [PanePart(start, None, r, None) for start, r in runs.items()]
        self.table = _hashagg.GroupTable(self.table.width, max(1024, n))

    def _merge_parts(self, pre: PreAggregated, base: int) -> None:
        # The batch's keys first, in arrival order (as its rows would insert them).
        codes = self._codes_of(pre, pre.keys)
        to = np.empty(len(codes[0]), np.int64)
        self.table.insert(codes, to)
        for part in pre.parts:
            pane = self.panes.get(part.start)
            if pane is None:
                pane = self.panes[part.start] = self._new_pane(len(codes))
            pane.ensure(self.table.n_groups)
            for gids, p in part.runs:
                pane.update(np.ascontiguousarray(to[gids]), _shifted(p, base))

    def _new_pane(self, width: int) -> Partial:
        return self.acc.new_state(max(self.table.n_groups, 1024), rows=True)

    def _add(self, pane: Partial, cols: List[np.ndarray], p: Prepared, b0: int, b1: int) -> None:
        if self._runs is not None:
            return          # a pre-aggregating replica hands over rows, never its panes
        pane.ensure(self.table.n_groups)
        pane.update(self._gids[b0:b1], p)

    def _updated(self, cols: List[np.ndarray], b0: int, b1: int) -> np.ndarray:
        return self._gids[b0:b1].copy()             # group ids in the operator-wide table

    def _widen(self) -> None:
        self.table = self.table.widen(0)

    def _window(self, s: int) -> Optional[Tuple[np.ndarray, Partial]]:
        panes = [self.panes[p] for p in range(s, s + self.size_ns, self.pane_ns) if p in self.panes]
        if not panes:
            return None
        acc = Partial(self.acc, self.table.n_groups, rows=True)
        acc.ensure(max(p.n for p in panes))
        for p in panes:
            acc.merge_aligned(p)
        return acc.counts[: acc.n], acc         # "keys" stand-in: resolved in _emit

    def _emit(self, s: int, only: Optional[np.ndarray] = None) -> Optional[pa.RecordBatch]:
        if only is not None:
            return self._emit_groups(s, np.unique(only))
        w = self._window(s)
        if w is None:
            return None
        counts, acc = w
        ids = np.flatnonzero(counts)
        if not len(ids):
            return None
        keys = self.table.gather_keys(np.ascontiguousarray(ids, np.int64))
        return self._window_rows(s, keys, acc.results(ids))

    def _emit_groups(self, s: int, ids: np.ndarray) -> Optional[pa.RecordBatch]:
        """An update of window ``s``: the rows of groups ``ids`` (ascending) alone, their
        panes merged for those groups only (the window's other keys are not touched)."""
        panes = [self.panes[p] for p in range(s, s + self.size_ns, self.pane_ns) if p in self.panes]
        if not panes:
            return None
        acc = Partial(self.acc, len(ids), rows=True)
        acc.ensure(len(ids))
        dst = np.arange(len(ids), dtype=np.int64)
        for p in panes:              # in pane order, as the whole window merges them
            sel = ids < p.n
            if sel.any():
                acc.merge(p, ids[sel], dst[sel])
        keep = np.flatnonzero(acc.counts[: len(ids)])
        if not len(keep):
            return None
        keys = self.table.gather_keys(np.ascontiguousarray(ids[keep], np.int64))
        return self._window_rows(s, keys, acc.results(keep))

    def _drop(self, pane: Partial) -> None:
        # Keys no open pane holds any more are dropped from the table now and then.
        n = self.table.n_groups
        if hasattr(pane, "drop"):
            pane.drop()
        self._drops += 1
        # Looked at once per window's worth of dropped panes: by then a key in no open pane
        # has been gone a whole window.
        if n < 4096 or not self.panes or self._drops < self.size_ns // self.pane_ns:
            return
        self._drops = 0
        live = np.zeros(n, bool)
        for p in self.panes.values():
            live[: p.n] |= p.counts[: p.n] > 0
        keep = np.flatnonzero(live).astype(np.int64)
        if 2 * len(keep) > n:
            return
        self.table.compact(keep)
        for start, p in list(self.panes.items()):
            self.panes[start] = p.take(keep[keep < p.n]) if p.n else p
        if self._touched:              # group ids of pending updates, renumbered
            remap = np.full(n, -1, np.int64)
            remap[keep] = np.arange(len(keep), dtype=np.int64)
            for s, ids in self._touched.items():
                ids = remap[np.concatenate(ids)]
                self._touched[s] = [ids[ids >= 0]]

    def _pane_groups(self, pane: Partial) -> Tuple[np.ndarray, np.ndarray, Partial]:
        ids = np.flatnonzero(pane.counts[: pane.n]).astype(np.int64)
        return ids, self.table.gather_keys(ids), pane

    def _restore_pane(self, start: int, codes: List[np.ndarray], restored: Partial) -> None:
        m = len(codes[0])
        gids = np.empty(m, np.int64)
        self.table.insert(codes, gids)
        pane = self.panes.get(start)
        if pane is None:
            pane = self.panes[start] = self._new_pane(len(codes))
        pane.ensure(self.table.n_groups)
        pane.merge(restored, np.arange(m, dtype=np.int64), gids)

    def _state_summary(self) -> str:
        return f"{self.table.n_groups:,} keys in {len(self.panes)} panes"

    def state_size_bytes(self) -> int:
        return (self.table.nbytes + sum(p.nbytes() for p in list(self.panes.values()))
                + self.encoder.nbytes() + self.acc.codec_bytes())


class SessionAggregate(_KeyedBase):
    """``key_by(...).window(SessionWindow.with_gap(gap), time=...).aggregate(...)``."""

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window: SessionWindow,
                 time: Optional[str], aggs: List[Tuple[str, AggSpec]], max_state_bytes: int,
                 allowed_lateness_ns: int = 0, backend=None):
        super().__init__(name, schema, keys, time, aggs, max_state_bytes, allowed_lateness_ns, backend)
        self.window = window
        self.gap = window.gap_ns
        self.keys = _hashagg.GroupTable(self.width, 1024)    # key tuple -> key id
        self.sessions = _accum.SessionSet(self.gap)
        self.partial = self.acc.new_state(1024)               # indexed by session id
        self.emitted = np.zeros(1024, np.uint8)               # session id -> result sent
        self.dead = 0
        # Runs (process_run): per-session scratch of _accum.session_assign_run, the global
        # number of the next run's first part, and how runs went (rounds of accumulator work).
        self._scratch = {name: np.full(1024, -1, np.int64) for name in ("touched", "last_op", "lo", "into")}
        self._run_base = 0
        self.run_stats = {"runs": 0, "parts": 0, "rounds": 0}

    def _widen(self) -> None:
        self.keys = self.keys.widen(0)

    def _ns(self, batch: pa.RecordBatch) -> np.ndarray:
        if self.time is None:
            return np.full(batch.num_rows, _time.time_ns(), np.int64)
        ts = self._times(batch)
        limit = (_I64_MAX - self.gap) // self.factor
        bad = np.flatnonzero((ts > limit) | (ts < -limit))
        if len(bad):
            raise self._bad_time(ts, int(bad[0]))
        return ts.astype(np.int64) * self.factor

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        n = batch.num_rows
        if n == 0:
            return []
        seqs = self._seqs(n)
        ts = self._ns(batch)
        cols = self._key_columns(batch)
        kid = np.empty(n, np.int64)
        self.keys.insert(cols, kid)
        sid = np.empty(n, np.int64)
        late_before = self.watermark - self.lateness if self.watermark > _I64_MIN + self.lateness else _I64_MIN
        merged_from, merged_into = self.sessions.assign(kid, ts, self.keys.n_groups, late_before, sid)
        count = self.sessions.n
        self.partial.ensure(count)
        if len(self.emitted) < count:
            grown = np.zeros(max(count, 2 * len(self.emitted)), np.uint8)
            grown[: len(self.emitted)] = self.emitted
            self.emitted = grown
        ok = sid >= 0
        prepared = self.acc.prepare(batch, seqs)
        out: List[Item] = []
        if not ok.all():
            idx = np.flatnonzero(ok)
            out += self._late([batch.filter(pa.array(~ok))])
            prepared = prepared.take(idx)
            sid_ok = np.ascontiguousarray(sid[idx])
        else:
            sid_ok = sid
        # Merges fold each merged-away session's state into its final survivor (one vectorised
        # merge for the whole batch: a survivor is never merged away, so no source is also a
        # destination); the batch's rows then land in their final sessions.
        if len(merged_from):
            to = self._survivors(merged_from, merged_into, int(sid_ok.max()) + 1 if len(sid_ok) else 0)
            src = np.ascontiguousarray(merged_from, np.int64)
            dst = np.ascontiguousarray(to[src])
            self.partial.merge(self.partial, src, dst)
            np.bitwise_or.at(self.emitted, dst, self.emitted[src])
            sid_ok = np.ascontiguousarray(to[sid_ok])
        self.dead += len(merged_from)
        self.partial.update(sid_ok, prepared)
        if self.watermark > _I64_MIN:
            # Sessions this batch touched that already end before the watermark (inside the
            # allowed lateness) are emitted now: an update if they had been emitted, else their
            # first result.  Emitted sessions whose end moved past the watermark (reopened) are
            # emitted again when they close.
            changed = np.unique(np.concatenate([sid_ok, merged_into]))
            changed = changed[np.asarray(self.sessions.alive)[changed].astype(bool)]
            if len(changed):
                end = np.asarray(self.sessions.last)[changed] + self.gap
                was = self.emitted[changed] == 1
                closed = changed[end <= self.watermark]
                self.emitted[changed[(end > self.watermark) & was]] = 0
                if len(closed):
                    b = self._rows(closed)
                    self.updates += int((self.emitted[closed] == 1).sum())
                    self.emitted[closed] = 1
                    out.insert(0, b)
        self._check_memory()
        return out + self._advance_processing_time()

    takes_runs = True

    def process_run(self, items: List[Item]) -> List[Item]:
        """Batches with the watermarks between them (a batch the watermark assigner cut), in
        one pass: keys encoded and aggregate inputs prepared once; sessions assigned, late
        rows found (each part with its own watermark) and emissions found in one kernel call
        (``_accum.session_assign_run``) and one scan at the end; accumulators updated in a
        few vectorised rounds that keep each session's operations in order.  The rows
        emitted (values bit for bit), the late rows and the updates are those of one
        ``process_batch`` / ``on_watermark`` call per item, in the same order; the
        watermarks between the parts are folded into the last one."""
        if self.time is None:
            return super().process_run(items)
        first, batches, bounds, after = _run_parts(items)
        if not batches:
            return super().process_run(items)
        head = [] if first is None else self._fire(first)[:-1]
        batch = _concat_batches(batches)
        n = batch.num_rows
        ts = self._ns(batch)
        seqs = self._seqs(n)
        cols = self._key_columns(batch)
        kid = np.empty(n, np.int64)
        self.keys.insert(cols, kid)
        prepared = self.acc.prepare(batch, seqs)
        parts = len(bounds) - 1
        wp = np.empty(parts + 1, np.int64)     # the watermark before part j; wp[-1]: after all
        w = wp[0] = self.watermark
        for j, a in enumerate(after):
            if a is not None and a > w:
                w = a
            wp[j + 1] = w
        base = self._run_base
        self._run_base += parts + 1
        ss = self.sessions
        self._reserve_run(ss.n + n)
        sid = np.empty(n, np.int64)
        rounds = np.empty(n, np.int64)
        sc = self._scratch
        mfrom, minto, mround, ev, upd = _accum.session_assign_run(
            ss, kid, ts, self.keys.n_groups, np.asarray(bounds, np.int64), self._limits(wp[:parts]),
            wp, base, self.emitted, sc["touched"], sc["last_op"], sc["lo"], sc["into"], sid, rounds)
        self.updates += upd
        self.partial.ensure(ss.n)
        got = self._rounds(sid, rounds, prepared, mfrom, minto, mround, ev)
        got += self._close_run(wp, base)
        self.run_stats["runs"] += 1
        self.run_stats["parts"] += parts
        late = sid < 0
        late_out = self._late([batch.filter(pa.array(late))]) if late.any() else []
        rows = self._in_order(got)
        marks = [j for j, a in enumerate(after) if a is not None]
        if first is None and not marks:
            out = head + rows[1] + late_out
        else:
            t = max([a for a in after if a is not None] + ([first] if first is not None else []))
            cut = 2 * (base + marks[-1] + 1) - 1 if marks else -1
            before, later = self._split_rows(rows, cut)
            out = head + before + late_out + [Watermark(t)] + later
        self._check_memory()
        return out

    def _rounds(self, sid: np.ndarray, rounds: np.ndarray, prepared: Prepared, mfrom: np.ndarray,
                minto: np.ndarray, mround: np.ndarray, ev: np.ndarray) -> List[Tuple[np.ndarray, pa.RecordBatch]]:
        """The accumulator work of a run, round by round: merges, then rows (in row order),
        then the emitted sessions' rows read (see ``_accum.session_assign_run``)."""
        ok = sid >= 0
        top = 0
        for r in (rounds[ok], mround, ev[:, 5]):
            if len(r):
                top = max(top, int(r.max()))
        self.run_stats["rounds"] += top
        self.dead += len(mfrom)
        got = []
        if top <= 1 and not len(mfrom):          # the usual run: one update
            early = ev[:, 5] == 0                 # read before any row of the run
            if early.any():
                got.append((ev[early], self._rows_at(ev[early])))
            idx = None if ok.all() else np.flatnonzero(ok)
            if idx is None:
                self.partial.update(sid, prepared)
            elif len(idx):
                self.partial.update(np.ascontiguousarray(sid[idx]), prepared.take(idx))
            if not early.all():
                got.append((ev[~early], self._rows_at(ev[~early])))
            return got
        rows = np.flatnonzero(ok)
        rows = rows[np.argsort(rounds[rows], kind="stable")]
        row_at = np.searchsorted(rounds[rows], np.arange(top + 2))
        morder = np.argsort(mround, kind="stable")
        merge_at = np.searchsorted(mround[morder], np.arange(top + 2))
        eorder = np.argsort(ev[:, 5], kind="stable")
        ev_at = np.searchsorted(ev[eorder, 5], np.arange(top + 2))
        for r in range(top + 1):
            m = morder[merge_at[r]: merge_at[r + 1]]
            if len(m):
                self.partial.merge(self.partial, np.ascontiguousarray(mfrom[m]),
                                   np.ascontiguousarray(minto[m]))
            idx = rows[row_at[r]: row_at[r + 1]]
            if len(idx):
                self.partial.update(np.ascontiguousarray(sid[idx]), prepared.take(idx))
            e = eorder[ev_at[r]: ev_at[r + 1]]
            if len(e):
                sel = ev[e]
                got.append((sel, self._rows_at(sel)))
        return got

    def _limits(self, marks: np.ndarray) -> np.ndarray:
        """Per watermark: events whose session would end at or before it are late."""
        lat = self.lateness
        with np.errstate(over="ignore"):
            return np.where(marks > _I64_MIN + lat, marks - lat, _I64_MIN).astype(np.int64)

    def _reserve_run(self, sessions: int) -> None:
        """Per-session arrays for ``sessions`` ids (new marks -1: no part of any run)."""
        if len(self.emitted) < sessions:
            grown = np.zeros(max(sessions, 2 * len(self.emitted)), np.uint8)
            grown[: len(self.emitted)] = self.emitted
            self.emitted = grown
        for name, a in self._scratch.items():
            if len(a) < sessions:
                grown = np.full(max(sessions, 2 * len(a)), -1, np.int64)
                grown[: len(a)] = a
                self._scratch[name] = grown

    def _rows_at(self, ev: np.ndarray) -> pa.RecordBatch:
        """Result rows of sessions ``ev[:, 1]`` with the bounds they had when emitted."""
        sids = np.ascontiguousarray(ev[:, 1])
        keys = self.keys.gather_keys(np.ascontiguousarray(np.asarray(self.sessions.key)[sids], np.int64))
        return self._batch(ev[:, 3].copy(), ev[:, 4].copy(), keys, self.partial.results(sids))

    def _close_run(self, wp: np.ndarray, base: int) -> List[Tuple[np.ndarray, pa.RecordBatch]]:
        """After the run's rows: sessions due at its watermarks that no row touched since
        (one scan), then those past their lateness are dropped, as ``_fire`` would."""
        t = int(wp[-1])
        got = []
        ss = self.sessions
        n = ss.n
        alive = np.asarray(ss.alive)[:n].astype(bool)
        end = np.asarray(ss.last)[:n] + self.gap
        if n and t > _I64_MIN:
            due = np.flatnonzero(alive & (end <= t) & (self.emitted[:n] == 0))
            if len(due):
                j = np.searchsorted(wp, end[due], side="left")
                ev = np.empty((len(due), 6), np.int64)
                ev[:, 0] = 0
                ev[:, 1] = due
                ev[:, 2] = 2 * (base + j) - 1
                ev[:, 3] = np.asarray(ss.start)[due]
                ev[:, 4] = end[due]
                ev[:, 5] = _I64_MAX                # read after every round
                got.append((ev, self._rows_at(ev)))
                self.emitted[due] = 1
        if t > self.watermark:
            self.watermark = t
            if n:
                gone = np.flatnonzero(alive & (end <= int(self._limits(wp[-1:])[0])))
                if len(gone):
                    ss.remove(gone)
                    self.dead += len(gone)
                if self.dead > 1024 and self.dead * 2 > n:
                    self._compact()
        return got

    @staticmethod
    def _in_order(got: List[Tuple[np.ndarray, pa.RecordBatch]]) -> Tuple[np.ndarray, List[pa.RecordBatch]]:
        """The gathered rows as one batch in emission order: by position in the run; at a
        watermark by (end, start, id) as ``_fire``, after a part's rows by id."""
        if not got:
            return np.empty(0, np.int64), []
        ev = np.concatenate([e for e, _ in got])
        at_mark = ev[:, 0] == 0
        order = np.lexsort((ev[:, 1], np.where(at_mark, ev[:, 3], 0), np.where(at_mark, ev[:, 4], 0), ev[:, 2]))
        batch = _concat_batches([b for _, b in got])
        if not np.array_equal(order, np.arange(len(order))):
            batch = batch.take(pa.array(order))
        return ev[order, 2], [batch]

    @staticmethod
    def _split_rows(rows: Tuple[np.ndarray, List[pa.RecordBatch]], cut: int):
        """Rows emitted up to position ``cut``, and after it."""
        pos, batches = rows
        if not batches:
            return [], []
        k = int(np.searchsorted(pos, cut, side="right"))
        b = batches[0]
        if k == len(pos):
            return [b], []
        if k == 0:
            return [], [b]
        return [b.slice(0, k)], [b.slice(k)]

    @staticmethod
    def _survivors(merged_from: np.ndarray, merged_into: np.ndarray, top: int) -> np.ndarray:
        """Session id -> the session it ended up in after this batch's merges (in order; a
        session merged into one that was merged later follows the chain), for ids < ``top``
        and every id in the merge log."""
        top = max(top, int(merged_from.max()) + 1, int(merged_into.max()) + 1)
        to = np.arange(top, dtype=np.int64)
        to[merged_from] = merged_into          # each id is merged away at most once
        for _ in range(len(merged_from)):
            nxt = to[to]
            if np.array_equal(nxt, to):
                break
            to = nxt
        return to

    def _rows(self, sids: np.ndarray) -> pa.RecordBatch:
        ss = self.sessions
        start = np.asarray(ss.start)[sids]
        end = np.asarray(ss.last)[sids] + self.gap
        keys = self.keys.gather_keys(np.ascontiguousarray(np.asarray(ss.key)[sids], np.int64))
        return self._batch(start, end, keys, self.partial.results(sids))

    def _advance_processing_time(self) -> List[Item]:
        if self.time is not None:
            return []
        return self._fire(_time.time_ns())[:-1]

    def on_watermark(self, t: int) -> List[Item]:
        if self.time is None:
            return (self._fire(t) if t == WATERMARK_MAX else []) + [Watermark(t)]
        return self._fire(t)

    def on_tick(self, now: int) -> List[Item]:
        return self._advance_processing_time() + [Tick(now)]

    def _fire(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            self.watermark = t
            ss = self.sessions
            n = ss.n
            if n:
                alive = np.asarray(ss.alive)[:n].astype(bool)
                end = np.asarray(ss.last)[:n] + self.gap
                due = np.flatnonzero(alive & (end <= t) & (self.emitted[:n] == 0))
                if len(due):
                    order = np.lexsort((np.asarray(ss.start)[due], end[due]))
                    due = due[order]
                    out.append(self._rows(due))
                    self.emitted[due] = 1
                limit = t - self.lateness if t > _I64_MIN + self.lateness else _I64_MIN
                gone = np.flatnonzero(alive & (end <= limit))
                if len(gone):
                    ss.remove(gone)
                    self.dead += len(gone)
                if self.dead > 1024 and self.dead * 2 > n:
                    self._compact()
        out.append(Watermark(t))
        return out

    def _compact(self) -> None:
        """Drop closed sessions and keys without open sessions; renumber the rest."""
        ss = self.sessions
        n = ss.n
        keep = np.flatnonzero(np.asarray(ss.alive)[:n]).astype(np.int64)
        key_of = np.asarray(ss.key)[keep]
        live_keys = np.unique(key_of)
        key_map = np.full(self.keys.n_groups, -1, np.int64)
        key_map[live_keys] = np.arange(len(live_keys), dtype=np.int64)
        self.keys.compact(np.ascontiguousarray(live_keys))
        ss.compact(keep, key_map, max(len(live_keys), 1))
        self.partial = self.partial.take(keep)
        emitted = np.zeros(max(1024, 2 * len(keep)), np.uint8)
        emitted[: len(keep)] = self.emitted[keep]
        self.emitted = emitted
        self.dead = 0

    def snapshot(self) -> Snapshot:
        """Open sessions: the key columns, ``start``, ``last``, ``emitted``, accumulators."""
        ss = self.sessions
        ids = np.flatnonzero(np.asarray(ss.alive)[: ss.n]).astype(np.int64)
        cols, extra = partial_to_arrow(self.partial, ids)
        t = self._key_arrays(self.keys.gather_keys(np.ascontiguousarray(np.asarray(ss.key)[ids], np.int64)))
        t.update({"start": pa.array(np.asarray(ss.start)[ids]), "last": pa.array(np.asarray(ss.last)[ids]),
                  "emitted": pa.array(self.emitted[ids].astype(np.int8))})
        t.update(cols)
        return Snapshot(_concat_state([pa.table(t)], [extra], "sessions"), self._meta())

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None, first: bool = True,
                owned: bool = False) -> None:
        self._restore_meta(metas, first)
        rows = snapshot_rows(tables, "sessions", select)
        if rows is None:
            return
        t, extra = rows
        m = t.num_rows
        codes = self._key_codes(t)          # may widen the key table first
        kid = np.empty(m, np.int64)
        self.keys.insert(codes, kid)
        start = t.column("start").to_numpy()
        last = t.column("last").to_numpy()
        sids = self.sessions.add(kid, np.ascontiguousarray(start, np.int64),
                                 np.ascontiguousarray(last, np.int64), self.keys.n_groups)
        restored = partial_from_arrow(self.acc, t, extra)
        self.partial.ensure(self.sessions.n)
        self.partial.merge(restored, np.arange(m, dtype=np.int64), sids)
        if len(self.emitted) < self.sessions.n:
            grown = np.zeros(max(1024, 2 * self.sessions.n), np.uint8)
            grown[: len(self.emitted)] = self.emitted
            self.emitted = grown
        self.emitted[sids] = t.column("emitted").to_numpy().astype(np.uint8)

    def _state_summary(self) -> str:
        open_ = int(np.asarray(self.sessions.alive)[: self.sessions.n].sum())
        return f"{open_:,} open sessions of {self.keys.n_groups:,} keys"

    def state_size_bytes(self) -> int:
        return (self.keys.nbytes + self.sessions.nbytes + self.partial.nbytes() + self.emitted.nbytes
                + self.encoder.nbytes() + self.acc.codec_bytes())

    def open_windows(self) -> int:
        return int(np.asarray(self.sessions.alive)[: self.sessions.n].sum())

    def describe(self) -> str:
        keys = ", ".join(self.encoder.names)
        aggs = ", ".join(f"{n}={a!r}" for n, a in self.aggs)
        on = f"on {self.time!r}" if self.time else "on processing time"
        late = f", allowed lateness {self.lateness / 1e9:g}s" if self.lateness else ""
        return f"window[{self.name}] key_by({keys}) {self.window!r} {on}{late}: {aggs}"


def window_operator(name: str, schema: pa.Schema, keys: List[str], window, time: Optional[str],
                    aggs: List[Tuple[str, AggSpec]], max_state_bytes: int,
                    allowed_lateness_ns: int = 0, backend=None) -> _KeyedBase:
    """The operator for a window spec (state on ``backend``, a config.StateBackend)."""
    cls = (SessionAggregate if isinstance(window, SessionWindow)
           else SlidingWindowAggregate if isinstance(window, SlidingWindow) else WindowAggregate)
    return cls(name, schema, keys, window, time, aggs, max_state_bytes, allowed_lateness_ns, backend)


class WatermarkAssigner(Operator):
    """Emits ``Watermark(max event time seen - max_out_of_orderness)`` after each batch.

    A row that is behind the watermark implied by the rows before it gets that watermark
    delivered first (the batch is cut there), so whether an event is late depends only on the
    order of events, never on where micro-batches were cut: replaying history and following a
    live source give the same results.  ``grid`` (``kernels.window.window_grid`` of the windows
    downstream) says which watermark values matter: the batch is cut only where the watermark
    passes a window end (or end + allowed lateness) since the last one delivered, so a burst
    of late or out-of-order rows costs a few cuts per batch, not one per row.  With
    ``idle_timeout_ns``, ticks that find no data for that long advance the watermark by the
    wall time since the last event.

    Right after a source of several splits (``splits``: the source's
    ``connectors.splits.Splits``, e.g. Kafka partitions) the watermark is kept per split and
    is their minimum (``operators/splitclock.py``): a split read later or more slowly than the
    others is not behind them.  A split idle for ``idle_timeout_ns`` stops holding the
    watermark back until it sends data again; a split more than ``max_drift_ns`` ahead of the
    slowest is marked for the source to pause (watermark alignment).
    """

    kind = "watermark"
    stateful = True

    def __init__(self, name: str, schema: pa.Schema, time: str, max_out_of_orderness_ns: int,
                 idle_timeout_ns: Optional[int] = None, grid: tuple = EXACT_GRID, splits=None,
                 max_drift_ns: Optional[int] = None, on_null: str = "fail"):
        self.name = name
        self.skip_nulls = on_null == "skip"
        self.time = time
        self.grid = grid
        self.clock = None if splits is None else SplitClock(
            splits, schema, name, max_out_of_orderness_ns, idle_timeout_ns, max_drift_ns)
        self.factor = time_factor(schema, time, name)
        self.idx = schema.get_field_index(time)
        self.is_ts = pat.is_timestamp(schema.field(time).type)
        self.bound = max_out_of_orderness_ns
        self.idle_timeout = idle_timeout_ns
        self.current = _I64_MIN           # last watermark emitted
        self.max_seen = _I64_MIN          # largest event time seen (ns)
        self.last_data = _time.time_ns()  # wall time of the last batch

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if type(batch) is PreAggregated:
            fast = self._pre_aggregated(batch)
            if fast is not None:
                return fast
            batch = batch.batch           # cut and sent on as rows, as with parallelism 1
        col = batch.column(self.idx)
        if col.null_count:
            if not self.skip_nulls:
                row = int(col.is_null().to_numpy(zero_copy_only=False).argmax())
                raise DataError(
                    f"step {self.name!r}: time column {self.time!r} is null at row {row} of a batch; "
                    "every event needs an event time: with_watermark(on_null='skip') drops such "
                    "rows (counted), kafka_source(on_error='dead_letter') keeps them as dead letters"
                )
            batch = self._skip_nulls(batch, col)
            if not batch.num_rows:
                return []
            col = batch.column(self.idx)
        if self.idle_timeout is not None:
            self.last_data = _time.time_ns()
        ts = (col.view(pa.int64()) if self.is_ts else col).to_numpy(zero_copy_only=False)
        if self.clock is not None:
            cuts, marks, k, low = self.clock.low_after(batch, ts, self.factor, self.current, self.grid)
            self.max_seen = max(self.max_seen, self.clock.max_seen())
        else:
            cuts, marks, k, self.max_seen = watermark_splits(ts, self.factor, self.bound,
                                                             self.max_seen, self.current, self.grid)
            low = self.max_seen - self.bound if self.max_seen != _I64_MIN else _I64_MIN
        out: List[Item] = []
        start = 0
        for j in range(k):
            cut, mark = int(cuts[j]), int(marks[j])
            if cut > start:
                out.append(batch.slice(start, cut - start))
            out.append(Watermark(mark))
            self.current = mark
            start = cut
        out.append(batch.slice(start) if start else batch)
        if _I64_MIN < low < _I64_MAX and low > self.current:
            self.current = low
            out.append(Watermark(low))
        return out

    def _skip_nulls(self, batch: pa.RecordBatch, col: pa.Array) -> pa.RecordBatch:
        n = col.null_count
        if not self.null_event_times:
            log.warning("step %r: %d rows without an event time (%r is null) dropped, as "
                        "with_watermark(on_null='skip') asks; further ones are counted in "
                        "streaming_dead_letters_total{reason=\"null_event_time\"}", self.name, n,
                        self.time, extra={"operator": self.name})
        self.null_event_times += n
        return batch.filter(col.is_valid())

    def _pre_aggregated(self, pre: PreAggregated) -> Optional[List[Item]]:
        """A replica's pre-aggregated batch that needs no cut (no row behind the rows before
        it, in the batch or before it): passed on whole, then the watermark; else None."""
        if not (pre.usable and pre.ordered) or self.clock is not None:
            return None
        if self.max_seen != _I64_MIN and pre.min_ns < self.max_seen - self.bound:
            return None
        if self.idle_timeout is not None:
            self.last_data = _time.time_ns()
        self.max_seen = max(self.max_seen, pre.max_ns)
        out: List[Item] = [pre]
        if self.max_seen - self.bound > self.current:
            self.current = self.max_seen - self.bound
            out.append(Watermark(self.current))
        return out

    def on_watermark(self, t: int) -> List[Item]:
        # An upstream watermark (e.g. end of input) only ever moves ours forward.
        if t > self.current:
            self.current = t
            return [Watermark(t)]
        return []

    def on_tick(self, now: int) -> List[Item]:
        out: List[Item] = []
        idle = now - self.last_data
        if self.clock is not None:
            low = self.clock.low(now)          # a split went idle or finished: may rise
            if _I64_MIN < low < _I64_MAX:
                if low > self.current:
                    self.current = low
                    out.append(Watermark(low))
                return out + [Tick(now)]
        if (self.idle_timeout is not None and self.max_seen != _I64_MIN
                and idle >= self.idle_timeout):
            mark = self.max_seen - self.bound + idle
            if mark > self.current:
                self.current = mark
                out.append(Watermark(mark))
        return out + [Tick(now)]

    def snapshot(self) -> Snapshot:
        meta = {"current": self.current, "max_seen": self.max_seen}
        if self.clock is not None:
            meta.update(self.clock.snapshot())
        return Snapshot({}, meta)

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None, first: bool = True,
                owned: bool = False) -> None:
        if metas:
            self.current = max(m["current"] for m in metas)
            self.max_seen = max(m["max_seen"] for m in metas)
            if self.clock is not None:
                self.clock.restore(metas)

    def describe(self) -> str:
        idle = f", idle timeout {self.idle_timeout / 1e9:g}s" if self.idle_timeout else ""
        per = "" if self.clock is None else f", per split of {', '.join(self.clock.splits.columns)}"
        return f"watermark[{self.name}] on {self.time!r}, max out-of-orderness {self.bound / 1e9:g}s{idle}{per}"

    # -- declared statistics (metrics, diagnose) --------------------------------------------------
    def watermark_ns(self) -> Optional[int]:
        """The watermark last emitted (None: none yet, or the input has ended)."""
        wm = self.current
        if wm == _I64_MIN or wm >= WATERMARK_MAX:
            return None
        return int(wm)

    def holding_split(self) -> Optional[str]:
        """The live split whose watermark is the lowest, named ``column=value`` (e.g.
        ``"kafka_partition=3"``), when it holds the watermark back: None without per-split
        watermarks, with fewer than two live splits, or when they are all at the same one.

        ``JobHandle.diagnose()`` names it.  Read from other threads: it copies the split
        clock's arrays (the processing thread replaces them when a split appears), so at worst
        it names the split that was lowest a moment ago.

        Examples
        --------
        >>> import pyarrow as pa
        >>> from heliosdb.connectors.splits import Splits
        >>> schema = pa.schema([("p", pa.int32()), ("ts", pa.int64())])
        >>> WatermarkAssigner("wm", schema, "ts", 0).holding_split() is None
        True
        >>> splits = Splits(["p"]); splits.declare([(0,), (1,)])
        >>> wm = WatermarkAssigner("wm", schema, "ts", 0, splits=splits)
        >>> _ = wm.process_batch(pa.record_batch({"p": pa.array([0], pa.int32()), "ts": [5_000]}))
        >>> wm.holding_split()                          # partition 1 has sent nothing yet
        'p=1'
        """
        clock = self.clock
        if clock is None:
            return None
        keys, seen, live = list(clock.keys), clock.seen.copy(), clock.live.copy()
        n = min(len(keys), len(seen), len(live))
        alive = np.flatnonzero(live[:n])
        if len(alive) < 2 or seen[alive].min() == seen[alive].max():
            return None
        key = keys[int(alive[np.argmin(seen[alive])])]
        return ", ".join(f"{c}={v}" for c, v in zip(clock.splits.columns, key))


def _run_parts(items: List[Item]):
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


def _concat_batches(batches: List[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _shifted(p: Prepared, base: int) -> Prepared:
    """A replica's prepared rows with the window's arrival numbers (first/last)."""
    if base and p.seqs is not None:
        p.seqs = p.seqs + base
    return p


def _shift_seqs(part: Partial, base: int) -> None:
    """Arrival numbers of a replica's first/last values (from 0 in its batch) -> the window's."""
    if not base or not (part.first or part.last):
        return
    for group in (part.first, part.last):
        for d in group.values():
            seq = d["seq"][: part.n]
            seq[seq >= 0] += base


def _concat_state(tables: List[pa.Table], extras: List[Dict[str, pa.Table]], name: str) -> Dict[str, pa.Table]:
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
