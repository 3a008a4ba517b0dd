"""The memory backend: a group state is its accumulators' arrays (one
:class:`~heliosdb.aggregates.GroupsAccumulator` copy per distinct accumulator of the plan),
grown by doubling, updated and merged by the accumulators' compiled kernels.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..aggregates import AggregatePlan, GroupsAccumulator, Prepared, Selection
from .base import GroupState


class MemoryGroupState(GroupState):
    """The accumulators of groups 0..n-1, as arrays in memory.

    ``rows``: count rows per group even if no ``count()`` asks for it (sliding windows use it
    to know which groups hold anything after an aligned merge).

    Examples
    --------
    >>> import heliosdb as hdb
    >>> schema = pa.schema([("v", pa.int64())])
    >>> plan = AggregatePlan(schema, [("n", hdb.count()), ("s", hdb.sum("v"))], "agg")
    >>> part = MemoryGroupState(plan)
    >>> part.ensure(2)
    >>> part.update(np.array([0, 1, 1]), plan.prepare(pa.record_batch({"v": [1, 2, 3]}), None))
    >>> [a.to_pylist() for a in part.results()]
    [[1, 2], [1, 5]]
    """

    in_memory = True

    def __init__(self, plan: AggregatePlan, capacity: int = 1024, rows: bool = False):
        self._plan = plan
        self.capacity = capacity = max(capacity, 16)
        self.n = 0
        self.accs: List[GroupsAccumulator] = [a.empty(capacity) for a in plan.accumulators]
        self.extra_rows: Optional[GroupsAccumulator] = (
            plan.row_counter.empty(capacity) if rows and plan.rows is None else None)

    @property
    def plan(self) -> AggregatePlan:
        return self._plan

    @plan.setter
    def plan(self, plan: AggregatePlan) -> None:
        # The accumulators take the new plan's configuration (e.g. frozen codecs) and keep
        # their groups.
        self.accs = [p.holding(dict(a.arrays()), a.sets, a.capacity) for p, a in zip(plan.accumulators, self.accs)]
        if self.extra_rows is not None:
            a = self.extra_rows
            self.extra_rows = plan.row_counter.holding(dict(a.arrays()), a.sets, a.capacity)
        self._plan = plan

    def accumulators(self) -> List[GroupsAccumulator]:
        """Every accumulator, in snapshot column order (row counts first)."""
        return self.accs if self.extra_rows is None else [self.extra_rows] + self.accs

    @property
    def row_counter(self) -> Optional[GroupsAccumulator]:
        if self.extra_rows is not None:
            return self.extra_rows
        return None if self._plan.rows is None else self.accs[self._plan.rows]

    @property
    def counts(self) -> Optional[np.ndarray]:
        rc = self.row_counter
        return None if rc is None else rc.a["rows"]

    # -- the operations ----------------------------------------------------------------------------
    def ensure(self, n: int) -> None:
        if n > self.capacity:
            cap = self.capacity
            while cap < n:
                cap *= 2
            for acc in self.accumulators():
                acc.resize(cap)
            self.capacity = cap
        self.n = max(self.n, n)

    def update(self, gids: np.ndarray, p: Prepared) -> None:
        seqs = p.seqs
        for acc, inputs in zip(self.accs, p.inputs):
            acc.update(gids, inputs, seqs)
        if self.extra_rows is not None:
            self.extra_rows.update(gids, (), None)

    def merge(self, src: GroupState, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        s, d = np.ascontiguousarray(src_ids, np.int64), np.ascontiguousarray(dst_ids, np.int64)
        if not src.in_memory:
            src, s = src.load(s), np.arange(len(s), dtype=np.int64)   # another backend's state
        for a, b in zip(self.accs, src.accs):
            a.merge(b, s, d)
        if self.extra_rows is not None:
            self.extra_rows.merge(src.row_counter, s, d)

    def merge_aligned(self, src: GroupState) -> None:
        if not src.in_memory:
            src = src.materialize()                 # another backend's state, loaded
        m = src.n
        if not m:
            return
        for a, b in zip(self.accs, src.accs):
            a.merge_aligned(b, m)
        if self.extra_rows is not None:
            self.extra_rows.merge_aligned(src.row_counter, m)

    def take(self, ids: np.ndarray) -> "MemoryGroupState":
        out = MemoryGroupState(self._plan, len(ids), self.extra_rows is not None)
        out.ensure(len(ids))
        out.merge(self, ids, np.arange(len(ids), dtype=np.int64))
        return out

    def load(self, ids: np.ndarray) -> "MemoryGroupState":
        return self.take(np.asarray(ids, np.int64))

    def results(self, ids: Optional[np.ndarray] = None) -> List[pa.Array]:
        sel = Selection(self.n, ids)
        accs = self.accs
        return [agg.evaluate(accs[i], sel) for agg, i in self._plan.readers]

    def shift_seqs(self, base: int) -> None:
        if base:
            for acc in self.accs:
                acc.shift_seqs(base, self.n)

    def nbytes(self) -> int:
        return sum(a.nbytes() for a in self.accumulators())

    def value_sets(self) -> list:
        """Every per-group value set, in a fixed order."""
        return [s for acc in self.accumulators() for s in acc.sets]

    # -- snapshots ---------------------------------------------------------------------------------
    def arrays(self) -> List[Tuple[str, np.ndarray]]:
        return [item for acc in self.accumulators() for item in acc.arrays()]

    def to_arrow(self, ids: np.ndarray, frozen: bool = False) -> Tuple[Dict[str, pa.Array], Dict[str, pa.Table]]:
        ids = np.asarray(ids, np.int64)
        n = self.n
        if frozen and len(ids) == n and (not n or (ids[0] == 0 and ids[-1] == n - 1)):
            sel = Selection(n, None, copy=False)   # a private copy, every group: no gather
        else:
            sel = Selection(n, ids)
        cols: Dict[str, pa.Array] = {}
        extra: Dict[str, pa.Table] = {}
        for acc in self.accumulators():
            c, e = acc.state(sel)
            cols.update(c)
            extra.update(e)
        return cols, extra

    def frozen_into(self, bufs: Dict[str, np.ndarray], n: int) -> Tuple["MemoryGroupState", List[Tuple[np.ndarray, np.ndarray]]]:
        """A snapshot of groups 0..n-1 whose arrays are buffers from ``bufs`` (reused from one
        checkpoint to the next, so their pages are already mapped), and the ``(live array,
        buffer)`` pairs still to copy: the caller copies them (at once, or chunk by chunk
        with ``operators.cow.CowCopy``) before the snapshot is read.  Value sets are copied
        here; codecs are frozen (the snapshot decodes on another thread)."""
        fplan = self._plan.frozen()
        pairs: List[Tuple[np.ndarray, np.ndarray]] = []

        def copy_of(acc: GroupsAccumulator, proto: GroupsAccumulator) -> GroupsAccumulator:
            arrays = {}
            for name, a in acc.arrays():
                buf = bufs.get(name)
                if buf is None or len(buf) < n or buf.dtype != a.dtype:
                    buf = bufs[name] = np.empty(max(n + n // 4, 16), a.dtype)
                arrays[name] = buf[:n]
                pairs.append((a, buf[:n]))
            return proto.holding(arrays, [s.frozen() for s in acc.sets], n)

        out = MemoryGroupState.__new__(MemoryGroupState)
        out._plan = fplan
        out.n = out.capacity = n
        out.accs = [copy_of(a, p) for a, p in zip(self.accs, fplan.accumulators)]
        out.extra_rows = None if self.extra_rows is None else copy_of(self.extra_rows, fplan.row_counter)
        return out, pairs
