"""Copy-on-write snapshot copies of per-group state arrays (keyed state).

At a checkpoint barrier an operator *freezes* its state in O(1): a ``CowCopy`` records which
live arrays belong to the snapshot, how many groups (``n``), and the buffers the copy goes to;
nothing is copied yet.  The checkpoint writer's thread then copies the arrays chunk by chunk
(:meth:`CowCopy.finish`, called when the snapshot is built) while processing goes on.  Before
the processing thread updates groups, it calls :meth:`CowCopy.before_update` with their ids:
every chunk holding one of them that the writer has not copied yet is copied first, on the
processing thread.  So the pause at the barrier does not grow with the state; what the first
batches after a barrier pay is the copy of the chunks they touch that the writer has not
reached yet: at most the whole state, once (a batch whose keys fall in every chunk).

Key tuples of groups ``0..n-1`` never change while a table only grows (new keys are
appended), so they are copied by the writer too; only the table's storage may move when it
grows, so inserts and the writer's key copies take the same lock (:attr:`CowCopy.lock`).
Compaction (TTL eviction) rewrites everything: the operator calls ``finish()`` before it.
"""
from __future__ import annotations

import threading
from typing import List, Optional, Tuple

import numpy as np

from ..errors import CheckpointError

#: Groups per chunk: 64K groups = 512 KiB of each int64/float64 array.
CHUNK = 1 << 16


class CowCopy:
    """A snapshot copy of ``n`` groups, made lazily by chunks.

    ``pairs`` holds ``(live, out)``: the live array (indexed by group id, at least ``n`` long)
    and the buffer (``n`` long) that receives its first ``n`` values.  ``table`` (a
    ``GroupTable``) and ``keys_out`` (int64, ``n * table.width`` long) ask for the key tuples
    to be copied too.

    Examples
    --------
    >>> import numpy as np
    >>> live = np.arange(5.0)
    >>> out = np.zeros(5)
    >>> cow = CowCopy([(live, out)], 5, chunk=2)
    >>> cow.before_update(np.array([3]))      # chunk 1 (groups 2, 3) is copied first
    1
    >>> live[3] = 30.0
    >>> cow.finish()
    >>> out.tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    """

    def __init__(self, pairs: List[Tuple[np.ndarray, np.ndarray]], n: int, table=None,
                 keys_out: Optional[np.ndarray] = None, chunk: Optional[int] = None):
        self.pairs = pairs
        self.n = n
        self.chunk = chunk or CHUNK
        self.table = table if keys_out is not None else None
        self.keys_out = keys_out
        self.lock = threading.Lock()
        self._todo = np.ones(-(-n // self.chunk), bool)      # chunk still to copy
        self._left = len(self._todo)
        self._keys_left = self._left if self.table is not None else 0
        self._cancelled = False
        self.released = False
        #: Chunks the processing thread had to copy itself (before updating them).
        self.copied_by_updates = 0

    @property
    def done(self) -> bool:
        """Nothing is left to copy (or the copy was cancelled)."""
        return self._cancelled or (self._left == 0 and self._keys_left == 0)

    @property
    def keys_pending(self) -> bool:
        """Whether inserts into the table must still take :attr:`lock`."""
        return self._keys_left > 0 and not self._cancelled

    def _copy(self, c: int) -> None:
        lo = c * self.chunk
        hi = min(lo + self.chunk, self.n)
        for live, out in self.pairs:
            out[lo:hi] = live[lo:hi]
        self._todo[c] = False
        self._left -= 1

    def before_update(self, ids: np.ndarray) -> int:
        """Copy, first, every chunk holding one of groups ``ids`` not copied yet (call it on
        the processing thread before changing those groups); returns how many it copied."""
        if self._left == 0 or self._cancelled or not len(ids):
            return 0
        ids = ids[ids < self.n]
        if not len(ids):
            return 0
        hit = np.zeros(len(self._todo), bool)
        hit[ids // self.chunk] = True
        with self.lock:
            if self._cancelled:
                return 0
            todo = np.flatnonzero(hit & self._todo)
            for c in todo.tolist():
                self._copy(c)
        self.copied_by_updates += len(todo)
        return len(todo)

    def finish(self) -> None:
        """Copy everything not copied yet (the lock is taken chunk by chunk, so processing
        interleaves).  Raises CheckpointError if the copy was cancelled."""
        w = self.table.width if self.table is not None else 0
        for c in range(len(self._todo)):
            with self.lock:
                if self._cancelled:
                    raise CheckpointError("the snapshot copy was cancelled (a newer checkpoint superseded it)")
                if self._todo[c]:
                    self._copy(c)
                if self.table is not None and self._keys_left:
                    lo = c * self.chunk
                    hi = min(lo + self.chunk, self.n)
                    self.keys_out[lo * w: hi * w] = self.table.keys_slice(lo, hi).reshape(-1)
                    self._keys_left -= 1

    def release(self) -> None:
        """The snapshot is written (or abandoned): stop copying; its buffers may be reused."""
        with self.lock:
            self._cancelled = True
            self.released = True
