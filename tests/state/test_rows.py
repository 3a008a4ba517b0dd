"""Row state (``state/rows.py``): the bytes it holds, counted as it goes, in memory and in
RocksDB, and RocksDB's working database written without a write-ahead log."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliosdb.state.rocksdb import RocksDB
from heliosdb.state.rows import MAX_CHUNKS, RECORD_BYTES, RocksRowChunks, RowChunks

SCHEMA = pa.schema([("k", pa.int64()), ("s", pa.string())])


def batch(lo: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"k": np.arange(lo, lo + n), "s": [f"v{i}" for i in range(lo, lo + n)]}, schema=SCHEMA)


def test_memory_rows_count_the_bytes_of_what_they_hold():
    rows = RowChunks(SCHEMA)
    parent = batch(0, 1000)
    for i in range(MAX_CHUNKS + 5):                  # slices of one batch, then merged on take
        rows.append(parent.slice(i * 20, 20))
        assert rows.nbytes() == sum(c.nbytes for c in rows._chunks)
    rows.take(np.array([0, 5]))
    assert len(rows._chunks) == 1 and rows.nbytes() == rows._chunks[0].nbytes
    rows.keep(np.arange(0, rows.n, 2))
    assert rows.nbytes() == rows.all().nbytes > 0
    rows.clear()
    assert rows.nbytes() == 0


@pytest.fixture
def db(tmp_path):
    store = RocksDB(str(tmp_path), "rows", 1 << 20, 1 << 20)
    yield store
    store.close()


def test_rocksdb_rows_count_their_records_and_the_database_sums_them(db):
    a, b = RocksRowChunks(SCHEMA, db), RocksRowChunks(SCHEMA, db)
    a.append(batch(0, 100))
    b.append(batch(100, 50))
    assert a.nbytes() == batch(0, 100).nbytes and db.held_bytes == 0        # pending, in memory
    a.take(np.array([0]))                                                   # written first
    assert a.nbytes() > 0 and db.held_bytes == a.nbytes()
    a.keep(np.arange(10))
    assert a.n == 10 and a.take(np.array([9, -1])).column(0).to_pylist() == [9, None]
    assert db.held_bytes == a.nbytes()
    a.close()
    b.clear()
    assert a.nbytes() == b.nbytes() == db.held_bytes == 0


def test_rocksdb_rows_gather_small_batches_into_one_record(db):
    rows = RocksRowChunks(SCHEMA, db)
    for i in range(100):
        rows.append(batch(i * 3, 3))
    assert db.held_bytes == 0 and rows.all().column(0).to_pylist() == list(range(300))
    big = batch(300, 1)
    while rows.nbytes() < RECORD_BYTES:           # reaching the record size writes them all
        rows.append(batch(rows.n, 5000))
    assert db.held_bytes == rows.nbytes() and len(rows._ids) == 1
    rows.append(big)
    got = rows.take(np.array([0, 299, rows.n - 1]))
    assert got.column(0).to_pylist() == [0, 299, 300] and len(rows._ids) == 2


def test_rocksdb_working_state_is_written_without_a_write_ahead_log(db):
    rows = RocksRowChunks(SCHEMA, db)
    rows.append(batch(0, 20_000))
    rows.take(np.array([0]))
    logs = [f for f in os.listdir(db.path) if f.endswith(".log")]
    assert db.held_bytes > 0
    assert logs and all(os.path.getsize(os.path.join(db.path, f)) == 0 for f in logs)
    assert rows.all().num_rows == 20_000


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=0, max_size=40),
       picks=st.lists(st.integers(-1, 200), max_size=30))
def test_a_take_over_many_chunks_gives_the_rows_of_one(sizes, picks):
    rows = RowChunks(SCHEMA)
    for n in sizes:
        rows.append(batch(rows.n, n))
    idx = np.array([p if p < rows.n else -1 for p in picks], np.int64)
    want = [None if i < 0 else int(i) for i in idx]
    got = rows.take(idx)
    assert got.schema == SCHEMA and got.column(0).to_pylist() == want
    assert got.column(1).to_pylist() == [None if i is None else f"v{i}" for i in want]


def test_rocksdb_take_over_several_records(db):
    rows = RocksRowChunks(SCHEMA, db)
    for i in range(3):
        rows.append(batch(i * 5000, 5000))         # each over RECORD_BYTES: a record each
    assert len(rows._ids) == 3
    idx = np.array([14_999, 0, -1, 7_000, 5_000, 2])
    assert rows.take(idx).column(0).to_pylist() == [14_999, 0, None, 7_000, 5_000, 2]
