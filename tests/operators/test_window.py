"""Keyed tumbling-window aggregation, end to end, against a DuckDB oracle.

Every test runs a real pipeline (source -> [filter/with_columns] -> key_by -> window ->
aggregate) and compares its rows, sorted, with the same aggregation computed by DuckDB over the
same events (SQL null semantics: COUNT(*) counts rows, COUNT(x)/SUM/MIN/MAX/AVG skip nulls, an
all-null group gives NULL).  The oracle assigns windows with numpy's floor modulo, so
``start = t - t mod size`` holds for times before 1970 as well.
"""
from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Dict, List, Optional, Sequence, Tuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb import col

MS = 1_000_000  # ns per ms
S = 1_000 * MS
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")
LATE = "streaming_late_events_total"

ALL_AGGS = (("n", "count", None), ("nv", "count", "v"), ("total", "sum", "v"),
            ("lo", "min", "v"), ("hi", "max", "v"), ("avg", "mean", "v"))

_job_ids = iter(range(10**9))


# -------------------------------------------------------------------------------------------
# Oracle and helpers
# -------------------------------------------------------------------------------------------
def _time_ns(arr: pa.ChunkedArray) -> np.ndarray:
    """Event times as int64 ns: int64 columns are epoch ms, timestamps carry their unit."""
    t = arr.type
    if pat.is_timestamp(t):
        factor = {"s": S, "ms": MS, "us": 1_000, "ns": 1}[t.unit]
        return arr.cast(pa.int64()).to_numpy() * factor
    return arr.to_numpy() * MS


def _agg_sql(kind: str, column: Optional[str], schema: pa.Schema) -> str:
    if kind == "count":
        return "COUNT(*)" if column is None else f'COUNT("{column}")'
    c = f'"{column}"'
    is_float = pat.is_floating(schema.field(column).type)
    if kind == "sum":
        return f"CAST(SUM({c}) AS {'DOUBLE' if is_float else 'BIGINT'})"
    if kind == "mean":
        return f"AVG({c})"
    return f"{kind.upper()}({c})"


def oracle(table: pa.Table, keys: Sequence[str], time: str, size_ns: int,
           aggs: Sequence[Tuple[str, str, Optional[str]]]) -> List[tuple]:
    """(window_start ns, window_end ns, *keys, *aggs) rows computed by DuckDB."""
    ts = _time_ns(table.column(time))
    starts = ts - np.mod(ts, size_ns)
    used = list(dict.fromkeys(list(keys) + [c for _, _, c in aggs if c]))
    events = table.select(used).append_column("__ws", pa.array(starts, pa.int64()))
    key_sql = ", ".join(f'"{k}"' for k in keys)
    agg_sql = ", ".join(_agg_sql(kind, c, table.schema) for _, kind, c in aggs)
    con = duckdb.connect()
    con.register("events", events)
    rows = con.execute(
        f"SELECT __ws, __ws + {size_ns}, {key_sql}, {agg_sql} FROM events "
        f"GROUP BY __ws, {key_sql}"
    ).fetchall()
    con.close()
    return [tuple(r) for r in rows]


def engine_rows(out: pa.Table) -> List[tuple]:
    """The engine's rows with window bounds as int64 ns, like the oracle's."""
    cols = [out.column(0).cast(pa.int64()).to_pylist(), out.column(1).cast(pa.int64()).to_pylist()]
    cols += [out.column(i).to_pylist() for i in range(2, out.num_columns)]
    return list(zip(*cols))


def _sort_value(v):
    if v is None:
        return (2, 0)
    if isinstance(v, float) and math.isnan(v):
        return (1, 0)
    return (0, v)


def assert_same_rows(got: List[tuple], expected: List[tuple], n_group_cols: int) -> None:
    """Sort both sides by (window, keys), then compare; floats to 1e-9 relative, NaN == NaN."""
    def order(rows):
        return sorted(rows, key=lambda r: tuple(_sort_value(v) for v in r[:n_group_cols]))

    got, expected = order(got), order(expected)
    assert len(got) == len(expected), f"{len(got)} rows, expected {len(expected)}"
    for g, e in zip(got, expected):
        assert len(g) == len(e)
        for a, b in zip(g, e):
            if isinstance(b, float) and math.isnan(b):
                assert isinstance(a, float) and math.isnan(a), (g, e)
            elif isinstance(b, float) or isinstance(a, float):
                assert a is not None and b is not None and a == pytest.approx(b, rel=1e-9, abs=1e-12), (g, e)
            else:
                assert a == b, (g, e)


def _aggs(spec: Sequence[Tuple[str, str, Optional[str]]]) -> Dict[str, hdb.AggSpec]:
    return {name: hdb.AggSpec(kind, c) for name, kind, c in spec}


def run_window(table: pa.Table, keys: Sequence[str], size, aggs=ALL_AGGS, time: str = "ts",
               config: Optional[hdb.StreamingConfig] = None, watermark=None,
               batch_size: Optional[int] = None, prepare=None) -> Tuple[pa.Table, dict]:
    """Run source -> [prepare] -> [with_watermark] -> key_by -> window -> aggregate; (out, metrics)."""
    env = hdb.StreamEnvironment(config)
    s = env.from_arrow(table)
    if batch_size is not None:
        s = s.with_batch_size(batch_size)
    if prepare is not None:
        s = prepare(s)
    if watermark is not None:
        s = s.with_watermark(time=time, max_out_of_orderness=watermark)
    sink = hdb.sinks.memory()
    (s.key_by(*keys).window(hdb.TumblingWindow.of(size), time=time)
     .aggregate(**_aggs(aggs)).sink(sink))
    result = env.execute(name=f"window-test-{next(_job_ids)}")
    return sink.to_table(), result.metrics


def check(table: pa.Table, keys: Sequence[str], size, aggs=ALL_AGGS, **kw) -> pa.Table:
    """Run the pipeline and assert it matches the oracle over all events; returns the output."""
    size_ns = hdb.TumblingWindow.of(size).size_ns
    out, metrics = run_window(table, keys, size, aggs, **kw)
    assert metrics[LATE] == 0
    time = kw.get("time", "ts")
    assert_same_rows(engine_rows(out), oracle(table, keys, time, size_ns, aggs), 2 + len(keys))
    return out


def random_events(n: int, seed: int, span_ms: int, keys=("a", "b", "c", None),
                  null_rate: float = 0.15) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, span_ms, n)).astype(np.int64) + 1_700_000_000_000
    k = [keys[i] for i in rng.integers(0, len(keys), n)]
    v = rng.normal(size=n)
    vmask = rng.random(n) < null_rate
    return pa.table({
        "ts": pa.array(ts, pa.int64()),
        "k": pa.array(k, pa.string()),
        "v": pa.array(v, pa.float64(), mask=vmask),
    })


# -------------------------------------------------------------------------------------------
# Window sizes and alignment
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [
    timedelta(milliseconds=1), timedelta(seconds=1), timedelta(seconds=7), timedelta(hours=1),
], ids=["1ms", "1s", "7s", "1h"])
def test_window_sizes_match_oracle(size):
    # 3,000 events over ~3 hours of event time, ordered; keys a/b/c/null, 15% null values.
    # 1ms:  |.|.|.|.|  ~ one event per window        7s: windows not dividing a minute
    # 1s:   |...|...|  several events per window     1h: |.........|.........|..| 4 windows
    t = random_events(3_000, seed=1, span_ms=3 * 3_600_000 + 123)
    check(t, ["k"], size)


def test_output_columns_are_window_bounds_then_keys_then_aggregates_in_given_order():
    # ts(ms): 0   400  1200      window 1 s
    #         [0, 1000) [1000, 2000)
    t = pa.table({"ts": [0, 400, 1200], "id": [7, 7, 8], "region": ["eu", "eu", "us"],
                  "v": [1.5, 2.5, 4.0], "q": [1, 2, 3]})
    aggs = (("hi", "max", "v"), ("n", "count", None), ("avg", "mean", "q"),
            ("lo", "min", "q"), ("sq", "sum", "q"), ("sv", "sum", "v"))
    out = check(t, ["id", "region"], timedelta(seconds=1), aggs)
    assert out.column_names == ["window_start", "window_end", "id", "region",
                                "hi", "n", "avg", "lo", "sq", "sv"]
    types = {f.name: f.type for f in out.schema}
    assert types["window_start"] == WINDOW_TYPE
    assert types["window_end"] == WINDOW_TYPE
    assert types["id"] == pa.int64() and types["region"] == pa.string()
    assert types["hi"] == pa.float64() and types["n"] == pa.int64()
    assert types["avg"] == pa.float64()
    assert types["lo"] == pa.int64() and types["sq"] == pa.int64()
    assert types["sv"] == pa.float64()


@pytest.mark.parametrize("size_s", [1, 7, 3_600])
def test_negative_timestamps_align_to_epoch(size_s):
    # Times before 1970 floor towards -inf, never towards zero:
    #   -7001ms  -7000ms  -1ms | 0ms  6999ms  7000ms
    #   window 7 s:  [-14s,-7s) [-7s,0) | [0,7s) [7s,14s)
    t = pa.table({"ts": pa.array([-7001, -7000, -6999, -1, 0, 1, 6999, 7000, -3_600_001,
                                  -86_400_000 * 365], pa.int64()),
                  "k": [1, 1, 1, 1, 1, 1, 1, 1, 2, 2],
                  "v": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]})
    # The rows are out of order by up to a year, so the watermark bound must cover that.
    out = check(t, ["k"], timedelta(seconds=size_s), watermark=timedelta(days=366))
    size_ns = size_s * S
    starts = out.column("window_start").cast(pa.int64()).to_numpy()
    assert (np.mod(starts, size_ns) == 0).all(), "every window starts at a multiple of its size"
    assert (out.column("window_end").cast(pa.int64()).to_numpy() - starts == size_ns).all()


def test_negative_time_row_lands_in_window_containing_it():
    # -1ms with a 7 s window belongs to [-7s, 0), not to [0, 7s):
    #   -7s ........ -1ms | 0
    #   [------ w ------)  |
    t = pa.table({"ts": pa.array([-1], pa.int64()), "k": [1], "v": [1.0]})
    out, _ = run_window(t, ["k"], timedelta(seconds=7))
    assert out.column("window_start").cast(pa.int64()).to_pylist() == [-7 * S]
    assert out.column("window_end").cast(pa.int64()).to_pylist() == [0]


@pytest.mark.parametrize("years_ms", [
    -2_208_988_800_000,   # 1900-01-01
    4_102_444_800_000,    # 2100-01-01
    7_258_118_400_000,    # 2200-01-01
], ids=["1900", "2100", "2200"])
@pytest.mark.parametrize("size", [timedelta(seconds=7), timedelta(hours=1)], ids=["7s", "1h"])
def test_timestamps_decades_from_epoch_align_to_epoch(years_ms, size):
    # Around a date far from 1970, e.g. 2200-01-01 +- 3 h:
    #   ... | 7 s or 1 h windows aligned to 1970-01-01, not to the first event | ...
    rng = np.random.default_rng(abs(years_ms) % 1000)
    ts = np.sort(years_ms + rng.integers(-3 * 3_600_000, 3 * 3_600_000, 500))
    t = pa.table({"ts": pa.array(ts, pa.int64()),
                  "k": pa.array(rng.integers(0, 3, 500), pa.int64()),
                  "v": pa.array(rng.random(500))})
    check(t, ["k"], size)


# -------------------------------------------------------------------------------------------
# Time column types
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ttype", [pa.timestamp("us"), pa.timestamp("ns"),
                                   pa.timestamp("ns", tz="UTC"), pa.timestamp("ms", tz="UTC")],
                         ids=["us", "ns", "ns-utc", "ms-utc"])
def test_timestamp_time_columns_carry_their_unit(ttype):
    # The same instants as int64 ms, written in the column's own unit:
    #   1_700_000_000_000 ms ... + 10 s, window 1 s  ->  ~10 windows
    rng = np.random.default_rng(3)
    ms = np.sort(1_700_000_000_000 + rng.integers(0, 10_000, 400)).astype(np.int64)
    per_ms = {"ms": 1, "us": 1_000, "ns": 1_000_000}[ttype.unit]
    sub_ms = rng.integers(0, per_ms, 400) if per_ms > 1 else np.zeros(400, np.int64)
    ts = pa.array(ms * per_ms + sub_ms, pa.int64()).cast(ttype)
    t = pa.table({"ts": ts, "k": pa.array(rng.integers(0, 4, 400)), "v": pa.array(rng.random(400))})
    out = check(t, ["k"], timedelta(seconds=1))
    as_ms = pa.table({"ts": pa.array(ms), "k": t["k"], "v": t["v"]})
    assert_same_rows(engine_rows(out), engine_rows(run_window(as_ms, ["k"], timedelta(seconds=1))[0]), 3)


def test_int64_time_column_is_epoch_milliseconds():
    # ts=999 ms and ts=1000 ms fall in different 1 s windows; as seconds they would not.
    #   [0, 1000ms): 999      [1000ms, 2000ms): 1000
    t = pa.table({"ts": pa.array([999, 1000], pa.int64()), "k": [0, 0], "v": [1.0, 2.0]})
    out = check(t, ["k"], timedelta(seconds=1))
    assert sorted(out.column("window_start").cast(pa.int64()).to_pylist()) == [0, S]


def test_sub_millisecond_window_on_nanosecond_timestamps():
    # window 250 us on timestamp[ns]: 0ns 249_999ns | 250_000ns | 1_000_000ns
    t = pa.table({"ts": pa.array([0, 249_999, 250_000, 1_000_000, 999_999], pa.int64()).cast(pa.timestamp("ns")),
                  "k": ["x"] * 5, "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    # 999_999 ns arrives after 1_000_000 ns: a 1 us bound keeps it on time.
    check(t, ["k"], timedelta(microseconds=250), watermark=timedelta(microseconds=1))


# -------------------------------------------------------------------------------------------
# Keys
# -------------------------------------------------------------------------------------------
def test_string_keys_match_oracle():
    # Many distinct strings (incl. "" and unicode) in 1 s windows over 20 s.
    rng = np.random.default_rng(5)
    names = ["", "a", "A", "ä", "long-" * 20, "b c"] + [f"user-{i}" for i in range(200)]
    n = 2_000
    t = pa.table({"ts": pa.array(np.sort(rng.integers(0, 20_000, n))),
                  "user": pa.array([names[i] for i in rng.integers(0, len(names), n)]),
                  "v": pa.array(rng.random(n))})
    check(t, ["user"], timedelta(seconds=1))


def test_multi_column_keys_int_and_string_match_oracle():
    # (id, region) pairs, including pairs that share a part: (1,"eu") (1,"us") (2,"eu") ...
    rng = np.random.default_rng(6)
    n = 1_500
    t = pa.table({"ts": pa.array(np.sort(rng.integers(0, 30_000, n))),
                  "id": pa.array(rng.integers(-3, 4, n), pa.int64()),
                  "region": pa.array([["eu", "us", "ap"][i] for i in rng.integers(0, 3, n)]),
                  "v": pa.array(rng.integers(-100, 100, n), pa.int64())})
    check(t, ["id", "region"], timedelta(seconds=7))


def test_float_keys_match_oracle():
    # Float keys, NaN forming one group and -0.0 the same group as 0.0 (as in SQL GROUP BY).
    keys = [0.5, -1.25, 1e300, float("nan"), 0.0, -0.0, 3.0]
    rng = np.random.default_rng(7)
    n = 700
    t = pa.table({"ts": pa.array(np.sort(rng.integers(0, 5_000, n))),
                  "f": pa.array([keys[i] for i in rng.integers(0, len(keys), n)], pa.float64()),
                  "v": pa.array(rng.random(n))})
    check(t, ["f"], timedelta(seconds=1))


def test_null_keys_form_their_own_group_distinct_from_empty_and_zero():
    # window [0, 1s): keys "" , null, "x", null, ""    -> 3 groups: "", null, "x"
    # (id): 0, null, 0                                   -> null is not 0
    t = pa.table({"ts": pa.array([0, 1, 2, 3, 4], pa.int64()),
                  "s": pa.array(["", None, "x", None, ""], pa.string()),
                  "i": pa.array([0, None, 0, None, 0], pa.int64()),
                  "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = check(t, ["s"], timedelta(seconds=1))
    assert sorted(out.column("s").to_pylist(), key=lambda x: (x is None, x or "")) == ["", "x", None]
    out = check(t, ["i"], timedelta(seconds=1))
    assert out.num_rows == 2
    check(t, ["s", "i"], timedelta(seconds=1))


def test_null_key_first_seen_in_a_later_batch_joins_open_windows():
    # batch_size 4: batches 1-2 have only non-null keys; nulls start in batch 3,
    # while windows opened by batch 1 are still open:
    #   ts(ms): 0 1 2 3 | 4 5 6 7 | 8 9 10 11   window 1 s -> all in [0, 1s)
    #   k:      a b a b | a b a b | null a null b
    t = pa.table({"ts": pa.array(list(range(12)), pa.int64()),
                  "k": pa.array(["a", "b"] * 4 + [None, "a", None, "b"], pa.string()),
                  "j": pa.array([1, 2] * 4 + [1, None, 2, None], pa.int64()),
                  "v": pa.array([float(i) for i in range(12)])})
    check(t, ["k"], timedelta(seconds=1), batch_size=4)
    check(t, ["k", "j"], timedelta(seconds=1), batch_size=4)


def test_many_groups_per_window_across_batches_match_oracle():
    # 6,000 distinct keys in each of two 1 s windows, fed in batches of 1,000: the per-window
    # group table grows past its initial capacity while earlier groups keep their sums.
    #   [0, 1s): keys 0..5999 (shuffled)   [1s, 2s): keys 0..5999 again
    rng = np.random.default_rng(11)
    k = np.concatenate([rng.permutation(6_000), rng.permutation(6_000), rng.integers(0, 6_000, 3_000)])
    ts = np.concatenate([np.full(6_000, 100), np.full(6_000, 1_100), np.full(3_000, 1_900)])
    t = pa.table({"ts": pa.array(ts, pa.int64()), "k": pa.array(k, pa.int64()),
                  "v": pa.array(rng.random(len(k)))})
    check(t, ["k"], timedelta(seconds=1), batch_size=1_000)


def test_null_string_keys_in_different_batches_are_one_group():
    # batch_size 2, all in window [0, 1s); each batch's first string differs:
    #   batch 1: "a" null    batch 2: "b" null    batch 3: null "c"
    #   -> one null group with n = 3 (not one per batch)
    t = pa.table({"ts": pa.array([0, 1, 2, 3, 4, 5], pa.int64()),
                  "k": pa.array(["a", None, "b", None, None, "c"], pa.string()),
                  "v": pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])})
    out = check(t, ["k"], timedelta(seconds=1), batch_size=2)
    assert out.column("k").null_count == 1


# -------------------------------------------------------------------------------------------
# Null semantics of the aggregates
# -------------------------------------------------------------------------------------------
def test_aggregates_follow_sql_null_semantics():
    # window [0, 1s):   k=a: v = 1.0, null, 3.0       -> n 3, nv 2, sum 4, min 1, max 3, mean 2
    #                   k=b: v = null, null           -> n 2, nv 0, sum/min/max/mean null
    # window [1s, 2s):  k=a: v = -2.0                 -> n 1, nv 1
    t = pa.table({"ts": pa.array([0, 10, 20, 30, 40, 1500], pa.int64()),
                  "k": ["a", "a", "b", "a", "b", "a"],
                  "v": pa.array([1.0, None, None, 3.0, None, -2.0], pa.float64())})
    out = check(t, ["k"], timedelta(seconds=1))
    b = [r for r in out.to_pylist() if r["k"] == "b"]
    assert b == [{**b[0], "n": 2, "nv": 0, "total": None, "lo": None, "hi": None, "avg": None}]


def test_integer_aggregates_with_nulls_and_all_null_group():
    # int64 values: sum/min/max stay int64, mean is float64, all-null group gives null.
    #   [0, 1s): a: 5, null, -7   b: null
    t = pa.table({"ts": pa.array([0, 1, 2, 3], pa.int64()), "k": ["a", "a", "a", "b"],
                  "v": pa.array([5, None, -7, None], pa.int64())})
    out = check(t, ["k"], timedelta(seconds=1))
    assert out.schema.field("total").type == pa.int64()
    assert out.schema.field("lo").type == pa.int64()
    assert out.schema.field("avg").type == pa.float64()


def test_nan_values_follow_sql_ordering_nan_above_every_number():
    # [0, 1s): a: 1.0, NaN, 3.0   -> min 1, max NaN, sum/mean NaN, count 3 (NaN is not null)
    #          b: NaN, NaN, null  -> min NaN, max NaN, nv 2
    #          c: 2.0, null       -> plain numbers
    nan = float("nan")
    t = pa.table({"ts": pa.array(range(8), pa.int64()), "k": list("aaabbbcc"),
                  "v": pa.array([1.0, nan, 3.0, nan, nan, None, 2.0, None], pa.float64())})
    check(t, ["k"], timedelta(seconds=1))


def test_count_of_a_string_column_counts_non_null_values():
    # count("s") on a string column: rows where s is not null.
    #   [0, 1s): a: "x", null, "y"   b: null
    t = pa.table({"ts": pa.array([0, 1, 2, 3], pa.int64()), "k": ["a", "a", "a", "b"],
                  "s": pa.array(["x", None, "y", None], pa.string())})
    check(t, ["k"], timedelta(seconds=1), aggs=(("n", "count", None), ("ns", "count", "s")))


# -------------------------------------------------------------------------------------------
# Stateless steps before the window
# -------------------------------------------------------------------------------------------
def _filter_and_derive(s):
    return s.filter(col("value") > 0.2).with_columns(v=col("value") * 2.0)


def test_filter_and_with_columns_before_window_match_oracle():
    # generate()-like data; value > 0.2 -> v = value * 2.0 -> 1 s windows per key
    rng = np.random.default_rng(8)
    n = 5_000
    t = pa.table({"ts": pa.array(1_700_000_000_000 + np.arange(n) // 100),
                  "k": pa.array(rng.integers(0, 50, n)),
                  "value": pa.array(rng.random(n))})
    out, metrics = run_window(t, ["k"], timedelta(seconds=1), prepare=_filter_and_derive)
    kept = t.filter(pc.greater(t["value"], 0.2))
    kept = kept.append_column("v", pc.multiply(kept["value"], 2.0))
    assert_same_rows(engine_rows(out), oracle(kept, ["k"], "ts", S, ALL_AGGS), 3)


def test_small_parallel_batches_give_the_same_result_as_one_big_batch():
    # The same 3,000 events as one 65,536-row batch and as 429 batches of 7 rows:
    # windows span many batches, so state must carry across batches.
    rng = np.random.default_rng(9)
    n = 3_000
    t = pa.table({"ts": pa.array(1_700_000_000_000 + np.sort(rng.integers(0, 20_000, n))),
                  "k": pa.array(rng.integers(0, 20, n)),
                  "value": pa.array(rng.random(n), mask=rng.random(n) < 0.1)})
    big, _ = run_window(t, ["k"], timedelta(seconds=1), prepare=_filter_and_derive)
    small, metrics = run_window(t, ["k"], timedelta(seconds=1), prepare=_filter_and_derive,
                                config=hdb.StreamingConfig(batch_size=7, parallelism=4))
    assert metrics[LATE] == 0
    assert_same_rows(engine_rows(small), engine_rows(big), 3)
    kept = t.filter(pc.greater(t["value"], 0.2))
    kept = kept.append_column("v", pc.multiply(kept["value"], 2.0))
    assert_same_rows(engine_rows(small), oracle(kept, ["k"], "ts", S, ALL_AGGS), 3)


@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_parallel_window_subtasks_match_oracle_for_mixed_key_types(parallelism):
    # (name, bucket, score) keys hashed to 1/2/4 subtasks; each key must live in exactly one,
    # so the merged output has one row per (window, key) as if run by a single subtask.
    rng = np.random.default_rng(12)
    n = 2_000
    names = ["a", "b", "", None, "ü"]
    t = pa.table({"ts": pa.array(np.sort(rng.integers(0, 10_000, n))),
                  "name": pa.array([names[i] for i in rng.integers(0, len(names), n)]),
                  "bucket": pa.array(rng.integers(0, 3, n), mask=rng.random(n) < 0.1),
                  "score": pa.array([[0.0, -0.0, 1.5, float("nan")][i] for i in rng.integers(0, 4, n)]),
                  "v": pa.array(rng.random(n))})
    check(t, ["name", "bucket", "score"], timedelta(seconds=1), batch_size=1_000,
          config=hdb.StreamingConfig(parallelism=parallelism))


# -------------------------------------------------------------------------------------------
# Event time: out-of-order events and late events
# -------------------------------------------------------------------------------------------
def shuffle_within_bound(ts_sorted: np.ndarray, bound: int, seed: int) -> np.ndarray:
    """Arrival order in which each event is at most ``bound`` behind the largest time seen.

    Event i arrives at position-time ts[i] and carries time ts[i] - jitter, jitter in
    [0, bound]: the max seen before it is <= ts[i], so it is never more than ``bound`` late.
    """
    rng = random.Random(seed)
    return np.array([t - rng.randint(0, bound) for t in ts_sorted], dtype=np.int64)


@pytest.mark.parametrize("batch_size", [1, 5, 65_536])
def test_out_of_order_events_within_bound_are_all_counted(batch_size):
    # bound 2 s, windows 1 s; arrivals jump back by up to 2 s:
    #   arrival: 1.0s 2.9s 0.95s 3.1s 1.2s ...   wm = max seen - 2 s
    #   every event is >= wm when it arrives -> none late, all aggregated
    rng = np.random.default_rng(10)
    n = 1_000
    base = np.sort(rng.integers(0, 30_000, n)) + 1_700_000_000_000
    ts = shuffle_within_bound(base, 2_000, seed=batch_size)
    assert (np.diff(ts) < 0).any(), "the data must really be out of order"
    t = pa.table({"ts": pa.array(ts), "k": pa.array(rng.integers(0, 5, n)),
                  "v": pa.array(rng.random(n))})
    check(t, ["k"], timedelta(seconds=1), watermark=timedelta(seconds=2), batch_size=batch_size)


def simulate_lateness(ts_ms: np.ndarray, size_ns: int, bound_ns: int, batch_size: int) -> np.ndarray:
    """Which events are late: the watermark (max seen - bound) advances after each batch, and an
    event is late when its window already ended at or before the watermark."""
    wm = -(2**63)
    late = np.zeros(len(ts_ms), bool)
    for b0 in range(0, len(ts_ms), batch_size):
        chunk = ts_ms[b0:b0 + batch_size] * MS
        for i, t in enumerate(chunk):
            start = t - t % size_ns
            late[b0 + i] = start + size_ns <= wm
        wm = max(wm, int(chunk.max()) - bound_ns)
    return late


def test_late_event_goes_to_late_events_metric_and_is_not_aggregated():
    # window 1 s, max_out_of_orderness 2 s, one event per batch (wm moves after each):
    #   arrival  ts      key  wm after   note
    #   1        0.2 s   a    -1.8 s
    #   2        1.4 s   a    -0.6 s
    #   3        3.5 s   b     1.5 s     closes [0,1s)
    #   4        0.9 s   a     1.5 s     LATE: [0,1s) closed
    #   5        1.6 s   b     1.5 s     in bound (>= wm), [1s,2s) still open
    #   6        5.0 s   a     3.0 s     closes [1s,2s), [2s,3s)
    #   7        2.9 s   a     3.0 s     LATE: [2s,3s) closed (never opened)
    #   8        3.0 s   b     3.0 s     on time: [3s,4s) open
    ts = np.array([200, 1400, 3500, 900, 1600, 5000, 2900, 3000], np.int64)
    t = pa.table({"ts": pa.array(ts), "k": ["a", "a", "b", "a", "b", "a", "a", "b"],
                  "v": [1.0, 2.0, 3.0, 100.0, 5.0, 6.0, 100.0, 8.0]})
    late = simulate_lateness(ts, S, 2 * S, batch_size=1)
    assert late.tolist() == [False, False, False, True, False, False, True, False]
    out, metrics = run_window(t, ["k"], timedelta(seconds=1), watermark=timedelta(seconds=2),
                              batch_size=1)
    assert metrics[LATE] == 2
    on_time = t.filter(pa.array(~late))
    assert_same_rows(engine_rows(out), oracle(on_time, ["k"], "ts", S, ALL_AGGS), 3)
    assert 100.0 not in out.column("hi").to_pylist()


@pytest.mark.parametrize("batch_size", [1, 2, 65_536])
def test_event_later_than_bound_is_late_whatever_the_batch_boundaries(batch_size):
    # bound 1 s, window 1 s; arrival order 5.0 s, 0.1 s, 5.1 s:
    #   0.1 s is 4.9 s behind the largest time seen before it (> 1 s bound) -> late,
    #   whether or not it shares a micro-batch with 5.0 s (replay and live must agree).
    #   [0,1s): nothing        [5s,6s): 5.0, 5.1 -> n 2
    ts = np.array([5_000, 100, 5_100], np.int64)
    t = pa.table({"ts": pa.array(ts), "k": [1, 1, 1], "v": [1.0, 2.0, 3.0]})
    out, metrics = run_window(t, ["k"], timedelta(seconds=1), watermark=timedelta(seconds=1),
                              batch_size=batch_size)
    late = simulate_lateness(ts, S, S, batch_size=1)
    assert late.tolist() == [False, True, False]
    assert metrics[LATE] == 1
    on_time = t.filter(pa.array(~late))
    assert_same_rows(engine_rows(out), oracle(on_time, ["k"], "ts", S, ALL_AGGS), 3)


def test_event_exactly_at_watermark_is_not_late():
    # bound 1 s, window 1 s, one event per batch:
    #   ts 5.0 s -> wm 4.0 s;  ts 4.0 s arrives: [4s,5s) ends at 5 s > wm -> on time
    #   ts 3.999 s arrives: [3s,4s) ends at 4 s <= wm -> late
    ts = np.array([5000, 4000, 3999], np.int64)
    t = pa.table({"ts": pa.array(ts), "k": [1, 1, 1], "v": [1.0, 2.0, 3.0]})
    out, metrics = run_window(t, ["k"], timedelta(seconds=1), watermark=timedelta(seconds=1),
                              batch_size=1)
    assert metrics[LATE] == 1
    on_time = t.filter(pa.array(~simulate_lateness(ts, S, S, 1)))
    assert_same_rows(engine_rows(out), oracle(on_time, ["k"], "ts", S, ALL_AGGS), 3)


# -------------------------------------------------------------------------------------------
# Properties (hypothesis) against the oracle
# -------------------------------------------------------------------------------------------
_KEYS = ["a", "b", "", None]


@st.composite
def event_streams(draw):
    """Events whose times go back by at most ``bound`` ms, with duplicates and nulls."""
    n = draw(st.integers(1, 60))
    steps = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    start = draw(st.sampled_from([0, -50, 1_700_000_000_000, -2_208_988_800_000]))
    base = start + np.cumsum(steps)
    bound = draw(st.integers(0, 12))
    jitter = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    ts = base - np.array(jitter, dtype=np.int64)
    keys = draw(st.lists(st.sampled_from(_KEYS), min_size=n, max_size=n))
    vals = draw(st.lists(st.one_of(st.none(), st.integers(-1_000, 1_000)), min_size=n, max_size=n))
    table = pa.table({"ts": pa.array(ts, pa.int64()), "k": pa.array(keys, pa.string()),
                      "v": pa.array(vals, pa.int64()),
                      "f": pa.array([None if x is None else x / 8 for x in vals], pa.float64())})
    return table, bound


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=event_streams(), size_ms=st.sampled_from([1, 2, 3, 5, 7, 10]),
       batch_size=st.integers(1, 20), parallelism=st.sampled_from([1, 2, 3]))
def test_out_of_order_within_bound_matches_oracle_property(data, size_ms, batch_size, parallelism):
    # Times step forward by 0-4 ms (duplicates common) and jump back by at most the bound;
    # windows of a few ms, batches of 1-20 rows, 1-3 parallel window subtasks.
    #   base:  0 0 1 3 3 4 ...   ts = base - jitter, jitter in [0, bound]  -> never late
    table, bound = data
    aggs = ALL_AGGS + (("fs", "sum", "f"), ("fmax", "max", "f"))
    check(table, ["k"], timedelta(milliseconds=size_ms), aggs,
          watermark=timedelta(milliseconds=bound), batch_size=batch_size,
          config=hdb.StreamingConfig(parallelism=parallelism))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ts=st.lists(st.integers(0, 80), min_size=1, max_size=40),
       size_ms=st.sampled_from([1, 3, 10]), bound_ms=st.integers(0, 15),
       parallelism=st.sampled_from([1, 2]))
def test_late_events_property(ts, size_ms, bound_ms, parallelism):
    # Arbitrary disorder, one event per batch: events whose window closed are counted as
    # late and left out; everything else is aggregated.
    #   wm = max seen - bound after each event; late <=> window end <= wm on arrival
    ts = np.array(ts, np.int64)
    t = pa.table({"ts": pa.array(ts), "k": pa.array(ts % 3), "v": pa.array(ts * 1.5)})
    late = simulate_lateness(ts, size_ms * MS, bound_ms * MS, 1)
    out, metrics = run_window(t, ["k"], timedelta(milliseconds=size_ms),
                              watermark=timedelta(milliseconds=bound_ms), batch_size=1,
                              config=hdb.StreamingConfig(parallelism=parallelism))
    assert metrics[LATE] == int(late.sum())
    on_time = t.filter(pa.array(~late))
    expected = oracle(on_time, ["k"], "ts", size_ms * MS, ALL_AGGS) if on_time.num_rows else []
    assert_same_rows(engine_rows(out), expected, 3)


@settings(max_examples=300, deadline=None)
@given(slide_ms=st.integers(1, 6), factor=st.integers(1, 5), extra_ms=st.integers(0, 5),
       panes=st.sets(st.integers(-40, 40), max_size=15), before_ms=st.integers(-100, 100),
       step_ms=st.integers(1, 100))
def test_due_windows_are_every_window_of_a_held_pane_whose_end_the_watermark_passed(
        slide_ms, factor, extra_ms, panes, before_ms, step_ms):
    """The windows a watermark move from ``before`` to ``t`` closes, computed per pane by
    arithmetic (``PaneWindower.due``), equal the brute force over every window of every held
    pane."""
    size_ms = slide_ms * factor + extra_ms
    spec = hdb.SlidingWindow.of(timedelta(milliseconds=size_ms), timedelta(milliseconds=slide_ms))
    w = spec.windower()
    held = [p * w.pane_ns for p in panes]
    before, t = before_ms * MS, (before_ms + step_ms) * MS
    brute = sorted({s for p in held for s in w.windows_of(p) if before < w.end(s) <= t})
    assert w.due(held, before, t) == brute
