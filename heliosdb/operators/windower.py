"""Windowers: which windows a row belongs to, and which windows a watermark closes.

A window spec (``heliosdb.windows``) builds its windower; the window operator asks it, and
never which kind of window it runs.  Two families:

- :class:`PaneWindower` (tumbling, sliding, cumulative, ...): time is cut into *panes* of
  ``pane_ns``; a row is aggregated once, into its pane (``operators/panes.py``), and a window
  is a range of consecutive panes, merged when it is emitted.  A window is named by an int
  *window id*, a multiple of ``id_step``, that ends at ``id + end_offset`` (tumbling and
  sliding: the id is the start; cumulative: the end).  A subclass says which windows hold a
  pane (``first_window``/``last_window``) and where a window starts (``start``); the rest
  (the windows a watermark closes, the panes of a window, when a pane is no longer needed)
  follows here by arithmetic.
- :class:`SessionWindower`: sessions of each key, ``[first, last + gap)``, merged when an
  event bridges two (``kernels/_accum.pyx``: ``SessionSet``).

Timeline of sliding windows (size 10, slide 5: panes of 5)::

    panes      [0,5) [5,10) [10,15)
    windows    [0,10) = panes 0, 5      [5,15) = panes 5, 10
    watermark 10 closes the window with id 0; pane 0 is dropped at 10 + allowed lateness
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import numpy as np

from ..kernels import _accum


class Windower:
    """What every windower declares (see the module docstring).

    Examples
    --------
    >>> Windower().grid(0) is None, Windower.two_phase
    (True, False)
    """

    #: Whether replicas may pre-aggregate batches for one final merge (two-phase; only
    #: windows that do not depend on other batches' rows of the same key, i.e. not sessions).
    two_phase = False

    def grid(self, lateness_ns: int) -> Optional[Tuple[int, int, int]]:
        """The watermark values that change what this windower does, for the watermark step
        (``kernels.window.window_grid``): ``(end_offset, period, lateness)`` when windows end
        at ``end_offset + k * period``, or None when every value may (sessions)."""
        return None


class PaneWindower(Windower):
    """Windows made of consecutive panes of ``pane_ns`` (see the module docstring).

    Examples
    --------
    A sliding windower (size 10, slide 5), spelled out::

    >>> class Sliding(PaneWindower):
    ...     def first_window(self, pane): return pane - 10 + 5
    ...     def last_window(self, pane): return pane
    ...     def start(self, w): return w
    >>> w = Sliding(pane_ns=5, id_step=5, end_offset=10, panes_per_window=2)
    >>> list(w.windows_of(5)), list(w.panes_of(0)), w.last_end(5)
    ([0, 5], [0, 5], 15)
    >>> w.due([0, 5, 10], before=0, t=15), w.grid(3)      # windows ending in (0, 15]
    ([-5, 0, 5], (10, 5, 3))
    """

    two_phase = True
    #: Whether each window is exactly one pane (tumbling): then each pane can keep its own
    #: key table, and a pane's keys go when it does.
    pane_is_window = False

    def __init__(self, pane_ns: int, id_step: int, end_offset: int, panes_per_window: int):
        self.pane_ns = pane_ns
        self.id_step = id_step
        self.end_offset = end_offset
        self.panes_per_window = panes_per_window

    # -- what a subclass says ----------------------------------------------------------------
    def first_window(self, pane: int) -> int:
        """Id of the first window holding ``pane`` (a pane start)."""
        raise NotImplementedError

    def last_window(self, pane: int) -> int:
        """Id of the last window holding ``pane``."""
        raise NotImplementedError

    def start(self, w: int) -> int:
        """Start (ns) of window ``w``."""
        raise NotImplementedError

    # -- what follows ------------------------------------------------------------------------
    def end(self, w: int) -> int:
        """End (ns, exclusive) of window ``w``."""
        return w + self.end_offset

    def windows_of(self, pane: int) -> range:
        """Ids of the windows holding ``pane``, in emission order."""
        return range(self.first_window(pane), self.last_window(pane) + 1, self.id_step)

    def panes_of(self, w: int) -> range:
        """Starts of the panes of window ``w``, in order."""
        return range(self.start(w), self.end(w), self.pane_ns)

    def last_end(self, pane: int) -> int:
        """The end of the last window holding ``pane``: past it (and the allowed lateness) the
        pane is needed by no window, and a row for it is late."""
        return self.last_window(pane) + self.end_offset

    def due(self, panes: Iterable[int], before: int, t: int) -> List[int]:
        """Ids of the windows holding one of ``panes`` whose end the watermark passed moving
        from ``before`` to ``t`` (end in (before, t]), in order.  One step per pane, not one
        per pane and window (a day-long window sliding by the minute holds 1,440 panes, each
        in 1,440 windows)."""
        off, step = self.end_offset, self.id_step
        lo, hi = before - off + 1, t - off
        due = set()
        for p in panes:
            a, b = max(self.first_window(p), lo), min(self.last_window(p), hi)
            if a <= b:
                r = a % step
                due.update(range(a if r == 0 else a + step - r, b + 1, step))
        return sorted(due)

    def grid(self, lateness_ns: int) -> Optional[Tuple[int, int, int]]:
        return self.end_offset, self.id_step, lateness_ns


class SessionWindower(Windower):
    """Per-key sessions ``[first, last + gap)``; an event within ``gap`` of two sessions of
    its key merges them.  Holds the sessions (a ``SessionSet``, whose ids index the session
    operator's accumulators).

    Examples
    --------
    >>> import numpy as np
    >>> w = SessionWindower(10)
    >>> sid = np.empty(3, np.int64)
    >>> _ = w.assign(np.zeros(3, np.int64), np.array([0, 5, 30], np.int64), 1, -2**63, sid)
    >>> sid.tolist(), w.open_count()
    ([0, 0, 1], 2)
    >>> [a.tolist() for a in w.bounds(np.array([0, 1]))]
    [[0, 30], [15, 40]]
    >>> [a.tolist() for a in w.closing(20, 20, np.zeros(2, np.uint8))]     # [0, 15) closes
    [[0], [0]]
    """

    def __init__(self, gap_ns: int):
        self.gap = gap_ns
        self.sessions = _accum.SessionSet(gap_ns)

    @property
    def n(self) -> int:
        """Session ids handed out so far (open or not)."""
        return self.sessions.n

    def assign(self, kid: np.ndarray, ts: np.ndarray, n_keys: int, late_before: int,
               sid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Rows (key id, time ns) -> their session ids in ``sid`` (-1: late); returns the
        merges ``(from, into)`` the rows caused, in order."""
        return self.sessions.assign(kid, ts, n_keys, late_before, sid)

    def alive(self) -> np.ndarray:
        """Per session id: whether it is open (bool)."""
        ss = self.sessions
        return np.asarray(ss.alive)[: ss.n].astype(bool)

    def ends(self) -> np.ndarray:
        """Per session id: its end, last event + gap."""
        ss = self.sessions
        return np.asarray(ss.last)[: ss.n] + self.gap

    def bounds(self, sids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(start, end) of sessions ``sids``."""
        ss = self.sessions
        return np.asarray(ss.start)[sids], np.asarray(ss.last)[sids] + self.gap

    def keys_of(self, sids: np.ndarray) -> np.ndarray:
        """Key ids of sessions ``sids`` (int64, contiguous)."""
        return np.ascontiguousarray(np.asarray(self.sessions.key)[sids], np.int64)

    def closing(self, t: int, limit: int, emitted: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Time reaches ``t``: ``(due, gone)``, the open sessions ending at or before ``t``
        not emitted yet (``emitted[id] == 0``), by (end, start), and the open sessions ending
        at or before ``limit`` (past their allowed lateness)."""
        n = self.sessions.n
        if not n:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        alive, end = self.alive(), self.ends()
        due = np.flatnonzero(alive & (end <= t) & (emitted[:n] == 0))
        if len(due):
            due = due[np.lexsort((np.asarray(self.sessions.start)[due], end[due]))]
        return due, np.flatnonzero(alive & (end <= limit))

    def open_ids(self) -> np.ndarray:
        return np.flatnonzero(self.alive()).astype(np.int64)

    def open_count(self) -> int:
        ss = self.sessions
        return int(np.asarray(ss.alive)[: ss.n].sum())

    def remove(self, sids: np.ndarray) -> None:
        self.sessions.remove(sids)

    def compact(self, keep: np.ndarray, key_map: np.ndarray, n_keys: int) -> None:
        self.sessions.compact(keep, key_map, n_keys)

    def restore(self, kid: np.ndarray, start: np.ndarray, last: np.ndarray, n_keys: int) -> np.ndarray:
        """Add sessions from a snapshot; returns their ids."""
        return self.sessions.add(kid, np.ascontiguousarray(start, np.int64),
                                 np.ascontiguousarray(last, np.int64), n_keys)

    def snapshot_columns(self, sids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(start, last) of sessions ``sids``, as saved in snapshots."""
        ss = self.sessions
        return np.asarray(ss.start)[sids], np.asarray(ss.last)[sids]

    @property
    def nbytes(self) -> int:
        return self.sessions.nbytes
