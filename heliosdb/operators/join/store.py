"""The rows one side of a join waits with: the Arrow rows (``state.rows``: memory or RocksDB)
and, per row, what the join knows of it in numpy arrays indexed by row number (time, key id,
whether it is alive and matched, its chain link, when it expires, its session).

Rows are appended in arrival order and never move until :meth:`SideRows.compact` keeps the
live ones (renumbered in order); a dead row stays in the arrays until then, flagged.  With no
rows left everything is released (:meth:`SideRows.clear`): a join whose inputs ended and whose
watermark passed holds zero bytes.
"""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np
import pyarrow as pa

from ...state.rows import RowChunks

_DTYPES = {"t": np.int64, "kid": np.int64, "nxt": np.int64, "exp": np.int64, "sid": np.int64,
           "alive": np.uint8, "matched": np.uint8}


class SideRows:
    """The rows of one side and their per-row arrays (``fields``, from ``t``, ``kid``,
    ``nxt``, ``exp``, ``sid``, ``alive``, ``matched``; ``alive`` is always kept).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> from heliosdb.state.rows import RowChunks
    >>> side = SideRows(RowChunks(pa.schema([("v", pa.int64())])), ("t",))
    >>> side.append(pa.record_batch({"v": [1, 2, 3]}), t=np.array([5, 6, 7]))
    0
    >>> side.kill(np.array([1])); side.live, side.a("alive").tolist()
    (2, [1, 0, 1])
    >>> side.compact().tolist(), side.a("t").tolist(), side.rows.all().column(0).to_pylist()
    ([0, 2], [5, 7], [1, 3])
    >>> side.kill(np.array([0, 1])); _ = side.compact(); side.n, side.nbytes()
    (0, 0)
    """

    def __init__(self, rows: RowChunks, fields: Iterable[str]):
        self.rows = rows
        self.fields = tuple(dict.fromkeys(tuple(fields) + ("alive",)))
        self.n = 0
        self.live = 0
        self._cap = 0
        self._arrays: Dict[str, np.ndarray] = {f: np.empty(0, _DTYPES[f]) for f in self.fields}

    def a(self, name: str) -> np.ndarray:
        """The per-row array ``name`` of rows 0..n-1 (a view: writes go to the state)."""
        return self._arrays[name][: self.n]

    def full(self, name: str) -> np.ndarray:
        """The whole array ``name`` (capacity long), for kernels that write ahead."""
        return self._arrays[name]

    def _reserve(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = max(1024, self._cap)
        while cap < n:
            cap *= 2
        for f, old in self._arrays.items():
            new = np.zeros(cap, old.dtype)
            new[: self.n] = old[: self.n]
            self._arrays[f] = new
        self._cap = cap

    def append(self, batch: pa.RecordBatch, **values: np.ndarray) -> int:
        """Add ``batch``'s rows (alive, not matched) with their per-row ``values``; returns the
        first row's number."""
        m = batch.num_rows
        base = self.n
        if not m:
            return base
        self._reserve(base + m)
        self.rows.append(batch)
        for f in self.fields:
            arr = self._arrays[f]
            if f in values:
                arr[base: base + m] = values[f]
            elif f == "alive":
                arr[base: base + m] = 1
            elif f == "nxt":
                arr[base: base + m] = -1
            else:
                arr[base: base + m] = 0
        self.n += m
        self.live += m
        return base

    def kill(self, idx: np.ndarray) -> None:
        """Rows ``idx`` (alive ones) are gone."""
        alive = self._arrays["alive"]
        self.live -= int(alive[idx].sum())
        alive[idx] = 0

    @property
    def dead(self) -> int:
        return self.n - self.live

    def alive_rows(self) -> np.ndarray:
        """Numbers of the live rows, ascending."""
        return np.flatnonzero(self.a("alive"))

    def compact(self) -> np.ndarray:
        """Keep the live rows only, renumbered 0.. in order; returns their old numbers."""
        keep = self.alive_rows()
        if len(keep) == self.n:
            return keep
        if not len(keep):
            self.clear()
            return keep
        self.rows.keep(keep)
        m = len(keep)
        cap = max(1024, 2 * m)
        for f, old in self._arrays.items():
            new = np.zeros(cap, old.dtype)
            new[:m] = old[keep]
            self._arrays[f] = new
        self._cap = cap
        self.n = self.live = m
        return keep

    def clear(self) -> None:
        """Let go of every row and array."""
        self.rows.clear()
        self._arrays = {f: np.empty(0, a.dtype) for f, a in self._arrays.items()}
        self._cap = self.n = self.live = 0

    def close(self) -> None:
        self.clear()
        self.rows.close()

    def nbytes(self) -> int:
        return self.rows.nbytes() + sum(a.nbytes for a in self._arrays.values())
