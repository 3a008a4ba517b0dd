"""Session windows: each key's events form sessions ``[first, last + gap)``.  The session
windower (``operators/windower.py``, a ``SessionSet`` in Cython) assigns events and merges the
sessions an event bridges; accumulators are indexed by session id.  A batch cut by watermarks
(a ``Run``) is assigned in one compiled pass.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pyarrow as pa

from ..kernels import _accum, _hashagg
from ..state import Prepared, snapshot_rows, state_from_arrow, state_to_arrow
from .base import Item, Snapshot, Watermark
from .clock import Clock
from .keyedbase import Aggs
from .keyedwindow import _I64_MAX, _I64_MIN, WindowOperator, concat_batches, concat_state, run_parts
from .windower import SessionWindower


class SessionAggregate(WindowOperator):
    """``key_by(...).window(SessionWindow.with_gap(gap), time=...).aggregate(...)``."""

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window, windower: SessionWindower,
                 clock: Clock, aggs: Aggs, max_state_bytes: int,
                 allowed_lateness_ns: int = 0, backend=None):
        super().__init__(name, schema, keys, window, clock, aggs, max_state_bytes, allowed_lateness_ns,
                         backend)
        self.windower = windower
        self.gap = windower.gap
        self.keys = _hashagg.GroupTable(self.width, 1024)    # key tuple -> key id
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

    @property
    def sessions(self):
        """The sessions (``_accum.SessionSet``) of the windower."""
        return self.windower.sessions

    def _ns(self, batch: pa.RecordBatch) -> np.ndarray:
        return self.clock.times_ns(batch, self.gap)

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
        merged_from, merged_into = self.windower.assign(kid, ts, self.keys.n_groups, late_before, sid)
        count = self.windower.n
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
        return out + self._advance_clock()

    def process_run(self, items: List[Item]) -> List[Item]:
        """Batches with the watermarks between them (a batch the watermark assigner cut), in
        one pass: keys encoded and aggregate inputs prepared once; sessions assigned, late
        rows found (each part with its own watermark) and emissions found in one kernel call
        (``_accum.session_assign_run``) and one scan at the end; accumulators updated in a
        few vectorised rounds that keep each session's operations in order.  The rows
        emitted (values bit for bit), the late rows and the updates are those of one
        ``process_batch`` / ``on_watermark`` call per item, in the same order; the
        watermarks between the parts are folded into the last one."""
        if not self.clock.takes_runs:
            return super().process_run(items)        # the wall clock is read per batch
        first, batches, bounds, after = run_parts(items)
        if not batches:
            return super().process_run(items)
        head = [] if first is None else self._fire(first)[:-1]
        batch = concat_batches(batches)
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
        keys = self.keys.gather_keys(self.windower.keys_of(sids))
        return self._batch(ev[:, 3].copy(), ev[:, 4].copy(), keys, self.partial.results(sids))

    def _close_run(self, wp: np.ndarray, base: int) -> List[Tuple[np.ndarray, pa.RecordBatch]]:
        """After the run's rows: sessions due at its watermarks that no row touched since
        (one scan), then those past their lateness are dropped, as ``_fire`` would."""
        t = int(wp[-1])
        got = []
        w = self.windower
        n = w.n
        alive, end = w.alive(), w.ends()
        if n and t > _I64_MIN:
            due = np.flatnonzero(alive & (end <= t) & (self.emitted[:n] == 0))
            if len(due):
                j = np.searchsorted(wp, end[due], side="left")
                ev = np.empty((len(due), 6), np.int64)
                ev[:, 0] = 0
                ev[:, 1] = due
                ev[:, 2] = 2 * (base + j) - 1
                ev[:, 3] = w.bounds(due)[0]
                ev[:, 4] = end[due]
                ev[:, 5] = _I64_MAX                # read after every round
                got.append((ev, self._rows_at(ev)))
                self.emitted[due] = 1
        if t > self.watermark:
            self.watermark = t
            if n:
                gone = np.flatnonzero(alive & (end <= int(self._limits(wp[-1:])[0])))
                if len(gone):
                    w.remove(gone)
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
        batch = concat_batches([b for _, b in got])
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
        start, end = self.windower.bounds(sids)
        keys = self.keys.gather_keys(self.windower.keys_of(sids))
        return self._batch(start, end, keys, self.partial.results(sids))

    def _fire(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            self.watermark = t
            n = self.windower.n
            if n:
                limit = t - self.lateness if t > _I64_MIN + self.lateness else _I64_MIN
                due, gone = self.windower.closing(t, limit, self.emitted)
                if len(due):
                    out.append(self._rows(due))
                    self.emitted[due] = 1
                if len(gone):
                    self.windower.remove(gone)
                    self.dead += len(gone)
                if self.dead > 1024 and self.dead * 2 > n:
                    self._compact()
        out.append(Watermark(t))
        return out

    def _compact(self) -> None:
        """Drop closed sessions and keys without open sessions; renumber the rest."""
        keep = self.windower.open_ids()
        live_keys = np.unique(self.windower.keys_of(keep))
        key_map = np.full(self.keys.n_groups, -1, np.int64)
        key_map[live_keys] = np.arange(len(live_keys), dtype=np.int64)
        self.keys.compact(np.ascontiguousarray(live_keys))
        self.windower.compact(keep, key_map, max(len(live_keys), 1))
        self.partial = self.partial.take(keep)
        emitted = np.zeros(max(1024, 2 * len(keep)), np.uint8)
        emitted[: len(keep)] = self.emitted[keep]
        self.emitted = emitted
        self.dead = 0

    def snapshot(self) -> Snapshot:
        """Open sessions: the key columns, ``start``, ``last``, ``emitted``, accumulators."""
        ids = self.windower.open_ids()
        cols, extra = state_to_arrow(self.partial, ids)
        t = self._key_arrays(self.keys.gather_keys(self.windower.keys_of(ids)))
        start, last = self.windower.snapshot_columns(ids)
        t.update({"start": pa.array(start), "last": pa.array(last),
                  "emitted": pa.array(self.emitted[ids].astype(np.int8))})
        t.update(cols)
        return Snapshot(concat_state([pa.table(t)], [extra], "sessions"), self._meta())

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
        sids = self.windower.restore(kid, t.column("start").to_numpy(), t.column("last").to_numpy(),
                                     self.keys.n_groups)
        restored = state_from_arrow(self.acc, t, extra)
        count = self.windower.n
        self.partial.ensure(count)
        self.partial.merge(restored, np.arange(m, dtype=np.int64), sids)
        if len(self.emitted) < count:
            grown = np.zeros(max(1024, 2 * count), np.uint8)
            grown[: len(self.emitted)] = self.emitted
            self.emitted = grown
        self.emitted[sids] = t.column("emitted").to_numpy().astype(np.uint8)

    def _state_summary(self) -> str:
        return f"{self.windower.open_count():,} open sessions of {self.keys.n_groups:,} keys"

    def state_size_bytes(self) -> int:
        return (self.keys.nbytes + self.windower.nbytes + self.partial.nbytes() + self.emitted.nbytes
                + self.encoder.nbytes() + self.acc.codec_bytes())

    def open_windows(self) -> int:
        return self.windower.open_count()
