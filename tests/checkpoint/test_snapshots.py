"""Operator snapshots are copies: the checkpoint writer encodes them later, on its own thread,
while the operator goes on processing; nothing it does after ``snapshot()`` may reach the
snapshot.

    stage thread   batch 1 | snapshot() | batch 2, batch 3 (same panes, same keys) ...
    writer thread                 ...... materialize() -> Parquet
    the written state must be the state after batch 1
"""
from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.operators.keyed import KeyedAggregate
from heliosdb.operators.window import window_operator

from . import pipelines as P

SPECS = {
    "tumbling": hdb.TumblingWindow.of(timedelta(seconds=10)),
    "sliding": hdb.SlidingWindow.of(timedelta(seconds=10), timedelta(seconds=5)),
    "session": hdb.SessionWindow.with_gap(timedelta(seconds=10)),
}


def _operator(kind: str, schema: pa.Schema, backend=None):
    aggs = list(P.aggregates("v", "u").items())
    kw = {} if backend is None else {"backend": backend}
    if kind == "running":
        return KeyedAggregate("agg", schema, ["k"], aggs, 2**31, **kw)
    return window_operator("agg", schema, ["k"], SPECS[kind], "ts", aggs, 2**31, **kw)


def _tables(snap) -> dict:
    tables = snap.materialize() if hasattr(snap, "materialize") else snap.tables
    return {name: t.combine_chunks() for name, t in tables.items()}


def _batches():
    """12 batches of 400 events over the same 40 keys, 3.6 s of event time: the first 10 s
    window stays open while the value sets (count_distinct, quantile) grow."""
    return P.events(4800, seed=3).to_batches(max_chunksize=400)


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session", "running"])
def test_state_changed_after_snapshot_does_not_reach_the_snapshot(kind):
    b1, *rest = _batches()
    op = _operator(kind, b1.schema)
    op.process_batch(b1)
    snap = op.snapshot()
    for b in [b1] + rest:       # b1 again first: only counts grow in place, nothing is reallocated
        op.process_batch(b)
    got = _tables(snap)

    fresh = _operator(kind, b1.schema)
    fresh.process_batch(b1)
    want = _tables(fresh.snapshot())
    assert sorted(got) == sorted(want)
    changed = [f"{name}.{c}" for name, t in want.items() for c in t.column_names
               if c != "touched" and not got[name].column(c).equals(t.column(c))]   # touched: wall clock
    assert not changed, f"snapshot columns changed after snapshot() (they share memory with the live state): {changed}"
