"""Mistakes at the API raise a HeliosError subclass whose message names the step and the column.

Steps are named with ``.name()`` so each test can check the message points at the step the user
wrote, not at an internal stage.
"""
from __future__ import annotations

import re
from datetime import timedelta

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import (ConfigError, DataError, ExecutionError, HeliosError, PlanError,
                             SchemaError)


@pytest.fixture
def src():
    env = hdb.StreamEnvironment()
    t = pa.table({"ts": pa.array([1, 2], pa.int64()), "value": [1.0, 2.0], "key": ["a", "b"],
                  "ts_float": [1.0, 2.0], "ts_text": ["1", "2"]})
    return env.from_arrow(t)


def _window(s, time="ts", keys=("key",), name="per-key", **aggs):
    aggs = aggs or {"n": hdb.count()}
    return (s.key_by(*keys).window(hdb.TumblingWindow.of(timedelta(seconds=1)), time=time)
            .aggregate(**aggs).name(name))


def test_every_error_class_derives_from_helios_error():
    for cls in (ConfigError, SchemaError, PlanError, ExecutionError, DataError):
        assert issubclass(cls, HeliosError)


# -- unknown columns -------------------------------------------------------------------------
def test_unknown_column_in_filter_names_step_and_column_with_hint(src):
    s = src.filter(col("valeu") > 0.2).name("keep-big")
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'keep-big'" in msg and "'valeu'" in msg
    assert "you probably meant 'value'" in msg


def test_unknown_column_in_with_columns_names_step_and_column_with_hint(src):
    s = src.with_columns(v2=col("vlue") * 2.0).name("double-it")
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'double-it'" in msg and "'vlue'" in msg
    assert "you probably meant 'value'" in msg


def test_unknown_column_in_select_names_step_and_column_with_hint(src):
    s = src.select("kye", "value").name("pick")
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'pick'" in msg and "'kye'" in msg
    assert "you probably meant 'key'" in msg


def test_unknown_column_without_a_close_match_lists_the_columns_and_no_hint(src):
    s = src.filter(col("zzzzzz") > 0).name("odd-filter")
    with pytest.raises(SchemaError) as info:
        s.explain()
    msg = str(info.value)
    assert "'odd-filter'" in msg and "'zzzzzz'" in msg
    assert "probably meant" not in msg
    assert "'value'" in msg  # the input's columns are listed


def test_unknown_column_in_a_later_fused_step_names_that_step(src):
    # filter -> with_columns fuse into one kernel; the error must still point at the second step.
    s = (src.filter(col("value") > 0).name("first-ok")
         .with_columns(v2=col("valu") * 2).name("second-bad"))
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'second-bad'" in msg and "'valu'" in msg
    assert "first-ok" not in msg


def test_unknown_column_error_comes_from_schema_without_running(src):
    s = src.with_columns(v2=col("vlue") * 2.0).name("lazy-check")
    with pytest.raises(SchemaError, match=re.escape("'lazy-check'")):
        s.schema


def test_unknown_column_error_is_catchable_as_helios_error(src):
    with pytest.raises(HeliosError):
        src.filter(col("nope") > 1).name("catch-all").collect()


# -- time columns ----------------------------------------------------------------------------
@pytest.mark.parametrize("column, typ", [("ts_text", "string"), ("ts_float", "double")])
def test_window_on_non_time_column_names_step_column_and_type(src, column, typ):
    s = _window(src, time=column, name="bad-time")
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "bad-time" in msg and f"'{column}'" in msg and typ in msg
    assert "int64 epoch milliseconds or a timestamp" in msg


@pytest.mark.parametrize("column", ["ts_text", "ts_float"])
def test_watermark_on_non_time_column_names_step_and_column(src, column):
    s = src.with_watermark(time=column, max_out_of_orderness=timedelta(seconds=1)).name("event-time")
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'event-time'" in msg and f"'{column}'" in msg


def test_window_on_missing_time_column_names_step_and_column(src):
    with pytest.raises(SchemaError) as info:
        _window(src, time="tss", name="no-such-time").collect()
    msg = str(info.value)
    assert "no-such-time" in msg and "'tss'" in msg


def test_window_without_a_time_column_runs_on_processing_time(src):
    # Neither window(time=) nor an upstream with_watermark: the window uses arrival time.
    s = (src.key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=1)))
         .aggregate(n=hdb.count()).name("timeless"))
    assert "on processing time" in str(s.explain())
    assert sum(s.collect()["n"].to_pylist()) == src.collect().num_rows


def test_window_time_defaults_to_upstream_watermark_column(src):
    # The positive counterpart of the error above: with_watermark supplies the time column.
    s = (src.with_watermark(time="ts").key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=1)))
         .aggregate(n=hdb.count()))
    assert s.collect().num_rows == 2


# -- aggregates and keys ---------------------------------------------------------------------
@pytest.mark.parametrize("agg", [hdb.sum, hdb.min, hdb.max, hdb.mean], ids=["sum", "min", "max", "mean"])
def test_numeric_aggregate_on_string_column_names_step_and_column(src, agg):
    s = _window(src, name="agg-step", out=agg("key"))
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'agg-step'" in msg and "'key'" in msg and "string" in msg
    assert "count()" in msg  # the fix


def test_aggregate_on_unknown_column_names_step_and_column(src):
    with pytest.raises(SchemaError) as info:
        _window(src, name="agg-missing", out=hdb.sum("valeu")).collect()
    msg = str(info.value)
    assert "'agg-missing'" in msg and "'valeu'" in msg and "you probably meant 'value'" in msg


def test_key_by_unknown_column_names_step_and_column(src):
    s = _window(src, keys=("kee",), name="by-kee")
    with pytest.raises(SchemaError) as info:
        s.collect()
    msg = str(info.value)
    assert "'by-kee'" in msg and "'kee'" in msg


@pytest.mark.parametrize("args", [(), (1,), ("key", "key")], ids=["none", "not-a-name", "twice"])
def test_key_by_bad_arguments_raise_plan_error(src, args):
    with pytest.raises(PlanError, match="key_by"):
        src.key_by(*args)


def test_aggregate_output_name_clashing_with_key_raises_schema_error(src):
    with pytest.raises(SchemaError, match="key"):
        src.key_by("key").window(hdb.TumblingWindow.of(1), time="ts").aggregate(key=hdb.count())


def test_aggregate_needs_aggregate_specs(src):
    w = src.key_by("key").window(hdb.TumblingWindow.of(1), time="ts")
    with pytest.raises(PlanError, match="total"):
        w.aggregate(total="value")
    with pytest.raises(PlanError):
        w.aggregate()


def test_window_needs_a_window_spec(src):
    with pytest.raises(PlanError, match="TumblingWindow"):
        src.key_by("key").window(timedelta(seconds=1), time="ts")


@pytest.mark.parametrize("size", [0, -1, timedelta(0)])
def test_tumbling_window_of_non_positive_size_is_a_config_error(size):
    with pytest.raises(ConfigError, match="positive"):
        hdb.TumblingWindow.of(size)


# -- filter and stateless steps ----------------------------------------------------------------
@pytest.mark.parametrize("predicate", [True, "value > 0", None], ids=["bool", "string", "none"])
def test_filter_with_a_non_expression_raises_plan_error(src, predicate):
    # (a function of a record is accepted: see tests/pyfunc)
    with pytest.raises(PlanError) as info:
        src.filter(predicate)
    msg = str(info.value)
    assert "filter()" in msg and "col('value') > 0.2" in msg


def test_filter_with_a_non_boolean_expression_names_step(src):
    with pytest.raises(SchemaError) as info:
        src.filter(col("value") * 2).name("not-bool").collect()
    msg = str(info.value)
    assert "'not-bool'" in msg and "boolean" in msg


def test_arithmetic_on_a_string_column_names_step_and_column(src):
    with pytest.raises(SchemaError) as info:
        src.with_columns(x=col("key") * 2).name("math-on-text").collect()
    msg = str(info.value)
    assert "'math-on-text'" in msg and 'col("key")' in msg


def test_expression_has_no_truth_value():
    with pytest.raises(TypeError, match="&"):
        bool(col("a") > 1)


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, param", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=-5), "batch_size"),
    (dict(batch_size=1.5), "batch_size"),
    (dict(batch_size=True), "batch_size"),
    (dict(buffer_size=0), "buffer_size"),
    (dict(parallelism=0), "parallelism"),
    (dict(parallelism=-2), "parallelism"),
    (dict(batch_timeout=timedelta(0)), "batch_timeout"),
    (dict(batch_timeout=-0.5), "batch_timeout"),
    (dict(batch_timeout="100ms"), "batch_timeout"),
    (dict(state_backend="memory"), "state_backend"),
])
def test_invalid_streaming_config_names_the_parameter(kwargs, param):
    with pytest.raises(ConfigError) as info:
        hdb.StreamingConfig(**kwargs)
    msg = str(info.value)
    assert f"{param}=" in msg and repr(next(iter(kwargs.values()))) in msg


def test_invalid_state_backend_size_is_a_config_error():
    with pytest.raises(ConfigError, match="max_size_bytes"):
        hdb.StateBackend.memory(max_size_bytes=0)


def test_environment_rejects_a_dict_config():
    with pytest.raises(ConfigError, match="StreamingConfig"):
        hdb.StreamEnvironment({"batch_size": 3})


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_with_batch_size_rejects_non_positive_integers(src, n):
    with pytest.raises(ConfigError, match=re.escape(repr(n))):
        src.with_batch_size(n)


def test_with_batch_size_applies_only_to_a_source(src):
    with pytest.raises(PlanError, match="source"):
        src.filter(col("value") > 0).with_batch_size(10)


# -- step and job names -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "has space", "-leading-dash", "_leading", "a/b", "x" * 129,
                                 "ünïcode", 3, None])
def test_invalid_step_name_is_a_config_error_naming_it(src, bad):
    with pytest.raises(ConfigError) as info:
        src.filter(col("value") > 0).name(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("good", ["a", "step-1", "Step_2.v3", "9lives", "x" * 128])
def test_valid_step_names_are_accepted(src, good):
    s = src.filter(col("value") > 0).name(good)
    assert good in str(s.explain())


def test_two_steps_with_the_same_name_raise_plan_error(src):
    s = (src.filter(col("value") > 0).name("same")
         .filter(col("value") > 1).name("same"))
    with pytest.raises(PlanError, match="'same'"):
        s.collect()


def test_invalid_job_name_is_a_config_error():
    env = hdb.StreamEnvironment()
    env.from_arrow(pa.table({"a": [1]})).sink(hdb.sinks.memory())
    with pytest.raises(ConfigError, match="job name"):
        env.execute(name="bad job")


def test_execute_without_sinks_raises_plan_error():
    env = hdb.StreamEnvironment()
    env.from_arrow(pa.table({"a": [1]}))
    with pytest.raises(PlanError, match="sink"):
        env.execute()


def test_collect_on_an_unbounded_generator_raises_plan_error():
    env = hdb.StreamEnvironment()
    with pytest.raises(PlanError, match="bounded"):
        env.generate(rate=100).collect()


def test_sink_needs_a_sink_spec(src):
    with pytest.raises(PlanError, match="sink"):
        src.sink(print)
