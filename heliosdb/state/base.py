"""The group-state interface: the accumulators of groups 0..n-1 of one window, pane, session
set or keyed table, whatever backend holds them.

Operators map keys to dense group ids themselves (``kernels._hashagg.GroupTable``) and talk
to a :class:`GroupState` by group id only: ``update`` from a batch, ``merge`` another state's
groups in (sliding panes, sessions that an event bridges, parallel subtasks), ``take`` a subset
(compaction), ``results``, and the Arrow form of checkpoints (``to_arrow``;
:func:`heliosdb.state.snapshots.state_from_arrow` is the inverse).  The memory backend
(:mod:`.memory`) keeps the accumulators' arrays; RocksDB (:mod:`.rocksdb`) loads the groups an
operation touches into a memory state and writes them back.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..aggregates import AggregatePlan, Prepared


class GroupState:
    """Accumulators of groups 0..n-1 under one :class:`~heliosdb.aggregates.AggregatePlan`.

    ``plan`` is the operator's plan (assigning a frozen one makes results decode with the
    values known then); ``n`` the number of groups.
    """

    #: whether the accumulator arrays are in this process's memory (their buffers can be
    #: copied for a snapshot, or adopted from a restore)
    in_memory = False
    plan: AggregatePlan
    n: int

    def ensure(self, n: int) -> None:
        """Make room for groups 0..n-1 (new groups start empty)."""
        raise NotImplementedError

    def update(self, gids: np.ndarray, p: Prepared) -> None:
        """Fold the rows of ``p`` into groups ``gids`` (one per row; ``ensure`` done)."""
        raise NotImplementedError

    def merge(self, src: "GroupState", src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        """Combine group ``src_ids[i]`` of ``src`` (any backend; may be this state) into group
        ``dst_ids[i]`` (``ensure`` done)."""
        raise NotImplementedError

    def merge_aligned(self, src: "GroupState") -> None:
        """Combine ``src``'s group ``g`` into group ``g`` for every group of ``src`` (both
        index the same key table).  ``ensure`` done."""
        ids = np.arange(src.n, dtype=np.int64)
        self.merge(src, ids, ids)

    def take(self, ids: np.ndarray) -> "GroupState":
        """A state of this backend holding groups ``ids`` as 0..len(ids)-1 (this one is
        no longer used)."""
        raise NotImplementedError

    def results(self, ids: Optional[np.ndarray] = None) -> List[pa.Array]:
        """One Arrow array per aggregate, for groups ``ids`` (default: all, in id order).
        Copies: emitted rows never change with the state."""
        ids = np.arange(self.n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        return self.load(ids).results()

    def load(self, ids: np.ndarray) -> "GroupState":
        """Groups ``ids`` as a private in-memory state (row i = group ids[i]; a
        :class:`~heliosdb.state.memory.MemoryGroupState`)."""
        raise NotImplementedError

    def materialize(self) -> "GroupState":
        """Every group as a memory state."""
        return self.load(np.arange(self.n, dtype=np.int64))

    @property
    def counts(self):
        """Rows per group (indexable), or None when the state does not count rows."""
        raise NotImplementedError

    def nbytes(self) -> int:
        """Bytes of memory held (a disk backend reports its database separately)."""
        return 0

    def drop(self) -> None:
        """Release every group's storage (a pane that closed)."""

    def shift_seqs(self, base: int) -> None:
        """Arrival numbers of every group move by ``base`` (a replica's state joins)."""
        raise NotImplementedError

    # -- snapshots ---------------------------------------------------------------------------------
    def to_arrow(self, ids: np.ndarray, frozen: bool = False) -> Tuple[Dict[str, pa.Array], Dict[str, pa.Table]]:
        """Groups ``ids`` as Arrow columns (row i = group ids[i]), plus the tables of per-group
        value sets keyed by row number.  ``frozen``: this state is already a private copy
        (no need to copy again)."""
        ids = np.asarray(ids, np.int64)
        return self.load(ids).to_arrow(np.arange(len(ids), dtype=np.int64), frozen=True)

    def arrays(self) -> List[Tuple[str, np.ndarray]]:
        """(name, array) of every per-group array held in memory (none on disk)."""
        return []

    def frozen_into(self, bufs: Dict[str, np.ndarray], n: int) -> Tuple["GroupState", List[Tuple[np.ndarray, np.ndarray]]]:
        """A private copy of groups 0..n-1 for a snapshot, and the ``(live array, buffer)``
        pairs the caller still has to copy before reading it (memory: into ``bufs``, reused
        between checkpoints; a disk backend reads a copy at once and leaves none)."""
        part = self.load(np.arange(n, dtype=np.int64))
        part.plan = self.plan.frozen()
        return part, []
