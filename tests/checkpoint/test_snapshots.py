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


# -- keyed state: copy-on-write by chunks ------------------------------------------------------
#   barrier: snapshot() freezes 3,000 keys (chunks of 64) | batches update old keys in some
#   chunks, add keys (the table and the arrays grow), bring a null key (the table widens) |
#   the writer's materialize() must give the state at the barrier
def _keyed_batches(seed: int, n: int, keys: int, null: bool = False) -> pa.RecordBatch:
    import numpy as np

    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n)
    mask = (rng.random(n) < 0.05) if null else None
    return pa.RecordBatch.from_arrays(
        [pa.array(k, pa.int64(), mask=mask), pa.array(rng.random(n)),
         pa.array([f"u{x}" for x in rng.integers(0, 50, n)])], names=["k", "v", "u"])


def _keyed(aggs=None):
    schema = pa.schema([("k", pa.int64()), ("v", pa.float64()), ("u", pa.string())])
    return KeyedAggregate("agg", schema, ["k"], list((aggs or P.aggregates("v", "u")).items()), 2**31)


def _keyed_tables(snap) -> dict:
    return {name: t.combine_chunks() for name, t in snap.materialize().items()}


@pytest.mark.parametrize("writer_first", [False, True])
def test_keyed_snapshot_is_the_barrier_state_whoever_copies_each_chunk(monkeypatch, writer_first):
    from heliosdb.operators import cow

    monkeypatch.setattr(cow, "CHUNK", 64)
    load = [_keyed_batches(1, 4000, 3000)]
    later = [_keyed_batches(2, 300, 3000), _keyed_batches(3, 2000, 9000), _keyed_batches(4, 500, 9000, null=True)]
    op = _keyed()
    for b in load:
        op.process_batch(b)
    snap = op.snapshot()
    if writer_first:
        got = _keyed_tables(snap)             # the writer copies everything before any update
    for b in later:
        op.process_batch(b)
    if not writer_first:
        assert op._cow.copied_by_updates > 0      # some chunks were copied by the batches
        got = _keyed_tables(snap)
    snap.done()

    fresh = _keyed()
    for b in load:
        fresh.process_batch(b)
    want = {name: t.combine_chunks() for name, t in fresh.snapshot().materialize().items()}
    assert sorted(got) == sorted(want)
    changed = [f"{name}.{c}" for name, t in want.items() for c in t.column_names
               if c != "touched" and not got[name].column(c).equals(t.column(c))]
    assert not changed, f"keyed snapshot columns differ from the state at the barrier: {changed}"
    # The next snapshot (after done()) reuses the buffers and holds the later batches too.
    bufs = dict(op._snap_bufs)
    nxt = op.snapshot()
    assert all(op._snap_bufs[k] is v for k, v in bufs.items() if k in op._snap_bufs and len(v) >= op.table.n_groups)
    assert nxt.materialize()["keys"].num_rows == op.table.n_groups


def test_keyed_snapshot_of_an_abandoned_epoch_keeps_its_buffers_and_cannot_finish(monkeypatch):
    from heliosdb.errors import CheckpointError
    from heliosdb.operators import cow

    monkeypatch.setattr(cow, "CHUNK", 64)
    op = _keyed()
    op.process_batch(_keyed_batches(1, 4000, 3000))
    old = op.snapshot()                       # never written (its epoch timed out)
    op.process_batch(_keyed_batches(2, 4000, 3000))
    new = op.snapshot()
    with pytest.raises(CheckpointError, match="cancelled"):
        old.materialize()
    fresh = _keyed()
    fresh.process_batch(_keyed_batches(1, 4000, 3000))
    fresh.process_batch(_keyed_batches(2, 4000, 3000))
    got, want = new.materialize()["keys"], fresh.snapshot().materialize()["keys"]
    assert got.drop_columns(["touched"]).equals(want.drop_columns(["touched"]))


def test_keyed_ttl_eviction_while_a_snapshot_is_being_copied_finishes_the_copy_first(monkeypatch):
    from heliosdb.operators import cow, keyed

    monkeypatch.setattr(cow, "CHUNK", 64)
    now = [0]
    monkeypatch.setattr(keyed, "_clock", lambda: now[0])
    schema = pa.schema([("k", pa.int64()), ("v", pa.float64()), ("u", pa.string())])
    aggs = [("n", hdb.count()), ("s", hdb.sum("v"))]
    op = KeyedAggregate("agg", schema, ["k"], aggs, 2**31, 10 * 10**9, 10**9)
    first = _keyed_batches(1, 4000, 3000)
    op.process_batch(first)
    snap = op.snapshot()
    now[0] = 20 * 10**9                      # every key is now older than the TTL
    op.process_batch(_keyed_batches(2, 10, 50))
    assert op.evicted_keys > 0 and op.table.n_groups <= 50
    got = snap.materialize()["keys"]
    ref = KeyedAggregate("agg", schema, ["k"], aggs, 2**31)
    ref.process_batch(first)
    want = ref.snapshot().materialize()["keys"]
    assert got.drop_columns(["touched"]).equals(want.drop_columns(["touched"]))


# -- keyed state: restore keeps the decoded buffers (owned) ------------------------------------
def _through_parquet(tables: dict, folder: str) -> dict:
    """Each table written and read back through the checkpoint store, as a restore reads it."""
    from heliosdb.checkpoint.storage import Store

    store = Store(folder, "job")
    return {name: store.read_table(store.write_table(1, "agg", "agg", name, t, "zstd"))
            for name, t in tables.items()}


@pytest.mark.parametrize("owned", [True, False])
def test_keyed_restore_of_decoded_tables_continues_exactly_and_aliases_only_what_it_owns(owned, tmp_path):
    import numpy as np

    load, later = _keyed_batches(1, 4000, 3000), _keyed_batches(2, 3000, 4000)
    op = _keyed()
    op.process_batch(load)
    saved = _through_parquet(op.snapshot().materialize(), str(tmp_path))
    before = {k: t.to_pydict() for k, t in saved.items()}
    restored = _keyed()
    restored.restore(saved, [{"seq": op.seq, "evicted_keys": 0}], owned=owned)
    nn = dict(restored.partial.arrays())["v.nn"]
    shares = any(np.shares_memory(nn, c.to_numpy()) for c in saved["keys"].column("v.nn").chunks)
    assert shares == owned                    # kept as the state only when owned
    got = restored.process_batch(later)[0]
    want = op.process_batch(later)[0]
    assert got.to_pydict() == want.to_pydict()
    if not owned:                             # the caller's tables are untouched
        assert {k: t.to_pydict() for k, t in saved.items()} == before


def test_adopt_column_refuses_columns_it_cannot_keep_as_they_are():
    import numpy as np

    from heliosdb.aggregates.columns import adopt_column

    a = pa.chunked_array([pa.array(np.arange(5.0))])
    assert adopt_column(pa.chunked_array([pa.array([1.0]), pa.array([2.0])]), np.float64) is None   # 2 chunks
    assert adopt_column(pa.chunked_array([pa.array([1.0, None])]), np.float64) is None            # a null
    assert adopt_column(pa.chunked_array([pa.array(np.arange(5.0)).slice(1)]), np.float64) is None  # an offset
    assert adopt_column(a, np.int64) is None                                                       # another type
    kept = adopt_column(a, np.float64)
    assert kept is None or (kept.flags.writeable and kept.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0])
