"""Session window joins: per key, sessions over the rows of **both** sides (as Flink's window
join over the union of its inputs), ``[first, last + gap)``; when the watermark passes a
session's end, its left rows are paired with its right rows.

Rows of both sides are assigned to sessions by one session windower (``SessionSet`` in
Cython, as the session aggregate uses): a row within ``gap`` of a session of its key joins
it, a row bridging two merges them.  Each kept row remembers the session it joined; a merge
is recorded in ``redirect`` (session id -> the session it went into), which is applied to the
rows when a session closes.  Closing sessions are joined in one compiled pass: each closing
session gets a local id, right rows are grouped by it (``csr_by_key``) and left rows probe
(``hash_pairs``).  Null keys form sessions of their own but never match.  A row is late when
it joins no open session and its own session would already have closed (``t + gap`` at or
before the watermark).

Timeline (gap 5)::

    left k=1 at 0, right k=1 at 3, left k=1 at 20 | watermark 8 -> session [0, 8): (0, 3)
    the row at 20 waits in session [20, 25)
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ...kernels._join import csr_by_key, hash_pairs
from ..base import Item, Snapshot
from ..windower import SessionWindower
from .base import JoinOperator
from .keys import KeyIndex
from .store import SideRows

_NONE = np.zeros(0, np.uint8)
MIN_DEAD = 1024


class SessionWindowJoin(JoinOperator):
    """A window join on session windows (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa, heliosdb as hdb
    >>> from heliosdb.operators.join import JoinSpec, make_join
    >>> schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    >>> spec = JoinSpec("window", "k", "k", coalesce_keys=True, window=hdb.SessionWindow.with_gap(5),
    ...                 left_time="ts", right_time="ts")
    >>> op = make_join(spec, schema, schema)
    >>> op.process_side(0, pa.record_batch({"ts": [0, 20_000], "k": [1, 1]}))
    []
    >>> op.process_side(1, pa.record_batch({"ts": [3_000], "k": [1]}))
    []
    >>> out = op.on_watermark(8_000_000_000)
    >>> out[0].to_pydict()["ts"], out[0].to_pydict()["ts_right"], op.open_windows()
    ([0], [3000], 1)
    """

    def __init__(self, spec, left_schema, right_schema, name="join", max_state_bytes=None, backend=None):
        super().__init__(spec, left_schema, right_schema, name, max_state_bytes, backend)
        self.gap = spec.windower().gap
        #: The sessions: made with the first row, and anew once the state has emptied.
        self.windower: Optional[SessionWindower] = None
        self.index: Optional[KeyIndex] = None
        self.sides = [SideRows(self._chunks(s), ("t", "sid")) for s in (0, 1)]
        self.redirect = np.empty(0, np.int64)              # session id -> where it went

    # -- per batch -------------------------------------------------------------------------------
    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        n = batch.num_rows
        if not n:
            return []
        t = self._times(side, batch, self.gap)
        if self.index is None:
            self.index = KeyIndex(self.keys, with_nulls=True)
            self.windower = self.spec.windower()
        kid = self.index.ids(side, batch)
        sid = np.empty(n, np.int64)
        mfrom, minto = self.windower.assign(kid, t, self.index.n_keys, self.watermark, sid)
        self._follow(mfrom, minto)
        late = sid < 0
        out: List[Item] = []
        if late.any():
            out = self._late(side, batch.filter(pa.array(late)))
            keep = ~late
            batch, t, sid = batch.filter(pa.array(keep)), t[keep], sid[keep]
        if batch.num_rows:
            self.sides[side].append(batch, t=t, sid=sid)
        self._check_memory()
        return out

    def _follow(self, mfrom: np.ndarray, minto: np.ndarray) -> None:
        """New session ids point to themselves; merged ones to their final survivor."""
        n, r = self.windower.n, self.redirect
        if len(r) < n:
            grown = np.arange(max(n, 2 * len(r), 1024), dtype=np.int64)
            grown[: len(r)] = r
            self.redirect = r = grown
        if len(mfrom):
            r[mfrom] = minto
            while True:                 # chains of merges: follow them to their end
                nxt = r[r]
                if np.array_equal(nxt, r):
                    break
                r[:] = nxt

    def _sessions_of(self, side: int) -> np.ndarray:
        """The current session of each row of ``side`` (and stored as such)."""
        s = self.sides[side]
        sid = s.a("sid")
        sid[:] = self.redirect[sid]
        return sid

    # -- closing sessions ------------------------------------------------------------------------
    def _advance(self, before: int, t: int) -> List[Item]:
        w = self.windower
        if w is None or not w.n:
            return []
        n = w.n
        due, _ = w.closing(t, t, np.zeros(n, np.uint8))
        if not len(due):
            return []
        out = self._join(due)
        w.remove(due)
        for s in (0, 1):
            sid = self.sides[s].a("sid")
            if len(sid):
                closed = np.zeros(n, bool)
                closed[due] = True
                self.sides[s].kill(np.flatnonzero(closed[sid] & (self.sides[s].a("alive") == 1)))
        self._maybe_compact()
        return out

    def _join(self, due: np.ndarray) -> List[Item]:
        """Output rows of the closing sessions ``due``."""
        spec, w = self.spec, self.windower
        start, end = w.bounds(due)
        null_key = self.index.null_ids()[w.keys_of(due)]
        loc = np.full(w.n, -1, np.int64)
        loc[due] = np.arange(len(due), dtype=np.int64)
        rows: List[np.ndarray] = []
        local: List[np.ndarray] = []
        for side in (0, 1):
            sl = loc[self._sessions_of(side)]
            sl[self.sides[side].a("alive") == 0] = -1
            idx = np.flatnonzero(sl >= 0)
            rows.append(idx)
            local.append(sl[idx])
        match = [np.where(null_key[lc], -1, lc) for lc in local]
        off, build = csr_by_key(match[1], len(due))
        pm = np.zeros(len(rows[0]), np.uint8) if spec.outer_left else _NONE
        bm = np.zeros(len(rows[1]), np.uint8) if spec.outer_right else _NONE
        li, ri = hash_pairs(match[0], off, build, pm, bm)
        L, R = self.sides[0].rows, self.sides[1].rows
        out: List[Item] = []
        if len(li):
            s = local[0][li]
            out += self._emit(L, rows[0][li], R, rows[1][ri], start[s], end[s])
        if spec.outer_left:
            j = np.flatnonzero(pm == 0)
            if len(j):
                s = local[0][j]
                out += self._emit(L, rows[0][j], None, None, start[s], end[s])
        if spec.outer_right:
            j = np.flatnonzero(bm == 0)
            if len(j):
                s = local[1][j]
                out += self._emit(None, None, R, rows[1][j], start[s], end[s])
        return out

    # -- state -----------------------------------------------------------------------------------
    def _maybe_compact(self) -> None:
        live = sum(s.live for s in self.sides)
        if not live:
            if self.index is not None:
                self._clear()
            return
        dead = sum(s.dead for s in self.sides)
        dead_sessions = self.windower.n - self.windower.open_count()
        if (dead >= MIN_DEAD and dead > live) or (dead_sessions >= MIN_DEAD and dead_sessions > live):
            parts = self._live_parts()
            self._clear()
            self._load(parts)

    def _clear(self) -> None:
        for s in self.sides:
            s.clear()
        self.index = None
        self.windower = None
        self.redirect = np.empty(0, np.int64)

    def _live_parts(self) -> List[Optional[Tuple[pa.RecordBatch, np.ndarray, np.ndarray]]]:
        """Each side's live rows with their session's ``(start, last)``."""
        if self.index is None:
            return [None, None]
        ss = self.windower.sessions
        parts = []
        for side in (0, 1):
            s = self.sides[side]
            idx = s.alive_rows()
            if not len(idx):
                parts.append(None)
                continue
            sid = self._sessions_of(side)[idx]
            parts.append((s.rows.take(idx), np.asarray(ss.start)[sid], np.asarray(ss.last)[sid]))
        return parts

    def _load(self, parts: List[Optional[Tuple[pa.RecordBatch, np.ndarray, np.ndarray]]]) -> None:
        """Add rows of both sides with their sessions' ``(start, last)``: sessions are
        re-created from them (by key and start) and the rows join them."""
        if self.index is None:
            self.index = KeyIndex(self.keys, with_nulls=True)
            self.windower = self.spec.windower()
        kids = [None if p is None else self.index.ids(side, p[0]) for side, p in enumerate(parts)]
        have = [i for i, p in enumerate(parts) if p is not None]
        if not have:
            return
        kid = np.concatenate([kids[i] for i in have])
        start = np.concatenate([parts[i][1] for i in have])
        last = np.concatenate([parts[i][2] for i in have])
        pairs, first, inv = np.unique(np.stack([kid, start]), axis=1, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        # A session's last event is the latest over its rows (sides may carry different ones).
        top = np.full(pairs.shape[1], np.iinfo(np.int64).min, np.int64)
        np.maximum.at(top, inv, last)
        sids = self.windower.restore(np.ascontiguousarray(pairs[0]), np.ascontiguousarray(pairs[1]), top,
                                     self.index.n_keys)
        self._follow(np.empty(0, np.int64), np.empty(0, np.int64))
        at = 0
        for i in have:
            rows = parts[i][0]
            m = rows.num_rows
            self.sides[i].append(rows, t=self._times(i, rows, self.gap), sid=sids[inv[at: at + m]])
            at += m

    def _release(self) -> None:
        self._clear()
        for s in self.sides:
            s.close()
        self.redirect = np.empty(0, np.int64)
        super()._release()

    def state_size_bytes(self) -> int:
        held = sum(s.nbytes() for s in self.sides) + self.redirect.nbytes
        index = self.index           # read once: metrics read it while the join's thread clears it
        if index is not None:
            held += self.windower.nbytes + index.nbytes()
        return held

    def open_windows(self) -> int:
        return 0 if self.index is None else self.windower.open_count()

    def _state_summary(self) -> str:
        return (f"{self.sides[0].live:,} left and {self.sides[1].live:,} right rows in "
                f"{self.open_windows():,} open sessions")

    # -- snapshots ---------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Each side's rows with their session's ``__start`` and ``__last``."""
        tables = {}
        for side, part in enumerate(self._live_parts()):
            if part is not None:
                rows, start, last = part
                tables[("left", "right")[side]] = self._rows_table(side, rows, {"start": start, "last": last})
        return Snapshot(tables, self._meta())

    def restore(self, tables, metas, select=None, first=True, owned=False) -> None:
        self._restore_meta(metas, first)
        parts = []
        for side, name in enumerate(("left", "right")):
            got = self._restored(tables, name, side, select, ("start", "last"))
            parts.append(None if got is None else (got[0], got[1]["start"].astype(np.int64),
                                                   got[1]["last"].astype(np.int64)))
        self._load(parts)
