"""The micro-batcher, without a job: batches by size, by timeout from the first row's ingest,
and what is left after a cut."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from heliosdb.runtime.batcher import Batcher

HOUR_NS = 3600 * 10**9


def rows(a: int, b: int) -> pa.RecordBatch:
    return pa.record_batch({"i": np.arange(a, b)})


def collect():
    out = []
    return out, (lambda batch, ingest: out.append((batch.column(0).to_pylist(), ingest)))


def test_rows_are_cut_into_batches_of_size_across_pieces_in_order():
    out, emit = collect()
    b = Batcher(4, HOUR_NS, emit)
    now = time.time_ns()
    b.add(rows(0, 3), now)
    b.add(rows(3, 10), now)
    assert [r for r, _ in out] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert b.rows == 2
    b.flush()
    assert [r for r, _ in out][-1] == [8, 9] and b.rows == 0 and not b.pending
    b.flush()                                   # nothing held: nothing emitted
    assert len(out) == 3


def test_rows_left_after_a_cut_keep_the_ingest_of_the_first_row_held():
    out, emit = collect()
    b = Batcher(2, HOUR_NS, emit)
    b.add(rows(0, 3), 111)
    b.add(rows(3, 4), 222)
    assert out == [([0, 1], 111), ([2, 3], 111)]
    b.add(rows(4, 5), 333)                      # pending was empty: a new first row
    b.flush()
    assert out[-1] == ([4], 333)


def test_timeout_runs_from_the_first_rows_ingest_not_from_when_it_arrived():
    out, emit = collect()
    timeout = 50 * 10**6
    b = Batcher(1000, timeout, emit)
    b.add(rows(0, 1), time.time_ns() - 2 * timeout)     # waited longer than the timeout already
    assert b.due(time.monotonic_ns())
    fresh = Batcher(1000, HOUR_NS, emit)
    fresh.add(rows(0, 1), time.time_ns())
    assert not fresh.due(time.monotonic_ns())
    assert not Batcher(1000, 0, emit).due(time.monotonic_ns())   # nothing held, never due
