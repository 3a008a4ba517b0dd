"""Keyed windows made of panes (tumbling, sliding, cumulative, ...), on event or processing
time.  Sessions are in ``operators/session.py``, what all keyed windows share in
``operators/keyedwindow.py``, the watermark step in ``operators/watermark.py``.

Windowing has three parts (as in Bytewax), each behind one interface, so this operator never
asks which kind of window or time it runs:

- a **clock** (``operators/clock.py``): event time from a column and the watermark, or the
  wall clock;
- a **windower** (``operators/windower.py``, built by the window spec): which pane and which
  windows a row belongs to, which windows a watermark closes, which panes a window merges;
- a **pane store** (``operators/panes.py``): each open pane's partial aggregates
  (``state.MemoryGroupState``: arrays indexed by dense group id, with update and merge).

Per batch: the clock splits it into runs of rows in the same pane (Numba; ordered input costs
a comparison per row), each run's keys get group ids (Cython) and update the pane's
accumulators (Cython, nogil).  When the watermark passes a window's end, its panes are merged
(``size / slide`` merges of each key, not one per event per window) and emitted.  A pane is
dropped when the last window holding it is past its end plus the allowed lateness.

Lateness: an event is late when every window it belongs to ended at least
``allowed_lateness`` before the watermark; late events go to the ``late`` side output (and are
counted), never silently dropped: when no stage reads it (the planner sets
``late_output_read``), they are counted and dropped, and the first drop is a warning.  An
event for a window that has already been emitted but is still within the allowed lateness
updates the window and emits an *update*: a new row with the same window and key that
supersedes the earlier one.

Timeline of a 10 s tumbling window with 5 s allowed lateness::

    event time   0 ............ 10 ......... 15
    window       [0, 10) open    |  emitted   | dropped
    an event at 3 arriving when watermark = 12 -> update row for [0, 10)
    an event at 3 arriving when watermark = 15 -> late output

With parallelism, replicas pre-aggregate batches into panes (``operators/preagg.py``) and this
operator merges their partials (``process_partials``).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

from ..state import filter_rows, snapshot_rows, state_from_arrow, state_to_arrow
from .base import Item, Snapshot, Watermark
from .clock import Clock, make_clock
from .keyedbase import Aggs
from .keyedwindow import _I64_MAX, WindowOperator, concat_batches, concat_state, run_parts
from .panes import pane_store
from .preagg import PanePartials
from .session import SessionAggregate
from .windower import PaneWindower, SessionWindower


class WindowAggregate(WindowOperator):
    """``key_by(...).window(spec, time=...).aggregate(...)`` for windows made of panes."""

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window, windower: PaneWindower,
                 clock: Clock, aggs: Aggs, max_state_bytes: int,
                 allowed_lateness_ns: int = 0, backend=None):
        super().__init__(name, schema, keys, window, clock, aggs, max_state_bytes, allowed_lateness_ns,
                         backend)
        self.windower = windower
        self.pane_ns = windower.pane_ns
        self.store = pane_store(self.acc, self.width, windower)
        self._touched: Optional[Dict[int, List[np.ndarray]]] = None   # see _segments

    @property
    def panes(self) -> Dict[int, object]:
        """Open panes: start -> their state."""
        return self.store.panes

    def _is_late(self, pane: int) -> bool:
        return self.windower.last_end(pane) + self.lateness <= self.watermark

    # -- per batch -----------------------------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if batch.num_rows == 0:
            return []
        return self._segments(batch, [0, batch.num_rows], [])

    def process_run(self, items: List[Item]) -> List[Item]:
        """Batches with the watermarks between them, in one pass: keys encoded, aggregate
        inputs prepared and panes found once for all rows; between the parts, windows fire as
        the watermarks arrive, exactly as one call per item would."""
        if not self.clock.takes_runs:
            return super().process_run(items)        # the wall clock is read per batch
        first, batches, bounds, after = run_parts(items)
        out = [] if first is None else self._fire(first)
        if not batches:
            return out
        out += self._segments(concat_batches(batches), bounds, after[:-1])
        if after[-1] is not None:
            out += self._fire(after[-1])
        return out

    def _segments(self, batch: pa.RecordBatch, bounds: List[int], marks: List[int]) -> List[Item]:
        """Rows ``bounds[j]:bounds[j+1]`` of ``batch`` arrive, and watermark ``marks[j]``
        after them (``len(marks) == len(bounds) - 2``)."""
        n = batch.num_rows
        batch, runs, ts, cols, prepared = self._in_pane_order(batch, bounds, self.pane_ns, self.clock)
        store, windower = self.store, self.windower
        off, lateness = windower.end_offset, self.lateness        # window w ends at w + off
        store.reserve(n)
        out: List[Item] = []
        late: Optional[np.ndarray] = None              # rows that are late, if any
        # Emitted windows the rows update -> their keys; the updates go out once for the run,
        # or before a watermark lets the window go (an update supersedes the rows before it:
        # one per run says the same as one per part).
        touched = self._touched = {}
        for j, (rb, starts) in enumerate(runs):
            s0, s1 = int(rb[0]), int(rb[-1])
            store.begin_part([c[s0:s1] for c in cols], s0, s1)
            for r in range(len(starts)):
                pane, b0, b1 = int(starts[r]), int(rb[r]), int(rb[r + 1])
                last_end = windower.last_end(pane)
                if last_end > _I64_MAX:
                    raise self.clock.bad_time(ts, b0)
                wm = self.watermark
                if last_end + lateness <= wm:             # every window of the pane is gone
                    if late is None:
                        late = np.zeros(n, bool)
                    late[b0:b1] = True
                    continue
                store.add(pane, cols, prepared.slice(b0, b1), b0, b1)
                if not lateness:
                    continue                              # no emitted window takes updates
                updated = None
                for w in windower.windows_of(pane):
                    end = w + off
                    # Emitted, but still within the allowed lateness: an update.  (A window past
                    # end + lateness is gone; the event still counts for the panes' other windows.)
                    if end <= wm < end + lateness:
                        if updated is None:
                            updated = store.updated(b0, b1)
                        touched.setdefault(w, []).append(updated)
            self._check_memory()
            if j < len(marks):
                gone = marks[j] - lateness - off
                out += self._updates([w for w in touched if w <= gone])
                out += self._fire(marks[j])
        out += self._updates(list(touched))
        self._touched = None
        late_rows = [] if late is None else [batch.filter(pa.array(late))]
        return out + self._late(late_rows) + self._advance_clock()

    def _updates(self, windows: List[int]) -> List[Item]:
        """The update rows of the touched ``windows`` (then no longer touched)."""
        out = []
        for w in sorted(windows):
            b = self._emit(w, np.concatenate(self._touched.pop(w)))
            if b is not None:
                out.append(b)
                self.updates += b.num_rows
        return out

    # -- two-phase aggregation (parallelism > 1; see operators/preagg.py) ------------------------
    def process_partials(self, pre: PanePartials) -> List[Item]:
        """A replica's partials of one batch.  When no row of it is behind the watermark,
        nothing is late and no emitted window is touched, so merging the partials is what the
        rows would have done; otherwise the batch's rows are processed."""
        if pre.usable and pre.min_ns >= self.watermark:
            return self._merge_partials(pre)
        return self.process_batch(pre.batch)

    def _merge_partials(self, pre: PanePartials) -> List[Item]:
        base = self.seq
        self.seq += pre.num_rows
        if pre.direct and pre.nulls and not self.nulls:
            self._widen()
            self.nulls = True
        self.store.merge(pre, base, self._codes_of, self.nulls)
        self._check_memory()
        return []

    def _codes_of(self, pre: PanePartials, keys) -> List[np.ndarray]:
        """This window's key codes of a replica's keys (its table, or decoded keys)."""
        if not pre.direct:
            return self._key_codes(keys)
        m = keys.n_groups
        view = keys.keys_view()[:m]
        cols = [np.ascontiguousarray(view[:, j]) for j in range(view.shape[1])]
        if self.nulls and not pre.nulls:
            cols.append(np.zeros(m, np.int64))
        return cols

    # -- state -----------------------------------------------------------------------------------
    def _widen(self) -> None:
        self.store.widen()

    def _state_summary(self) -> str:
        return self.store.summary()

    def state_size_bytes(self) -> int:
        return self.store.nbytes() + self.encoder.nbytes() + self.acc.codec_bytes()

    def open_windows(self) -> int:
        return len(self.store.panes)

    # -- closing windows -------------------------------------------------------------------------
    def _fire(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            before, self.watermark = self.watermark, t
            panes = self.store.panes
            if panes:
                for w in self.windower.due(panes, before, t):
                    b = self._emit(w)
                    if b is not None:
                        out.append(b)
                for p in [p for p in panes if self._is_late(p)]:
                    self.store.drop(p, self._touched)
        out.append(Watermark(t))
        return out

    def _emit(self, w: int, only: Optional[np.ndarray] = None) -> Optional[pa.RecordBatch]:
        """The rows of window ``w``; with ``only`` (keys from the store's ``updated``), an
        update: the rows of those keys alone, in group order, as the whole window would list
        them."""
        rows = self.store.window(w) if only is None else self.store.window_update(w, only)
        if rows is None:
            return None
        keys, aggs = rows
        m = len(keys)
        windower = self.windower
        return self._batch(np.full(m, windower.start(w), np.int64), np.full(m, windower.end(w), np.int64),
                           keys, aggs)

    # -- snapshots -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Open panes as one table: ``pane``, the key columns, the accumulator columns."""
        tables, extras = [], []
        for start in sorted(self.store.panes):
            ids, keys, part = self.store.pane_groups(start)
            if not len(ids):
                continue
            cols, extra = state_to_arrow(part, ids)
            t = {"pane": pa.array(np.full(len(ids), start, np.int64))}
            t.update(self._key_arrays(keys))
            t.update(cols)
            tables.append(pa.table(t))
            extras.append(extra)
        return Snapshot(concat_state(tables, extras, "groups"), self._meta())

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
            restored = state_from_arrow(self.acc, sub, sub_extra)
            self.store.restore_pane(int(start), self._key_codes(sub), restored)


def window_operator(name: str, schema: pa.Schema, keys: List[str], window, time: Optional[str],
                    aggs: Aggs, max_state_bytes: int,
                    allowed_lateness_ns: int = 0, backend=None) -> WindowOperator:
    """The operator for window spec ``window`` (anything with a ``windower()``, see
    ``heliosdb.windows``) on event time ``time`` (None: processing time), state on
    ``backend`` (a config.StateBackend).

    Examples
    --------
    >>> import pyarrow as pa
    >>> import heliosdb as hdb
    >>> op = window_operator("w", pa.schema([("ts", pa.int64()), ("k", pa.int64())]), ["k"],
    ...                      hdb.TumblingWindow.of(10), "ts", [("n", hdb.count())], 1 << 30)
    >>> rows = op.process_batch(pa.record_batch({"ts": [1_000, 2_000, 12_000], "k": [1, 1, 2]}))
    >>> out = op.on_watermark(10_000_000_000)
    >>> out[0].to_pydict()["n"], out[-1]
    ([2], Watermark(t=10000000000))
    """
    windower = window.windower()
    clock = make_clock(schema, time, name)
    if isinstance(windower, SessionWindower):
        return SessionAggregate(name, schema, keys, window, windower, clock, aggs, max_state_bytes,
                                allowed_lateness_ns, backend)
    return WindowAggregate(name, schema, keys, window, windower, clock, aggs, max_state_bytes,
                           allowed_lateness_ns, backend)
