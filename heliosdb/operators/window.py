"""Keyed window aggregation: tumbling and sliding (pane-based), event or processing time.
Sessions are in ``operators/session.py``, what all keyed windows share in
``operators/keyedwindow.py``, the watermark step in ``operators/watermark.py``.

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
- Sessions (``operators/session.py``): each key's events form sessions ``[first, last + gap)``.

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

import time as _time
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..expr import AggSpec
from ..kernels import _hashagg
from ..kernels.window import tumbling_runs, tumbling_starts
from ..windows import SessionWindow, SlidingWindow, TumblingWindow
from .accumulators import (AccPlan, Partial, Prepared, filter_rows, partial_from_arrow,
                           partial_to_arrow, snapshot_rows)
from .base import WATERMARK_MAX, Item, Snapshot, Tick, Watermark
from .keyedwindow import (MAX_RUNS, _concat_batches, _concat_state, _I64_MAX, _KeyedBase,
                          _run_parts)
from .preagg import PanePart, PreAggregated

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
        first, batches, bounds, after = _run_parts(items)
        out = [] if first is None else self._fire(first)
        if not batches:
            return out
        out += self._segments(_concat_batches(batches), bounds, after[:-1])
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
        starts)``.  A part in few runs (ordered input) keeps its rows where they are; a part
        with many panes interleaved is sorted by pane (stably), exactly as it would be alone
        (a sliding window's key table then numbers keys as part-by-part processing does), and
        ``order`` (else None) is the batch's row order that makes every run contiguous."""
        parts, order, all_starts = [], None, None
        for j in range(len(bounds) - 1):
            b0, b1 = bounds[j], bounds[j + 1]
            rb, starts, k, bad = tumbling_runs(ts[b0:b1], self.factor, self.pane_ns, MAX_RUNS)
            if bad >= 0:
                raise self._bad_time(ts, b0 + bad)
            if k >= 0:
                parts.append((rb[: k + 1] + b0, starts[:k]))
                continue
            if all_starts is None:
                all_starts, lo, _, bad = tumbling_starts(ts, self.factor, self.pane_ns)
                if bad >= 0:
                    raise self._bad_time(ts, bad)
                order = np.arange(len(ts), dtype=np.int64)
            key = (all_starts[b0:b1] - lo) // self.pane_ns
            if int(key.max()) < 2**16:
                key = key.astype(np.uint16)     # numpy sorts 16-bit keys by radix: O(n)
            o = np.argsort(key, kind="stable")
            order[b0:b1] = o + b0
            sk = key[o]
            rb = np.concatenate([[0], np.flatnonzero(np.diff(sk)) + 1, [b1 - b0]])
            parts.append((rb + b0, all_starts[b0:b1][o][rb[:-1]]))
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


def window_operator(name: str, schema: pa.Schema, keys: List[str], window, time: Optional[str],
                    aggs: List[Tuple[str, AggSpec]], max_state_bytes: int,
                    allowed_lateness_ns: int = 0, backend=None) -> _KeyedBase:
    """The operator for a window spec (state on ``backend``, a config.StateBackend)."""
    from .session import SessionAggregate

    cls = (SessionAggregate if isinstance(window, SessionWindow)
           else SlidingWindowAggregate if isinstance(window, SlidingWindow) else WindowAggregate)
    return cls(name, schema, keys, window, time, aggs, max_state_bytes, allowed_lateness_ns, backend)



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


