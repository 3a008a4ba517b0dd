"""Regressions for problems found in review: explain() side effects, string literal outputs,
files left behind by a failed job, metrics read while a job runs."""
import os
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb import col, lit


def test_explain_after_execute_keeps_memory_sink_results():
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    env.from_iterable([{"x": 1}, {"x": 2}]).sink(out)
    env.execute(name="explain-keeps")
    env.explain()
    assert out.to_table().num_rows == 2


def test_explain_creates_no_output_folder(tmp_path):
    env = hdb.StreamEnvironment()
    target = tmp_path / "not-yet"
    env.from_iterable([{"x": 1}]).sink(hdb.sinks.parquet(str(target)))
    assert "parquet sink" in str(env.explain())
    assert not target.exists()


def test_string_literal_output_column_is_broadcast():
    env = hdb.StreamEnvironment()
    rows = [{"x": 1}, {"x": 5}, {"x": 7}]
    out = (env.from_iterable(rows).filter(col("x") > 2)
           .with_columns(tag=lit("big"), is_a=lit("a") == lit("a")).collect())
    assert out.to_pydict() == {"x": [5, 7], "tag": ["big", "big"], "is_a": [True, True]}


def test_failed_job_lists_no_unfinished_parquet_file(tmp_path):
    seen = []

    def explode(batch):
        seen.append(batch.num_rows)
        if sum(seen) > 10:          # the second real batch fails (empty ones type the plan)
            raise ValueError("boom")
        return batch

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=10))
    sink = hdb.sinks.parquet(str(tmp_path / "out"), rows_per_file=10**9)
    env.from_iterable([{"x": i} for i in range(50)]).map_batches(explode).name("explode").sink(sink)
    with pytest.raises(hdb.ExecutionError, match="explode"):
        env.execute(name="fails")
    for path in sink.files:                 # whatever is listed is a complete Parquet file
        pq.read_table(path)
    assert sink.files == []


def test_metrics_can_be_read_while_windows_open_and_close():
    env = hdb.StreamEnvironment()
    (env.generate(rate=200_000, duration=timedelta(seconds=2), keys=5_000)
     .key_by("key").window(hdb.TumblingWindow.of(timedelta(milliseconds=20)), time="ts")
     .aggregate(n=hdb.count()).sink(hdb.sinks.callback(lambda b: None)))
    handle = env.execute_async(name="metrics-race")
    reads = 0
    while not handle.done:
        m = handle.metrics()                # must never raise while the window thread works
        assert m["streaming_state_size_bytes"] >= 0
        reads += 1
    result = handle.wait()
    assert reads > 10
    assert result.metrics["events_out"] > 0


def test_planning_calls_a_map_batches_function_once_to_infer_its_schema():
    calls = []

    def tag(batch):
        calls.append(batch.num_rows)
        return batch

    env = hdb.StreamEnvironment()
    out = (env.from_iterable([{"x": 1}, {"x": 2}]).map_batches(tag)
           .filter(col("x") > 1).with_columns(y=col("x") * 2).collect())
    assert out.to_pydict() == {"x": [2], "y": [4]}
    assert calls == [0, 2]          # one empty batch to type the plan, then the data
