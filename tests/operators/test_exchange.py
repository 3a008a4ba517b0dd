"""The hash exchange: stable, value-based partitioning, and parallel results equal serial ones."""
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

import heliosdb as hdb
from heliosdb.kernels import reference as ref
from heliosdb.operators.exchange import HashPartitioner, Partitioned

keys_int = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
keys_str = st.one_of(st.none(), st.text(max_size=8))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(keys_int, keys_str), min_size=1, max_size=40), n=st.integers(1, 7))
def test_partition_of_each_row_matches_reference_hash(rows, n):
    batch = pa.record_batch({"a": pa.array([r[0] for r in rows], pa.int64()),
                             "s": pa.array([r[1] for r in rows], pa.string())})
    parts = HashPartitioner(batch.schema, ["a", "s"], n, "x").partitions(batch)
    assert parts.tolist() == [h % n for h in ref.key_hash(rows)]


def test_subtasks_take_their_rows_in_order_and_lose_nothing():
    rng = np.random.default_rng(3)
    batch = pa.record_batch({"k": pa.array(rng.integers(0, 50, 1000)), "i": pa.array(np.arange(1000))})
    p = HashPartitioner(batch.schema, ["k"], 3, "x")
    parts, counts = p.assign(batch)
    pieces = [(i, Partitioned(batch, parts, i).resolve()) for i in range(3)]
    assert [piece.num_rows for _, piece in pieces] == counts.tolist()
    seen = np.concatenate([piece.column(1).to_numpy() for _, piece in pieces])
    assert sorted(seen.tolist()) == list(range(1000))
    for part, piece in pieces:
        idx = piece.column(1).to_numpy()
        assert (np.diff(idx) > 0).all()
        assert set(p.partitions(piece).tolist()) == {part}


def test_a_subtask_with_every_row_of_a_batch_gets_the_batch_itself():
    batch = pa.record_batch({"k": [1, 2, 3], "s": ["a", None, "c"]}).slice(1)
    parts = np.zeros(2, np.uint8)
    assert Partitioned(batch, parts, 0).resolve() is batch
    assert Partitioned(batch, np.array([1, 0], np.uint8), 0).resolve().to_pydict() == {"k": [3], "s": ["c"]}


def test_same_key_same_partition_in_a_sliced_batch():
    batch = pa.record_batch({"s": pa.array(["x", "y", "zz", None, "x"])})
    p = HashPartitioner(batch.schema, ["s"], 4, "x")
    whole = p.partitions(batch).tolist()
    assert p.partitions(batch.slice(2)).tolist() == whole[2:]


@pytest.mark.parametrize("parallelism", [2, 3, 5])
def test_parallel_window_equals_serial(parallelism):
    # 3 s of events, 1 s windows, 97 string keys: the union of the subtasks' windows is the
    # serial result, row for row.
    rng = np.random.default_rng(parallelism)
    n = 20_000
    t = pa.table({"ts": pa.array(np.sort(rng.integers(0, 3_000, n))),
                  "user": pa.array([f"u{i}" for i in rng.integers(0, 97, n)]),
                  "v": pa.array(rng.random(n))})

    def run(p):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=p, batch_size=1000))
        out = (env.from_arrow(t).key_by("user").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
               .aggregate(n=hdb.count(), s=hdb.sum("v")).collect())
        return out.sort_by([("window_start", "ascending"), ("user", "ascending")])

    serial, parallel = run(1), run(parallelism)
    assert serial.num_rows == 3 * 97
    assert parallel.equals(serial)


def test_set_parallelism_on_a_step_that_runs_once_is_refused():
    # map_batches / inspect run the user's Arrow function once, in order: no replicas.
    env = hdb.StreamEnvironment()
    with pytest.raises(hdb.PlanError, match="map_batches step, which runs once, in order"):
        env.from_iterable([{"x": 1}]).map_batches(lambda b: b).set_parallelism(2)
    with pytest.raises(hdb.PlanError, match="stateless step"):
        env.from_iterable([{"x": 1}]).inspect(print).set_parallelism(2)
