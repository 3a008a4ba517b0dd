"""Group state <-> checkpoint tables: state as Arrow, portable between backends and
parallelisms.

A snapshot of group state is one main table (one row per group: the operator's key columns
and bookkeeping, then each accumulator's columns, e.g. ``rows``, ``v.nn``, ``v.sum``,
``v.var_m2``, ``s.first_seq``, ``s.first``) and, for accumulators with value sets, one table
each (``distinct.{col}``, ``sketch.{col}.{alpha}``) whose ``row`` column points into it.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..aggregates import AggregatePlan
from .base import GroupState
from .memory import MemoryGroupState


def state_to_arrow(part: GroupState, ids: np.ndarray, frozen: bool = False) -> Tuple[Dict[str, pa.Array], Dict[str, pa.Table]]:
    """Groups ``ids`` of ``part`` as Arrow columns (row i = group ids[i]), plus the tables of
    per-group value sets keyed by row number (see :meth:`GroupState.to_arrow`).

    Values are stored decoded (strings as strings), never as this process's codes, so a
    snapshot restores into any operator instance, backend or parallelism.  The arrays are
    copies unless ``frozen`` (``part`` is already a private copy): Arrow would otherwise share
    the live state's memory, which keeps changing after the barrier.
    """
    return part.to_arrow(ids, frozen)


def state_from_arrow(plan: AggregatePlan, table: pa.Table, extra: Dict[str, pa.Table],
                     owned: bool = False) -> MemoryGroupState:
    """The inverse of :func:`state_to_arrow`: row i of ``table`` becomes group i.

    ``owned``: the table's buffers belong to this call alone (decoded from a checkpoint for
    it), so numeric columns are kept as the state's arrays instead of being copied (on a
    virtual machine, 10^7 groups' fresh arrays cost seconds of page faults).

    Examples
    --------
    >>> import heliosdb as hdb
    >>> schema = pa.schema([("v", pa.int64())])
    >>> plan = AggregatePlan(schema, [("s", hdb.sum("v"))], "agg")
    >>> part = MemoryGroupState(plan)
    >>> part.ensure(2)
    >>> part.update(np.array([0, 1, 1]), plan.prepare(pa.record_batch({"v": [1, 2, 3]}), None))
    >>> cols, extra = state_to_arrow(part, np.array([1, 0]))
    >>> sorted(cols), state_from_arrow(plan, pa.table(cols), extra).results()[0].to_pylist()
    (['v.max', 'v.min', 'v.nn', 'v.sum'], [5, 1])
    """
    m = table.num_rows
    cap = max(m, 16)
    part = MemoryGroupState(plan, 16, "rows" in table.column_names)     # arrays replaced below
    for acc in part.accumulators():
        acc.restore(table, extra, cap, owned)
    part.capacity = cap
    part.n = m
    return part


def snapshot_rows(tables: Dict[str, pa.Table], name: str, select=None) -> Optional[Tuple[pa.Table, Dict[str, pa.Table]]]:
    """A snapshot's main table ``name`` and its value-set tables, narrowed to this subtask's
    rows by ``select(table)`` (a bool mask); None when nothing is left."""
    t = tables.get(name)
    if t is None or not t.num_rows:
        return None
    extra = {k: v for k, v in tables.items() if k != name}
    if select is not None:
        t, extra = filter_rows(t, extra, select(t))
    return (t, extra) if t.num_rows else None


def filter_rows(table: pa.Table, extra: Dict[str, pa.Table], keep: np.ndarray) -> Tuple[pa.Table, Dict[str, pa.Table]]:
    """Rows ``keep`` (bool mask) of a snapshot and of its per-row value sets, renumbered.

    >>> t, e = filter_rows(pa.table({"k": [7, 8, 9]}), {"distinct.s": pa.table({"row": [0, 2], "value": ["a", "b"]})},
    ...                    np.array([False, True, True]))
    >>> t.column("k").to_pylist(), e["distinct.s"].to_pydict()
    ([8, 9], {'row': [1], 'value': ['b']})
    """
    idx = np.flatnonzero(keep)
    new_row = np.full(len(keep), -1, np.int64)
    new_row[idx] = np.arange(len(idx), dtype=np.int64)
    out = {}
    for name, t in extra.items():
        r = t.column("row").to_numpy()
        sel = new_row[r] >= 0
        t = t.filter(pa.array(sel))
        out[name] = t.set_column(0, "row", pa.array(new_row[r[sel]]))
    return table.take(pa.array(idx)), out
