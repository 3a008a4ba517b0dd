"""The local executor: micro-batching by size and timeout, bounded channels, async jobs, errors,
and the fused stateless stage as explain() shows it.

No assertion here is about speed: slow sources and sinks are made slow on purpose, and the tests
check what reaches the sink (rows, batches, order) and what the metrics recorded.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import DataError, ExecutionError, HeliosError
from heliosdb.testing import wait_until

EVENTS = "streaming_events_processed_total"


# -- micro-batching --------------------------------------------------------------------------
def test_slow_iterable_is_cut_into_batches_by_timeout_and_delivers_every_record():
    # One record every ~30 ms, batch_timeout 10 ms, batch_size 100,000:
    #   rec0 --10ms--> flush | rec1 --10ms--> flush | ...   (size never reached)
    def slow_records():
        for i in range(8):
            time.sleep(0.03)
            yield {"i": i, "v": i * 0.5}

    batches = []
    cfg = hdb.StreamingConfig(batch_size=100_000, batch_timeout=timedelta(milliseconds=10))
    env = hdb.StreamEnvironment(cfg)
    env.from_iterable(slow_records()).sink(hdb.sinks.callback(batches.append))
    result = env.execute(name="slow-source")
    assert pa.Table.from_batches(batches).column("i").to_pylist() == list(range(8))
    assert len(batches) >= 2, "the timeout, not the size, must have cut the batches"
    assert result.metrics[EVENTS] == 8


def test_with_batch_timeout_on_the_source_overrides_the_config():
    def slow_records():
        for i in range(6):
            time.sleep(0.03)
            yield {"i": i}

    batches = []
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=100_000,
                                                    batch_timeout=timedelta(hours=1)))
    (env.from_iterable(slow_records()).with_batch_timeout(timedelta(milliseconds=10))
     .sink(hdb.sinks.callback(batches.append)))
    env.execute(name="slow-source-override")
    assert pa.Table.from_batches(batches).column("i").to_pylist() == list(range(6))
    assert len(batches) >= 2


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_fast_source_is_cut_into_batches_of_batch_size(batch_size):
    n = 250
    batches = []
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=batch_size))
    env.from_iterable({"i": i} for i in range(n)).sink(hdb.sinks.callback(batches.append))
    env.execute(name="by-size")
    assert all(0 < b.num_rows <= batch_size for b in batches)
    assert pa.Table.from_batches(batches).column("i").to_pylist() == list(range(n))


def test_idle_source_still_closes_windows_on_batch_timeout():
    # window 1 s, no out-of-orderness; the source yields t=0.1s, t=1.5s and then stalls until
    # the sink has seen the window [0, 1s) -- which the t=1.5s watermark closes:
    #   0.1s  1.5s  | (source idle ...)  | 2.5s
    #   [0,1s) closes here, while the source is idle, not when 2.5s arrives
    first_window = threading.Event()
    seen_while_idle = []

    def records():
        yield {"ts": 100, "k": 1}
        yield {"ts": 1_500, "k": 1}
        seen_while_idle.append(first_window.wait(timeout=10))
        yield {"ts": 2_500, "k": 1}

    def on_batch(batch):
        if batch.num_rows:
            first_window.set()
        out.append(batch)

    out = []
    cfg = hdb.StreamingConfig(batch_size=100_000, batch_timeout=timedelta(milliseconds=10),
                              parallelism=1)
    env = hdb.StreamEnvironment(cfg)
    (env.from_iterable(records()).key_by("k").window(hdb.TumblingWindow.of(1), time="ts")
     .aggregate(n=hdb.count()).sink(hdb.sinks.callback(on_batch)))
    env.execute(name="idle-close")
    assert seen_while_idle == [True]
    assert sorted(pa.Table.from_batches(out).column("n").to_pylist()) == [1, 1, 1]


# -- bounded channels and backpressure ---------------------------------------------------------
def test_slow_sink_with_small_buffer_blocks_the_upstream_channel():
    # buffer_size 10 rows, batches of 5: the channel to the sink holds two batches; the sink
    # sleeps on every batch, so the source must wait for room -> blocked time > 0.
    def slow_sink(batch):
        time.sleep(0.01)

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=5, buffer_size=10))
    env.from_arrow(pa.table({"a": np.arange(200)})).sink(hdb.sinks.callback(slow_sink))
    handle = env.execute_async(name="backpressure")
    result = handle.wait(timeout=60)
    blocked = handle.metrics()["blocked_s"]
    assert isinstance(blocked, dict) and blocked
    assert max(blocked.values()) > 0
    assert result.metrics[EVENTS] == 200


def test_large_buffer_with_fast_sink_delivers_everything_in_order():
    t = pa.table({"a": np.arange(5_000)})
    got = []
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=64, buffer_size=1_000_000))
    env.from_arrow(t).sink(hdb.sinks.callback(got.append))
    env.execute(name="no-backpressure")
    assert pa.Table.from_batches(got).equals(t)


def test_batch_larger_than_buffer_still_flows():
    # A channel always admits one batch, however large: batch 1,000 rows > buffer 10 rows.
    t = pa.table({"a": np.arange(3_000)})
    got = []
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1_000, buffer_size=10))
    env.from_arrow(t).filter(col("a") >= 0).sink(hdb.sinks.callback(got.append))
    env.execute(name="big-batch")
    assert pa.Table.from_batches(got).equals(t)


# -- execute_async -----------------------------------------------------------------------------
def test_execute_async_wait_returns_job_result():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=10))
    sink = hdb.sinks.memory()
    env.from_arrow(pa.table({"x": list(range(95))})).sink(sink)
    handle = env.execute_async(name="async-bounded")
    result = handle.wait(timeout=30)
    assert isinstance(result, hdb.JobResult)
    assert result.name == "async-bounded" == handle.name
    assert result.metrics[EVENTS] == 95
    assert handle.done
    assert sink.to_table()["x"].to_pylist() == list(range(95))


def test_stop_ends_an_unbounded_generator_job():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=10)))
    sink = hdb.sinks.memory()
    env.generate(rate=5_000).sink(sink)
    handle = env.execute_async(name="unbounded")
    assert wait_until(lambda: handle.metrics()[EVENTS] > 0), "the generator produced nothing"
    assert not handle.done
    handle.stop()
    result = handle.wait(timeout=30)
    assert handle.done
    assert isinstance(result, hdb.JobResult)
    out = sink.to_table()
    # In-flight batches finish and the sink flushes: it holds every event the source emitted.
    assert out.num_rows == result.metrics[EVENTS] > 0
    assert out.column_names == ["ts", "key", "value", "category"]


def test_stop_with_drain_emits_every_open_window():
    # 1 h windows on wall-clock event time never close by themselves during the test;
    # stop(drain=True) signals the end of input, so they are emitted with every event counted.
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=10)))
    sink = hdb.sinks.memory()
    (env.generate(rate=5_000, keys=5).key_by("key")
     .window(hdb.TumblingWindow.of(timedelta(hours=1)), time="ts")
     .aggregate(n=hdb.count()).sink(sink))
    handle = env.execute_async(name="drain")
    assert wait_until(lambda: handle.metrics()[EVENTS] > 0)
    handle.stop(drain=True)
    result = handle.wait(timeout=30)
    out = sink.to_table()
    assert out.num_rows > 0
    assert sum(out.column("n").to_pylist()) == result.metrics[EVENTS]


def test_wait_with_timeout_on_a_running_job_raises_timeout_error():
    env = hdb.StreamEnvironment()
    env.generate(rate=100).sink(hdb.sinks.memory())
    handle = env.execute_async(name="still-running")
    try:
        with pytest.raises(TimeoutError, match="still-running"):
            handle.wait(timeout=0.05)
    finally:
        handle.stop()
        handle.wait(timeout=30)


# -- errors ----------------------------------------------------------------------------------
def test_exception_in_map_batches_surfaces_as_execution_error_naming_the_step():
    def explode(batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows:
            raise ValueError("cannot parse row 3")
        return batch

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=4))
    (env.from_arrow(pa.table({"a": list(range(10))})).filter(col("a") >= 0)
     .map_batches(explode).name("parse-payload").sink(hdb.sinks.memory()))
    with pytest.raises(ExecutionError) as info:
        env.execute(name="user-error")
    err = info.value
    assert isinstance(err.__cause__, ValueError)
    assert "cannot parse row 3" in str(err)
    assert "parse-payload" in str(err), f"the message should name the user's step: {err}"


def test_exception_in_callback_sink_surfaces_as_execution_error_with_cause():
    def bad_sink(batch):
        raise RuntimeError("disk full")

    env = hdb.StreamEnvironment()
    env.from_arrow(pa.table({"a": [1, 2, 3]})).sink(hdb.sinks.callback(bad_sink)).name("archive")
    with pytest.raises(ExecutionError) as info:
        env.execute(name="sink-error")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "disk full" in str(info.value)
    assert "archive" in str(info.value)


def test_map_batches_returning_the_wrong_type_is_an_execution_error_naming_the_step():
    def not_arrow(batch):
        return batch if batch.num_rows == 0 else batch.to_pydict()

    env = hdb.StreamEnvironment()
    (env.from_arrow(pa.table({"a": [1]})).map_batches(not_arrow).name("to-dict")
     .sink(hdb.sinks.memory()))
    with pytest.raises(ExecutionError, match="to-dict"):
        env.execute(name="wrong-type")


@pytest.mark.parametrize("parallelism", [1, 3])
def test_null_time_value_raises_data_error_as_itself(parallelism):
    t = pa.table({"ts": pa.array([1_000, None, 3_000], pa.int64()), "k": [1, 2, 3]})
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism))
    s = (env.from_arrow(t).key_by("k").window(hdb.TumblingWindow.of(1), time="ts")
         .aggregate(n=hdb.count()).name("per-second"))
    with pytest.raises(DataError) as info:
        s.collect()
    assert type(info.value) is DataError, "an engine error is raised as itself, not wrapped"
    msg = str(info.value)
    assert "per-second" in msg and "'ts'" in msg and "null" in msg


def test_timestamp_out_of_range_raises_data_error():
    # 10**15 ms is year ~33,658: beyond int64 nanoseconds (year 2262).
    t = pa.table({"ts": pa.array([0, 10**15], pa.int64()), "k": [1, 1]})
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    s = (env.from_arrow(t).key_by("k").window(hdb.TumblingWindow.of(1), time="ts")
         .aggregate(n=hdb.count()).name("far-future"))
    with pytest.raises(DataError, match="far-future"):
        s.collect()


def test_job_stops_after_an_error_and_later_jobs_run_normally():
    env = hdb.StreamEnvironment()
    env.from_arrow(pa.table({"a": [1]})).map_batches(
        lambda b: b if b.num_rows == 0 else 1 / 0).sink(hdb.sinks.memory())
    with pytest.raises(HeliosError):
        env.execute(name="fails")
    assert hdb.StreamEnvironment().from_arrow(pa.table({"a": [1, 2]})).collect().num_rows == 2


# -- fusion in explain() -----------------------------------------------------------------------
def _fused_lines(plan) -> list:
    return [line for line in str(plan).splitlines() if "fused kernel" in line]


def test_explain_shows_one_fused_kernel_for_filter_with_columns_select():
    env = hdb.StreamEnvironment()
    s = (env.from_arrow(pa.table({"a": [1.0, 2.0], "b": [1, 2], "c": ["x", "y"]}))
         .filter(col("a") > 0).name("pos")
         .with_columns(a2=col("a") * 2).name("double")
         .select("a2", "b").name("pick"))
    lines = _fused_lines(s.explain())
    assert len(lines) == 1, str(s.explain())
    assert "pos" in lines[0] and "double" in lines[0] and "pick" in lines[0]
    # and the fused chain computes what the three steps say
    assert s.collect().to_pydict() == {"a2": [2.0, 4.0], "b": [1, 2]}


def test_explain_long_stateless_chain_is_still_one_fused_kernel():
    env = hdb.StreamEnvironment()
    s = env.from_arrow(pa.table({"a": [1, 2, 3, 4]}))
    for i in range(4):
        s = s.filter(col("a") > i - 10).with_columns(**{f"c{i}": col("a") + i})
    s = s.select("a", "c3")
    assert len(_fused_lines(s.explain())) == 1
    assert s.collect().to_pydict() == {"a": [1, 2, 3, 4], "c3": [4, 5, 6, 7]}


def test_map_batches_splits_the_chain_into_two_fused_kernels():
    env = hdb.StreamEnvironment()
    s = (env.from_arrow(pa.table({"a": [1, 2, 3]})).filter(col("a") > 1)
         .map_batches(lambda b: b).with_columns(b=col("a") * 10).select("b"))
    assert len(_fused_lines(s.explain())) == 2
    assert s.collect().to_pydict() == {"b": [20, 30]}


def test_fusion_disabled_by_environment_gives_one_kernel_per_step(monkeypatch):
    monkeypatch.setenv("HELIOSDB_FUSION", "0")
    env = hdb.StreamEnvironment()
    s = (env.from_arrow(pa.table({"a": [1.0, 2.0], "b": [1, 2]}))
         .filter(col("a") > 1).with_columns(a2=col("a") * 2).select("a2"))
    assert len(_fused_lines(s.explain())) == 3
    assert s.collect().to_pydict() == {"a2": [4.0]}


def test_env_explain_shows_the_sinks_pipeline():
    env = hdb.StreamEnvironment()
    (env.from_arrow(pa.table({"a": [1]})).filter(col("a") > 0).with_columns(b=col("a") + 1)
     .sink(hdb.sinks.memory()))
    plan = env.explain()
    assert len(_fused_lines(plan)) == 1
    assert "memory sink" in str(plan)
