"""Per-group sets of values with a count each: (group id, code) pairs in a Cython hash table.

``count_distinct`` keeps each group's distinct values this way, ``quantile`` its sketch's
buckets.  A set merges into another by re-adding its pairs under the destination's group ids.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..kernels import _accum, _hashagg
from .columns import grow


class ValueSet:
    """(group id, code) pairs with a count each.

    Examples
    --------
    >>> s = ValueSet()
    >>> s.add(np.array([0, 0, 1]), np.array([7, 7, 7]))      # groups with a new pair
    array([0, 1])
    >>> [a.tolist() for a in s.items()]
    [[0, 1], [7, 7], [2, 1]]
    """

    def __init__(self):
        self.table = _hashagg.GroupTable(2, 256)
        self.counts = np.zeros(256, np.int64)

    def add(self, gids: np.ndarray, codes: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
        """Insert pairs (each adding ``weights`` or 1 to its count); returns the group ids of
        the pairs that are new, one per new pair."""
        before = self.table.n_groups
        ids = np.empty(len(gids), np.int64)
        self.table.insert([np.ascontiguousarray(gids), np.ascontiguousarray(codes)], ids)
        n = self.table.n_groups
        if n > len(self.counts):
            self.counts = grow(self.counts, max(n, 2 * len(self.counts)), 0)
        if weights is None:
            _hashagg.count_rows(ids, self.counts)
        else:
            _accum.merge_add_i64(np.arange(len(ids), dtype=np.int64), ids, weights, self.counts)
        return np.ascontiguousarray(self.table.keys_slice(before, n)[:, 0])

    def items(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(group ids, codes, counts) of every pair; the counts are a view of live state."""
        k = self.table.keys_view()
        n = self.table.n_groups
        return np.ascontiguousarray(k[:n, 0]), np.ascontiguousarray(k[:n, 1]), self.counts[:n]

    def frozen(self) -> "FrozenValueSet":
        """A copy of the pairs as they are now (for a snapshot)."""
        return FrozenValueSet(self)

    def nbytes(self) -> int:
        return self.table.nbytes + self.counts.nbytes


class FrozenValueSet:
    """A copy of a :class:`ValueSet`'s pairs, read-only (a snapshot's)."""

    def __init__(self, pairs: ValueSet):
        g, k, w = pairs.items()              # g, k are copies; w is a view of live counts
        self._items = (g, k, w.copy())

    def items(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._items

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._items)


def keep_valid(gids: np.ndarray, codes: np.ndarray, ok: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """The (group id, code) pairs of the rows whose ``ok`` is set (all when ``ok`` is None)."""
    if ok is None:
        return gids, codes
    keep = ok.astype(bool)
    return gids[keep], codes[keep]
