"""Parallelism n > 1 gives exactly the output of parallelism 1 (heliosdb/planner/replicas.py,
heliosdb/runtime/sequence.py, heliosdb/operators/preagg.py).

Stateless stages run as replicas fed round-robin and merged back in order; tumbling and sliding
event-time windows run two-phase (replicas pre-aggregate, the final window merges).  Every
pipeline here is run with parallelism 1 and n and the outputs compared row for row, bit for bit
(same rows, same order, same float bits), late output included.
"""
from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import ConfigError, RecordError
from heliosdb.operators.window import WindowAggregate

_jobs = itertools.count()


def events(n: int = 5_000, seed: int = 3, disorder: float = 0.0, keys: int = 50) -> pa.Table:
    """``ts`` ms (3 per event; a share ``disorder`` up to 400 ms back), string ``k``, int ``ki``
    (with nulls), float ``v`` (with nulls and NaN), string ``u``."""
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.int64)
    back = np.where(rng.random(n) < disorder, rng.integers(0, 400, n), 0)
    v = rng.random(n)
    v[rng.random(n) < 0.01] = np.nan
    return pa.table({
        "ts": 1_700_000_000_000 + i * 3 - back,
        "k": pa.array([f"k{x}" for x in rng.integers(0, keys, n)]),
        "ki": pa.array(rng.integers(0, keys, n), mask=rng.random(n) < 0.02),
        "v": pa.array(v, mask=rng.random(n) < 0.02),
        "u": pa.array([f"u{x}" for x in rng.integers(0, 30, n)]),
    })


def run(build, parallelism: int, batch_size: int = 97, late: bool = False):
    """Output (and late output) of ``build(stream)`` from ``events`` with this parallelism."""
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, batch_size=batch_size))
    out = build(env)
    sink, late_sink = hdb.sinks.memory(), hdb.sinks.memory()
    out.sink(sink)
    if late:
        out.late_output().sink(late_sink)
    env.execute(name=f"parallel-{next(_jobs)}")
    return sink.to_table(), late_sink.to_table() if late else None


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal row for row: floats bit for bit (a NaN equals any NaN), nulls at the same rows."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns):
        x, y = x.combine_chunks(), y.combine_chunks()
        if not pa.types.is_floating(x.type):
            if not x.equals(y):
                return False
            continue
        if not x.is_null().equals(y.is_null()):
            return False
        u = x.fill_null(0).to_numpy(zero_copy_only=False)
        v = y.fill_null(0).to_numpy(zero_copy_only=False)
        nan = np.isnan(u)
        if not (np.array_equal(nan, np.isnan(v)) and np.array_equal(u[~nan].view(np.int64), v[~nan].view(np.int64))):
            return False
    return True


def _sorted(t: pa.Table, by) -> pa.Table:
    return t.sort_by([(c, "ascending") for c in by])        # a stable sort: updates keep order


def assert_identical(build, ns=(2, 3), by=None, **kw) -> pa.Table:
    """Outputs of parallelism 1 and each of ``ns`` are equal, bit for bit and row for row;
    ``by``: compare sorted by these columns (a hash exchange interleaves its subtasks' rows)."""
    one, late_one = run(build, 1, **kw)
    for n in ns:
        got, late_got = run(build, n, **kw)
        assert got.schema == one.schema
        if by:
            got, one_ = _sorted(got, by), _sorted(one, by)
        else:
            one_ = one
        assert same(got, one_), f"parallelism {n}: {got.num_rows} rows vs {one.num_rows}"
        if late_one is not None:
            if by:     # late rows of hash-exchange subtasks interleave too
                late_got, late_one = _sorted(late_got, late_one.column_names), _sorted(late_one, late_one.column_names)
            assert same(late_got, late_one)
    return one


# -- stateless stages ----------------------------------------------------------------------------
def test_fused_filter_and_columns_are_identical_in_order():
    t = events()
    out = assert_identical(lambda env: env.from_arrow(t).filter(col("v") > 0.3)
                           .with_columns(w=col("v") * 2.0 + 1.0).select("ts", "k", "w"))
    assert 0 < out.num_rows < t.num_rows
    assert out["ts"].to_pylist() == sorted(out["ts"].to_pylist())      # arrival order kept


def test_compiled_python_functions_are_identical():
    t = events()
    out = assert_identical(lambda env: env.from_arrow(t)
                           .filter(lambda e: e.v is not None and e.v > 0.5)
                           .map(lambda e: {"ts": e.ts, "k": e.k, "w": e.v * 3 if e.v < 0.9 else -1.0}))
    assert out.num_rows > 0


def test_per_record_python_functions_run_once_in_order():
    t = events(n=800)
    seen = []

    def tag(e):
        seen.append(e.ts)
        return {"ts": e.ts, "k": e.k + "!"}

    def build(env):
        schema = pa.schema([("ts", pa.int64()), ("k", pa.string())])
        return env.from_arrow(t).filter(col("v") > 0.2).map(tag, compile=False, schema=schema)

    one, _ = run(build, 1)
    first = list(seen)
    seen.clear()
    two, _ = run(build, 2)
    assert same(two, one) and seen == first


def test_explicit_set_parallelism_on_a_stateless_step():
    t = events()

    def build(env):
        return env.from_arrow(t).filter(col("v") > 0.3).set_parallelism(3).with_columns(w=col("v") + 1)

    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    text = str(build(env).sink(hdb.sinks.memory()).explain())
    assert "round-robin to 3 replicas" in text and "parallelism 3, merges" not in text
    assert "(threads 2-4, parallelism 3)" in text and "merges 3 inputs in order" in text
    assert_identical(build, ns=(1,))


def test_two_sinks_after_a_branch():
    t = events()

    def build(env):
        s = env.from_arrow(t).inspect(lambda b: None)
        s.filter(col("v") < 0.1).sink(hdb.sinks.memory())       # a second branch, replicated too
        return s.filter(col("v") > 0.9).with_columns(w=col("v") * 2)

    assert_identical(build)


def test_a_failing_check_names_the_record_of_the_whole_input():
    # 10 // v fails on the first v == 0: record 1203 of the input, whichever replica meets it
    t = pa.table({"v": pa.array([1] * 1203 + [0] + [2] * 500, pa.int64())})
    for n in (1, 2, 3):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=n, batch_size=100))
        with pytest.raises(RecordError) as info:
            env.from_arrow(t).map(lambda e: {"q": 10 // e.v}).name("tenths").collect()
        assert info.value.step == "tenths" and info.value.index == 1203


def test_the_first_error_in_input_order_is_the_one_raised():
    # replica 1 meets row 250 (v = 0) early; replica 0 meets row 120 (v = -1, a ValueError
    # from math.sqrt) in an earlier batch: the earlier one is raised, as with parallelism 1
    v = [4.0] * 400
    v[120], v[250] = -1.0, 0.0
    t = pa.table({"v": v})
    import math

    for n in (1, 2):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=n, batch_size=100))
        with pytest.raises(RecordError) as info:
            (env.from_arrow(t).map(lambda e: {"r": 1 / math.sqrt(e.v)}).name("inv").collect())
        assert info.value.index == 120 and isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_invalid_parallelism_is_refused(bad):
    env = hdb.StreamEnvironment()
    with pytest.raises(ConfigError, match="set_parallelism"):
        env.from_iterable([{"x": 1}]).filter(col("x") > 0).set_parallelism(bad)
    with pytest.raises(ConfigError, match=r"StreamingConfig\(parallelism=\)"):
        hdb.StreamingConfig(parallelism=bad)


# -- windows downstream ----------------------------------------------------------------------------
AGGS = dict(n=hdb.count(), s=hdb.sum("v"), m=hdb.mean("v"), lo=hdb.min("v"), hi=hdb.max("v"),
            sd=hdb.stddev("v"), f=hdb.first("u"), l=hdb.last("v"), cd=hdb.count_distinct("u"),
            q=hdb.quantile("v", 0.5))
NUMERIC = dict(n=hdb.count(), s=hdb.sum("v"), m=hdb.mean("v"), lo=hdb.min("v"), hi=hdb.max("v"),
               sd=hdb.stddev("v"), l=hdb.last("v"), cd=hdb.count_distinct("ki"), q=hdb.quantile("v", 0.9))
SPECS = {
    "tumbling": hdb.TumblingWindow.of(timedelta(milliseconds=500)),
    "sliding": hdb.SlidingWindow.of(timedelta(seconds=1), timedelta(milliseconds=250)),
    "session": hdb.SessionWindow.with_gap(timedelta(milliseconds=20)),
}


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("keys,aggs", [(["k"], AGGS), (["ki"], NUMERIC), (["ki", "k"], NUMERIC)],
                         ids=["str-key", "int-key-with-nulls", "two-keys"])
@pytest.mark.parametrize("disorder", [0.0, 0.05], ids=["ordered", "out-of-order"])
def test_windows_after_a_filter_are_identical(kind, keys, aggs, disorder):
    t = events(disorder=disorder)

    def build(env):
        s = env.from_arrow(t).filter(col("v") > 0.1).with_columns(v=col("v") * 2.0)
        if disorder:
            s = s.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=100))
        return (s.key_by(*keys).window(SPECS[kind], time="ts", allowed_lateness=timedelta(milliseconds=60))
                .aggregate(**aggs))

    by = ["window_start", "window_end", *keys] if kind == "session" else None
    out = assert_identical(build, by=by, late=True)
    assert out.num_rows > 0


def test_late_events_at_parallelism_2_go_to_the_late_output_as_at_1():
    # window 1 s, no out-of-orderness: 5% of events 0-400 ms back, some behind closed windows
    t = events(disorder=0.05)

    def build(env):
        return (env.from_arrow(t).key_by("k").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
                .aggregate(n=hdb.count(), s=hdb.sum("v")))

    one, late = run(build, 1, late=True)
    assert late.num_rows > 0
    assert_identical(build, late=True)


def test_ordered_batches_are_merged_not_replayed(monkeypatch):
    # ordered input: every batch of the two-phase window takes the partials path
    merged, raw = [], []
    orig_merge, orig_process = WindowAggregate._merge_partials, WindowAggregate.process_batch

    def merge(self, pre):
        merged.append(pre.num_rows)
        return orig_merge(self, pre)

    def process(self, batch):
        if type(batch) is pa.RecordBatch and self.watermark > np.iinfo(np.int64).min:
            raw.append(batch.num_rows)
        return orig_process(self, batch)

    monkeypatch.setattr(WindowAggregate, "_merge_partials", merge)
    monkeypatch.setattr(WindowAggregate, "process_batch", process)
    t = events()

    def build(env):
        return (env.from_arrow(t).key_by("ki").window(SPECS["tumbling"], time="ts")
                .aggregate(n=hdb.count(), s=hdb.sum("v")))

    run(build, 2, batch_size=500)
    assert sum(merged) == t.num_rows and not raw


def test_running_keyed_aggregate_after_replicated_filter():
    t = events()
    assert_identical(lambda env: env.from_arrow(t).filter(col("v") > 0.5).key_by("k")
                     .aggregate(n=hdb.count(), s=hdb.sum("v")), by=["k"])


_SETTINGS = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(seed=st.integers(0, 10_000), disorder=st.sampled_from([0.0, 0.02, 0.3]),
       batch_size=st.integers(1, 300), kind=st.sampled_from(["tumbling", "sliding"]),
       n=st.sampled_from([2, 3]), lateness=st.sampled_from([0, 50]), bound=st.sampled_from([None, 0, 30]))
# A cut batch whose parts are sorted one way as a run and another way piece by piece: a sliding
# window's key table numbered keys differently (found by CI).
@example(seed=0, disorder=0.3, batch_size=183, kind="sliding", n=2, lateness=0, bound=0)
def test_two_phase_windows_equal_parallelism_1_bit_for_bit(seed, disorder, batch_size, kind, n,
                                                           lateness, bound):
    t = events(n=600, seed=seed, disorder=disorder, keys=7)

    def build(env):
        s = env.from_arrow(t)
        if bound is not None:
            s = s.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=bound))
        return (s.key_by("ki").window(SPECS[kind], time="ts", allowed_lateness=timedelta(milliseconds=lateness))
                .aggregate(**NUMERIC))

    assert_identical(build, ns=(n,), batch_size=batch_size, late=True)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("window", ["tumbling", "sliding", "session", "running", "stateless"])
def test_a_finished_job_leaves_no_reference_cycles(window, parallelism):
    """Nothing of a finished job waits for the cycle collector: with parallelism 2 the
    pre-aggregating replicas once held a closure over the plan builder, a cycle that kept the
    whole plan and a collect()'s output batches alive until a full collection (a notebook
    running W1 in a loop grew by 60 MB per run)."""
    import gc

    t = events(2_000)

    def job() -> None:
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, batch_size=256))
        s = env.from_arrow(t).filter(col("v") > 0.2).with_columns(v2=col("v") * 2.0)
        if window == "stateless":
            s.set_parallelism(parallelism).collect()
            return
        k = s.key_by("ki")
        if window == "running":
            k.aggregate(n=hdb.count()).collect()
            return
        spec = {"tumbling": hdb.TumblingWindow.of(timedelta(seconds=1)),
                "sliding": hdb.SlidingWindow.of(timedelta(seconds=2), timedelta(seconds=1)),
                "session": hdb.SessionWindow.with_gap(timedelta(milliseconds=500))}[window]
        k.window(spec, time="ts").aggregate(n=hdb.count(), s=hdb.sum("v2")).collect()

    job()                                   # imports, compiled kernels, caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)          # what a collection finds stays in gc.garbage
    try:
        job()
        gc.collect()
        # Only the engine's objects and Arrow data: an earlier test's client (e.g. the S3
        # tests' aiobotocore sessions) may be collected by its own threads meanwhile.
        left = [type(o).__qualname__ for o in gc.garbage
                if type(o).__module__.split(".")[0] in ("heliosdb", "pyarrow")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not left, f"a finished job left {len(left)} objects in reference cycles: {sorted(set(left))[:12]}"
