"""Window joins over windows made of panes (tumbling, sliding, cumulative, ...): rows of both
sides with equal keys in the same window.  Session windows are in ``join/session.py``.

Each side's rows wait in their pane (``state.rows``, Arrow): a batch is cut into runs of one
pane (``Clock.pane_runs``; ordered input gives a few zero-copy slices, disordered input is put
in pane order first).  When the watermark passes a window's end, its panes' rows are
gathered, both sides' keys are coded with string tables made for this window alone (so no key
table outlives its window), and one compiled hash join (``kernels._join.hash_join``: build on
the right rows, probe with the left) gives the pairs, then one ``take`` per side.  A slice
keeps its input batch's buffers: a batch cut at a pane boundary is freed when its last pane
goes (the state size counts the rows held).  An outer join emits the rows of the window that found
no partner, padded with nulls.  A pane goes once the last window holding it has closed.

A row is late when every window holding it has closed (the window aggregation's rule); a row
for a pane whose earlier windows have closed still joins in its later ones.

Timeline (tumbling 10)::

    left k=1 at 3, right k=1 at 7, right k=2 at 12 | watermark 10 -> [0, 10): (1, 3, 7)
    a left row at 8 arriving now is late: its only window has closed
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

from ...kernels._join import hash_join
from ..base import Item, Snapshot
from ..windower import PaneWindower
from .base import JoinOperator
from .keys import KeyCodes

_NONE = np.zeros(0, np.uint8)
_I64_MAX = np.iinfo(np.int64).max


class PaneWindowJoin(JoinOperator):
    """A window join on a :class:`PaneWindower` (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa, heliosdb as hdb
    >>> from heliosdb.operators.join import JoinSpec, make_join
    >>> schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    >>> spec = JoinSpec("window", "k", "k", how="left", coalesce_keys=True,
    ...                 window=hdb.TumblingWindow.of(10), left_time="ts", right_time="ts")
    >>> op = make_join(spec, schema, schema)
    >>> op.process_side(0, pa.record_batch({"ts": [3_000, 4_000], "k": [1, 2]}))
    []
    >>> op.process_side(1, pa.record_batch({"ts": [7_000], "k": [1]}))
    []
    >>> out = op.on_watermark(10_000_000_000)
    >>> out[0].to_pydict()["k"], out[0].to_pydict()["ts_right"], out[1].to_pydict()["ts_right"]
    ([1], [7000], [None])
    """

    def __init__(self, spec, left_schema, right_schema, name="join", max_state_bytes=None, backend=None):
        super().__init__(spec, left_schema, right_schema, name, max_state_bytes, backend)
        self.windower: PaneWindower = spec.windower()
        self.pane_ns = self.windower.pane_ns
        self.panes: List[Dict[int, object]] = [{}, {}]       # side -> pane start -> RowChunks

    # -- per batch -------------------------------------------------------------------------------
    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        n = batch.num_rows
        if not n:
            return []
        w = self.windower
        # Runs of rows in the same pane (ordered input: a few slices, no copy; else the rows
        # are put in pane order first, stably).
        runs, order, ts = self.clocks[side].pane_runs(batch, [0, n], self.pane_ns)
        if order is not None:
            batch = batch.take(pa.array(order))
        bounds, starts = runs[0]
        late: List[pa.RecordBatch] = []
        for j, p in enumerate(starts.tolist()):
            b0, b1 = int(bounds[j]), int(bounds[j + 1])
            end = w.last_end(p)
            if end > _I64_MAX:
                raise self.clocks[side].bad_time(ts, b0 if order is None else int(order[b0]))
            rows = batch if b1 - b0 == n else batch.slice(b0, b1 - b0)
            if end <= self.watermark:
                late.append(rows)
            else:
                self._store(side, p, rows)
        self._check_memory()
        if not late:
            return []
        return self._late(side, late[0] if len(late) == 1 else pa.concat_batches(late))

    def _store(self, side: int, pane: int, rows: pa.RecordBatch) -> None:
        chunks = self.panes[side].get(pane)
        if chunks is None:
            chunks = self.panes[side][pane] = self._chunks(side)
        chunks.append(rows)

    # -- windows ---------------------------------------------------------------------------------
    def _advance(self, before: int, t: int) -> List[Item]:
        w = self.windower
        panes = set(self.panes[0]) | set(self.panes[1])
        if not panes:
            return []
        out: List[Item] = []
        for win in w.due(panes, before, t):
            out += self._fire(win)
        for p in panes:
            if w.last_end(p) <= t:
                for side in (0, 1):
                    chunks = self.panes[side].pop(p, None)
                    if chunks is not None:
                        chunks.close()
        return out

    def _rows(self, side: int, start: int, end: int) -> Optional[pa.RecordBatch]:
        """The rows of ``side`` in the panes of window ``[start, end)``, as one batch."""
        parts = [c.all() for p, c in sorted(self.panes[side].items()) if start <= p < end]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else pa.concat_batches(parts)

    def _fire(self, win: int) -> List[Item]:
        """The output rows of window ``win``."""
        spec, w = self.spec, self.windower
        start, end = w.start(win), w.end(win)
        left, right = self._rows(0, start, end), self._rows(1, start, end)
        if left is None and right is None:
            return []
        if left is None or right is None:
            if left is not None and spec.outer_left:
                return self._emit(left, np.arange(left.num_rows), None, None, start, end)
            if right is not None and spec.outer_right:
                return self._emit(None, None, right, np.arange(right.num_rows), start, end)
            return []
        codes = KeyCodes(self.keys)
        kr, nr = codes.codes(1, right)
        kl, nl = codes.codes(0, left)
        pm = np.zeros(left.num_rows, np.uint8) if spec.outer_left else _NONE
        bm = np.zeros(right.num_rows, np.uint8) if spec.outer_right else _NONE
        li, ri = hash_join(kr, None if nr is None else (~nr).view(np.uint8), kl,
                           None if nl is None else (~nl).view(np.uint8), pm, bm)
        out: List[Item] = self._emit(left, li, right, ri, start, end) if len(li) else []
        if spec.outer_left:
            lonely = np.flatnonzero(pm == 0)
            if len(lonely):
                out += self._emit(left, lonely, None, None, start, end)
        if spec.outer_right:
            lonely = np.flatnonzero(bm == 0)
            if len(lonely):
                out += self._emit(None, None, right, lonely, start, end)
        return out

    # -- state -----------------------------------------------------------------------------------
    def _release(self) -> None:
        for side in (0, 1):
            for chunks in self.panes[side].values():
                chunks.close()
            self.panes[side] = {}
        super()._release()

    def state_size_bytes(self) -> int:
        # list() copies in one step: a metrics reader on another thread never iterates a dict
        # while the join's thread changes it.
        return sum(c.nbytes() for side in (0, 1) for c in list(self.panes[side].values()))

    def open_windows(self) -> int:
        return len(set(list(self.panes[0])) | set(list(self.panes[1])))

    def _state_summary(self) -> str:
        rows = [sum(c.n for c in self.panes[s].values()) for s in (0, 1)]
        return f"{rows[0]:,} left and {rows[1]:,} right rows in {self.open_windows():,} panes"

    # -- snapshots ---------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Each side's rows with their ``__pane``."""
        tables = {}
        for side, name in enumerate(("left", "right")):
            parts = [(p, c.all()) for p, c in sorted(self.panes[side].items()) if c.n]
            if not parts:
                continue
            rows = pa.concat_batches([b for _, b in parts])
            pane = np.concatenate([np.full(b.num_rows, p, np.int64) for p, b in parts])
            tables[name] = self._rows_table(side, rows, {"pane": pane})
        return Snapshot(tables, self._meta())

    def restore(self, tables, metas, select=None, first=True, owned=False) -> None:
        self._restore_meta(metas, first)
        for side, name in enumerate(("left", "right")):
            got = self._restored(tables, name, side, select, ("pane",))
            if got is None:
                continue
            rows, extra = got
            pane = extra["pane"]
            for p in np.unique(pane).tolist():
                self._store(side, int(p), rows.filter(pa.array(pane == p)))
