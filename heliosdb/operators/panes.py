"""Pane stores: the partial aggregates of a window operator's open panes.

A pane (``operators/windower.py``) holds the accumulators (``state.MemoryGroupState``: arrays
indexed by dense group id, with update and merge) of the keys whose rows fell in it; a window
is emitted by merging its panes.  Two stores, chosen by the windower:

- :class:`PaneTables` (a window is one pane: tumbling): each pane has its own key table
  (``_hashagg.GroupTable``), so a pane's keys go with it; emitting a window reads one pane.
- :class:`SharedKeyPanes` (windows of several panes: sliding, cumulative): one key table for
  the operator, and every pane's arrays are indexed by it, so a key has the same group id in
  every pane and a window's panes merge element by element (vectorised, no hashing).  Keys no
  open pane holds are dropped from the table now and then.

Both also hand a replica's panes over for two-phase aggregation (``operators/preagg.py``):
``pre_add`` / ``hand_over`` on the replica, ``merge`` on the final window.

Calls per batch, in order: ``reserve(n)``; per part of the batch ``begin_part`` (its key
columns), then per run of rows in one pane ``add`` (and ``updated`` when the rows update an
emitted window).  Group ids of a part's rows live in the store's scratch array between those
calls.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..kernels import _hashagg
from ..state import AccPlan, MemoryGroupState, Prepared
from .windower import PaneWindower

#: A window's rows: (key tuples, aggregate columns).
Rows = Tuple[np.ndarray, List[pa.Array]]


class PanePart:
    """What a replica made of one pane's rows of a batch: its state (``pane``: key table and
    accumulators, :class:`PaneTables`), each run of rows as (group ids in that table, prepared
    values), and the keys decoded (``keys``) when codes do not carry over (string keys)."""

    __slots__ = ("start", "pane", "runs", "keys")

    def __init__(self, start: int, pane, runs: list, keys: Optional[pa.Table]):
        self.start, self.pane, self.runs, self.keys = start, pane, runs, keys


def _release(state) -> None:
    """A dropped pane's state: on-disk state (RocksDB) deletes its rows; memory needs nothing."""
    state.drop()


def shifted(p: Prepared, base: int) -> Prepared:
    """A replica's prepared rows with the window's arrival numbers (first/last)."""
    if base and p.seqs is not None:
        p.seqs = p.seqs + base
    return p


def shift_seqs(part: MemoryGroupState, base: int) -> None:
    """Arrival numbers of a replica's first/last values (from 0 in its batch) -> the window's."""
    part.shift_seqs(base)


class PaneStore:
    """The interface both stores implement (see the module docstring)."""

    def __init__(self, acc: AccPlan, width: int, windower: PaneWindower):
        self.acc = acc
        self.windower = windower
        self.width = width
        self.panes: Dict[int, object] = {}
        self._gids = np.empty(0, np.int64)

    def reserve(self, n: int) -> None:
        """Scratch for the group ids of a batch of ``n`` rows."""
        if len(self._gids) < n:
            self._gids = np.empty(max(n, 2 * len(self._gids)), np.int64)

    def begin_part(self, cols: List[np.ndarray], s0: int, s1: int) -> None:
        """Rows ``s0:s1`` (whose key columns are ``cols``) are next."""

    def add(self, start: int, cols: List[np.ndarray], p: Prepared, b0: int, b1: int) -> None:
        """Fold rows ``b0:b1`` (key columns ``cols``, prepared values ``p``) into pane ``start``."""
        raise NotImplementedError

    def updated(self, b0: int, b1: int) -> np.ndarray:
        """What identifies the keys of rows ``b0:b1`` for an update of their pane's windows
        (asked right after ``add``)."""
        raise NotImplementedError

    def window(self, w: int) -> Optional[Rows]:
        """The rows of window ``w`` (its panes merged), or None when it holds nothing."""
        raise NotImplementedError

    def window_update(self, w: int, only: np.ndarray) -> Optional[Rows]:
        """The rows of window ``w`` for the keys ``only`` (from ``updated``) alone, in group
        order, as the whole window would list them."""
        raise NotImplementedError

    def drop(self, start: int, touched: Optional[Dict[int, List[np.ndarray]]]) -> None:
        """Pane ``start`` is needed no more; ``touched`` holds pending updates' keys (as
        ``updated`` gave them), renumbered if the store renumbers keys."""
        raise NotImplementedError

    def pane_groups(self, start: int) -> Tuple[np.ndarray, np.ndarray, object]:
        """(group ids, key tuples, accumulators) of pane ``start``'s groups, for snapshots."""
        raise NotImplementedError

    def restore_pane(self, start: int, codes: List[np.ndarray], restored: MemoryGroupState) -> None:
        """Merge a snapshot's groups (key codes ``codes``) into pane ``start``."""
        raise NotImplementedError

    def widen(self) -> None:
        """Key tuples gain a null word."""
        raise NotImplementedError

    def nbytes(self) -> int:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    # -- two-phase aggregation ---------------------------------------------------------------
    def reset(self) -> None:
        """A replica starts a batch from empty panes."""
        self.panes = {}

    def pre_add(self, start: int, cols: List[np.ndarray], p: Prepared, b0: int, b1: int) -> np.ndarray:
        """As a replica: fold rows ``b0:b1`` as ``add`` would; returns their group ids."""
        raise NotImplementedError

    def hand_over(self, pre, runs: Dict[int, list], key_table: Callable[[np.ndarray], pa.Table]) -> None:
        """As a replica: put the batch's panes and runs into ``pre`` (``preagg.PanePartials``)
        and start afresh; ``key_table`` decodes key tuples (keys that do not carry over)."""
        raise NotImplementedError

    def merge(self, pre, base: int, codes_of: Callable, nulls: bool) -> None:
        """As the final window: merge a replica's partials ``pre`` whose rows are numbered
        from ``base``; ``codes_of(pre, keys)`` gives this window's codes of its keys."""
        raise NotImplementedError


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


class PaneTables(PaneStore):
    """A key table per pane; each window is one pane (tumbling windows)."""

    def __init__(self, acc: AccPlan, width: int, windower: PaneWindower):
        super().__init__(acc, width, windower)
        self._capacity_hint = 1024

    def _pane(self, start: int, width: int) -> _Pane:
        pane = self.panes.get(start)
        if pane is None:
            pane = self.panes[start] = _Pane(width, self.acc, self._capacity_hint)
        return pane

    def add(self, start, cols, p, b0, b1):
        self._pane(start, len(cols)).add([c[b0:b1] for c in cols], p, self._gids[: b1 - b0])

    def updated(self, b0, b1):
        return self._gids[: b1 - b0].copy()          # group ids in the pane (= the window)

    def window(self, w):
        pane = self.panes.get(w)
        if pane is None or not pane.table.n_groups:
            return None
        return pane.table.keys_view()[: pane.table.n_groups], pane.partial.results(None)

    def window_update(self, w, only):
        pane = self.panes[w]
        ids = np.unique(only)
        return pane.table.gather_keys(ids), pane.partial.results(ids)

    def drop(self, start, touched):
        pane = self.panes.pop(start)
        self._capacity_hint = max(1024, pane.table.n_groups)
        _release(pane.partial)

    def pane_groups(self, start):
        pane = self.panes[start]
        n = pane.table.n_groups
        return np.arange(n, dtype=np.int64), pane.table.keys_view()[:n], pane.partial

    def restore_pane(self, start, codes, restored):
        pane = self._pane(start, len(codes))
        m = len(codes[0])
        gids = np.empty(m, np.int64)
        pane.table.insert(codes, gids)
        pane.partial.ensure(pane.table.n_groups)
        pane.partial.merge(restored, np.arange(m, dtype=np.int64), gids)

    def widen(self):
        for pane in self.panes.values():
            pane.table = pane.table.widen(0)

    def nbytes(self):
        # list() copies in one step: a metrics reader on another thread never iterates the dict
        # while the window thread changes it.
        return sum(p.nbytes() for p in list(self.panes.values()))

    def summary(self):
        groups = sum(p.table.n_groups for p in self.panes.values())
        return f"{groups:,} groups in {len(self.panes)} panes"

    def pre_add(self, start, cols, p, b0, b1):
        self.add(start, cols, p, b0, b1)
        return self._gids[: b1 - b0].copy()

    def hand_over(self, pre, runs, key_table):
        pre.parts = []
        for start, pane in self.panes.items():
            n = pane.table.n_groups
            self._capacity_hint = max(self._capacity_hint, n)
            keys = None if pre.direct else key_table(pane.table.keys_view()[:n])
            pre.parts.append(PanePart(start, pane, runs[start], keys))
        self.panes = {}

    def merge(self, pre, base, codes_of, nulls):
        memory = self.acc.backend is None or self.acc.backend.kind == "memory"
        for part in pre.parts:
            if part.start not in self.panes and memory and pre.direct and pre.nulls == nulls:
                # A new pane: the replica summed the same rows in the same order from empty.
                shift_seqs(part.pane.partial, base)
                part.pane.partial.plan = self.acc
                self.panes[part.start] = part.pane
                continue
            codes = codes_of(pre, part.pane.table if pre.direct else part.keys)
            pane = self._pane(part.start, len(codes))
            to = np.empty(len(codes[0]), np.int64)
            pane.table.insert(codes, to)
            pane.partial.ensure(pane.table.n_groups)
            for gids, p in part.runs:
                pane.partial.update(np.ascontiguousarray(to[gids]), shifted(p, base))


class SharedKeyPanes(PaneStore):
    """One key table, panes of arrays indexed by it (windows of several panes)."""

    def __init__(self, acc: AccPlan, width: int, windower: PaneWindower):
        super().__init__(acc, width, windower)
        self.table = _hashagg.GroupTable(width, 1024)
        self._drops = 0                  # panes dropped since the last look for dead keys

    def _pane(self, start: int):
        pane = self.panes.get(start)
        if pane is None:
            pane = self.panes[start] = self.acc.new_state(max(self.table.n_groups, 1024), rows=True)
        return pane

    def begin_part(self, cols, s0, s1):
        self.table.insert(cols, self._gids[s0:s1])

    def add(self, start, cols, p, b0, b1):
        pane = self._pane(start)
        pane.ensure(self.table.n_groups)
        pane.update(self._gids[b0:b1], p)

    def updated(self, b0, b1):
        return self._gids[b0:b1].copy()             # group ids in the operator-wide table

    def _panes_of(self, w: int) -> list:
        return [self.panes[p] for p in self.windower.panes_of(w) if p in self.panes]

    def window(self, w):
        panes = self._panes_of(w)
        if not panes:
            return None
        acc = MemoryGroupState(self.acc, self.table.n_groups, rows=True)
        acc.ensure(max(p.n for p in panes))
        for p in panes:
            acc.merge_aligned(p)
        ids = np.flatnonzero(acc.counts[: acc.n])
        if not len(ids):
            return None
        return self.table.gather_keys(np.ascontiguousarray(ids, np.int64)), acc.results(ids)

    def window_update(self, w, only):
        """The window's panes merged for those groups only (its other keys are not touched)."""
        ids = np.unique(only)
        panes = self._panes_of(w)
        if not panes:
            return None
        acc = MemoryGroupState(self.acc, len(ids), rows=True)
        acc.ensure(len(ids))
        dst = np.arange(len(ids), dtype=np.int64)
        for p in panes:              # in pane order, as the whole window merges them
            sel = ids < p.n
            if sel.any():
                acc.merge(p, ids[sel], dst[sel])
        keep = np.flatnonzero(acc.counts[: len(ids)])
        if not len(keep):
            return None
        return self.table.gather_keys(np.ascontiguousarray(ids[keep], np.int64)), acc.results(keep)

    def drop(self, start, touched):
        # Keys no open pane holds any more are dropped from the table now and then.
        pane = self.panes.pop(start)
        n = self.table.n_groups
        _release(pane)
        self._drops += 1
        # Looked at once per window's worth of dropped panes: by then a key in no open pane
        # has been gone a whole window.
        if n < 4096 or not self.panes or self._drops < self.windower.panes_per_window:
            return
        self._drops = 0
        live = np.zeros(n, bool)
        for p in self.panes.values():
            live[: p.n] |= p.counts[: p.n] > 0
        keep = np.flatnonzero(live).astype(np.int64)
        if 2 * len(keep) > n:
            return
        self.table.compact(keep)
        for s, p in list(self.panes.items()):
            self.panes[s] = p.take(keep[keep < p.n]) if p.n else p
        if touched:                    # group ids of pending updates, renumbered
            remap = np.full(n, -1, np.int64)
            remap[keep] = np.arange(len(keep), dtype=np.int64)
            for s, ids in touched.items():
                ids = remap[np.concatenate(ids)]
                touched[s] = [ids[ids >= 0]]

    def pane_groups(self, start):
        pane = self.panes[start]
        ids = np.flatnonzero(pane.counts[: pane.n]).astype(np.int64)
        return ids, self.table.gather_keys(ids), pane

    def restore_pane(self, start, codes, restored):
        m = len(codes[0])
        gids = np.empty(m, np.int64)
        self.table.insert(codes, gids)
        pane = self._pane(start)
        pane.ensure(self.table.n_groups)
        pane.merge(restored, np.arange(m, dtype=np.int64), gids)

    def widen(self):
        self.table = self.table.widen(0)

    def nbytes(self):
        return self.table.nbytes + sum(p.nbytes() for p in list(self.panes.values()))

    def summary(self):
        return f"{self.table.n_groups:,} keys in {len(self.panes)} panes"

    def reset(self):
        self.panes = {}
        if self.table.n_groups:
            self.table = _hashagg.GroupTable(self.table.width, max(1024, self.table.n_groups))

    def pre_add(self, start, cols, p, b0, b1):
        return self._gids[b0:b1].copy()     # a replica hands over rows, never its panes

    def hand_over(self, pre, runs, key_table):
        n = self.table.n_groups
        pre.keys = self.table if pre.direct else key_table(self.table.keys_view()[:n])
        pre.parts = [PanePart(start, None, r, None) for start, r in runs.items()]
        self.table = _hashagg.GroupTable(self.table.width, max(1024, n))

    def merge(self, pre, base, codes_of, nulls):
        # The batch's keys first, in arrival order (as its rows would insert them).
        codes = codes_of(pre, pre.keys)
        to = np.empty(len(codes[0]), np.int64)
        self.table.insert(codes, to)
        for part in pre.parts:
            pane = self._pane(part.start)
            pane.ensure(self.table.n_groups)
            for gids, p in part.runs:
                pane.update(np.ascontiguousarray(to[gids]), shifted(p, base))


def pane_store(acc: AccPlan, width: int, windower: PaneWindower) -> PaneStore:
    """The store for ``windower``'s windows: a key table per pane when a window is one pane."""
    return (PaneTables if windower.pane_is_window else SharedKeyPanes)(acc, width, windower)
