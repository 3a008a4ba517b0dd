"""Group state: the accumulators of an operator's groups, on a backend.

Operators map keys to dense group ids themselves and talk to a group state
(:class:`~heliosdb.state.base.GroupState`) by id only; memory
(:class:`~heliosdb.state.memory.MemoryGroupState`) and RocksDB
(:class:`~heliosdb.state.rocksdb.RocksGroupState`) implement it.  What a group holds comes
from its aggregates (:mod:`heliosdb.aggregates`); checkpoint tables from
:mod:`heliosdb.state.snapshots`.  Layering: operators -> state -> aggregates -> kernels.
"""
from __future__ import annotations

from typing import List, Tuple

import pyarrow as pa

from ..aggregates import AggregatePlan, AggSpec, Prepared
from ..aggregates.columns import adopt_column, fill_from_column
from .base import GroupState
from .memory import MemoryGroupState
from .snapshots import filter_rows, snapshot_rows, state_from_arrow, state_to_arrow

__all__ = ["AccPlan", "GroupState", "MemoryGroupState", "Prepared", "adopt_column", "fill_from_column",
           "filter_rows", "snapshot_rows", "state_from_arrow", "state_to_arrow"]


class AccPlan(AggregatePlan):
    """An operator's aggregates (:class:`~heliosdb.aggregates.AggregatePlan`) and the backend
    its group states live on (``backend``: a ``config.StateBackend``, or None: memory).

    Examples
    --------
    >>> import numpy as np, heliosdb as hdb
    >>> plan = AccPlan(pa.schema([("v", pa.float64())]), [("hi", hdb.max("v"))], "agg")
    >>> part = plan.new_state(16)
    >>> part.ensure(1)
    >>> part.update(np.zeros(2, np.int64), plan.prepare(pa.record_batch({"v": [0.5, 2.5]}), None))
    >>> part.results()[0].to_pylist(), part.in_memory
    ([2.5], True)
    """

    def __init__(self, schema: pa.Schema, aggs: List[Tuple[str, AggSpec]], step: str, backend=None):
        super().__init__(schema, aggs, step)
        self.backend = backend
        self._db = None

    def new_state(self, capacity: int = 1024, rows: bool = False) -> GroupState:
        """Long-lived group state on this operator's backend."""
        if self.backend is None or self.backend.kind == "memory":
            return MemoryGroupState(self, capacity, rows)
        from .rocksdb import RocksDB, RocksGroupState

        if self._db is None:
            b = self.backend
            self._db = RocksDB(b.path, self.step, b.block_cache_size, b.write_buffer_size)
        return RocksGroupState(self, self._db, rows)

    def close_state(self) -> None:
        """Delete the backend's working files (RocksDB): the job is over."""
        if self._db is not None:
            self._db.close()
            self._db = None

