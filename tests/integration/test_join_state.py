"""Join state in a running job: reported in ``streaming_state_size_bytes`` (the job's total and
the step's own gauge) while rows wait, zero once the inputs end; over the state backend's
bound the job stops with a :class:`~heliosdb.StateLimitError` naming the join step, its size,
what it held and what to do, on the memory and on the RocksDB backend; and RocksDB keeps the
rows out of the bounded memory, so the same join that stops on memory runs there."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import heliosdb as hdb
from heliosdb.metrics import STATE_SIZE_BYTES, MetricsCollector
from heliosdb.operators.join import JoinOperator

N = 20_000


def _table(n: int = N, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"ts": 1_700_000_000_000 + np.arange(n, dtype=np.int64), "k": rng.integers(0, 100, n),
                     "v": rng.random(n)})


def _window_join(env, hold=None):
    left = env.from_arrow(_table()).with_batch_size(2_000)
    if hold is not None:
        left = left.inspect(hold)
    right = env.from_arrow(_table(seed=2)).with_batch_size(2_000)
    # one window of an hour: every row waits until the inputs end
    return (left.with_watermark("ts").join(right.with_watermark("ts"), on="k",
                                           window=hdb.TumblingWindow.of(timedelta(hours=1)))
            .name("bids-x-auctions"))


def test_join_state_is_reported_while_rows_wait_and_is_zero_at_the_end():
    # left's third batch waits until the test has read the metrics: rows of both sides wait in
    # the join's hour-long window meanwhile
    reached, release = threading.Event(), threading.Event()
    seen = [0]

    def hold(batch):
        seen[0] += 1
        if seen[0] == 3:
            reached.set()
            release.wait(60)

    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    out = hdb.sinks.memory()
    _window_join(env, hold).sink(out)
    handle = env.execute_async(name="join-state-size")
    try:
        assert reached.wait(60)
        (op,) = [o for o in handle._job.metrics.state_ops if isinstance(o, JoinOperator)]
        deadline = time.monotonic() + 30
        while op.state_size_bytes() < 4_000 * 8 * 2 and time.monotonic() < deadline:
            time.sleep(0.01)        # until the first two left batches (and some right) are in
        held = handle.metrics()[STATE_SIZE_BYTES]
        assert held >= op.state_size_bytes() > 0
        registry = CollectorRegistry()
        MetricsCollector(registry).add(handle._job.metrics)
        text = generate_latest(registry).decode()
        line = next(x for x in text.splitlines()
                    if x.startswith(STATE_SIZE_BYTES + "{") and 'operator="bids-x-auctions"' in x)
        assert float(line.rsplit(" ", 1)[1]) > 0
    finally:
        release.set()
    result = handle.wait()
    assert result.metrics[STATE_SIZE_BYTES] == 0 and op.state_size_bytes() == 0
    assert out.to_table().num_rows > 0


def _interval_join(env):
    left = env.from_arrow(_table()).with_batch_size(2_000).with_watermark("ts")
    right = env.from_arrow(_table(seed=2)).with_batch_size(2_000).with_watermark("ts")
    # rows wait an hour for their partners: until the inputs end
    return left.join(right, on="k", between=(timedelta(hours=-1), timedelta(hours=1))).name("bids-x-auctions")


BOUND = 100_000


# (a window join keeps its rows on disk with RocksDB: the last test)
@pytest.mark.parametrize("kind, backend", [("window", "memory"), ("interval", "memory"), ("interval", "rocksdb")])
def test_a_join_over_the_state_bound_stops_naming_the_step_and_the_fix(kind, backend, tmp_path):
    state = (hdb.StateBackend.memory(max_size_bytes=BOUND) if backend == "memory" else
             hdb.StateBackend.rocksdb(path=str(tmp_path), max_size_bytes=BOUND))
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1, state_backend=state))
    (_window_join if kind == "window" else _interval_join)(env).sink(hdb.sinks.memory())
    with pytest.raises(hdb.StateLimitError) as info:
        env.execute(name=f"join-over-{backend}")
    msg = str(info.value)
    assert info.value.step == "bids-x-auctions"
    assert msg.startswith("step 'bids-x-auctions': join state is ")
    assert f"over the {backend if backend == 'memory' else 'RocksDB'} backend's bound of 100,000 bytes" in msg
    assert ("rows in 1 panes" if kind == "window" else "right rows)") in msg and "a smaller window" in msg
    if backend == "memory":
        assert "raise StateBackend.memory(max_size_bytes=), use StateBackend.rocksdb(path=)" in msg
    else:
        assert "the rows are on disk" in msg and "raise StateBackend.rocksdb(max_size_bytes=)" in msg


def test_rocksdb_keeps_a_window_joins_rows_out_of_the_bounded_memory(tmp_path):
    # the window join that stops on 100 kB of memory runs in RocksDB with the same bound, and
    # gives the rows the unbounded memory backend gives
    expected_env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    expected = _window_join(expected_env).collect()
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1, state_backend=hdb.StateBackend.rocksdb(
        path=str(tmp_path), max_size_bytes=BOUND)))
    got = _window_join(env).collect()
    assert got.num_rows == expected.num_rows > 0
    key = ["ts", "ts_right", "k"]
    assert got.sort_by([(c, "ascending") for c in key]).equals(expected.sort_by([(c, "ascending") for c in key]))
