"""Event-time lateness of tumbling and sliding windows, and which windows an event is in.

The rule (``with_watermark`` and ``heliosdb.operators.window``): event i sees the watermark
``max(earlier times) - max_out_of_orderness``; it is late when every window holding it has
``end + allowed_lateness <= watermark`` (late output, not aggregated); a window it joins that
already ended (``end <= watermark``) was emitted, so the event emits an update row for it.

Timeline of a 10 s tumbling window with 5 s allowed lateness (the module docstring's)::

    event time   0 ............ 10 ......... 15
    window       [0, 10) open    |  emitted   | dropped
    an event at 3 arriving when watermark = 12 -> update row for [0, 10)
    an event at 3 arriving when watermark = 15 -> late output
"""
from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from tests.oracle import MS, hopping_oracle, ms_rows, run_windows, session_oracle, window_starts

AGGS = (("n", "count", None, None, 0.01), ("total", "sum", "v", None, 0.01))
COLS = ("window_start", "window_end", "k", "n", "total")


def events(*rows) -> pa.Table:
    """(key, ts ms, v) in arrival order."""
    return pa.table({"k": pa.array([r[0] for r in rows], pa.string()),
                     "ts": pa.array([r[1] for r in rows], pa.int64()),
                     "v": pa.array([r[2] for r in rows], pa.int64())})


def tumbling(table, size_ms, lateness_ms=0, bound_ms=None, batch_size=1, parallelism=1):
    spec = hdb.TumblingWindow.of(timedelta(milliseconds=size_ms))
    out, late, metrics = run_windows(table, ["k"], spec, bound_ms, lateness_ms, batch_size, parallelism, AGGS)
    assert metrics["streaming_late_events_total"] == late.num_rows
    return ms_rows(out, *COLS), late


def sliding(table, size_ms, slide_ms, lateness_ms=0, bound_ms=None, batch_size=1):
    spec = hdb.SlidingWindow.of(timedelta(milliseconds=size_ms), timedelta(milliseconds=slide_ms))
    out, late, metrics = run_windows(table, ["k"], spec, bound_ms, lateness_ms, batch_size, 1, AGGS)
    assert metrics["streaming_late_events_total"] == late.num_rows
    return ms_rows(out, *COLS), late


# -------------------------------------------------------------------------------------------
# Tumbling
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 3])
def test_tumbling_event_within_lateness_emits_an_update_row(batch_size):
    # window 10 s, lateness 5 s, bound 0:
    #   a@1s                 [0,10s) open
    #   b@14.999s            wm 14.999 s: [0,10s) emitted (a: n 1)
    #   a@3s                 10 + 5 > 14.999 -> update row for [0,10s) (a: n 2), right away
    # (the first row must still say n 1: emitted rows never change afterwards)
    t = events(("a", 1_000, 1), ("b", 14_999, 10), ("a", 3_000, 2))
    got, late = tumbling(t, 10_000, lateness_ms=5_000, batch_size=batch_size)
    assert got == [(0, 10_000, "a", 1, 1), (0, 10_000, "a", 2, 3), (10_000, 20_000, "b", 1, 10)]
    assert late.num_rows == 0


@pytest.mark.parametrize("parallelism", [1, 2])
def test_tumbling_event_past_lateness_goes_to_late_output(parallelism):
    # window 10 s, lateness 5 s, bound 0:
    #   a@1s      [0,10s) open
    #   b@15s     wm 15 s: [0,10s) emitted and dropped (10 + 5 <= 15)
    #   a@3s      late output, exactly this row; [0,10s) keeps n 1
    t = events(("a", 1_000, 1), ("b", 15_000, 10), ("a", 3_000, 100))
    got, late = tumbling(t, 10_000, lateness_ms=5_000, parallelism=parallelism)
    assert sorted(got) == [(0, 10_000, "a", 1, 1), (10_000, 20_000, "b", 1, 10)]
    assert late.to_pylist() == [{"k": "a", "ts": 3_000, "v": 100}]


def test_event_exactly_at_window_end_plus_lateness_is_late():
    # window 10 ms, lateness 5 ms, bound 2 ms:  a@0, b@17 -> wm 15 = end + lateness of [0,10)
    #   a@9: its only window [0,10) has 10 + 5 <= 15 -> late
    #   a@10: window [10,20) ends after wm -> on time
    t = events(("a", 0, 1), ("b", 17, 2), ("a", 9, 4), ("a", 10, 8))
    got, late = tumbling(t, 10, lateness_ms=5, bound_ms=2)
    assert late.column("ts").to_pylist() == [9]
    assert sorted(got) == [(0, 10, "a", 1, 1), (10, 20, "a", 1, 8), (10, 20, "b", 1, 2)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_late_output_is_exactly_the_late_input_rows_with_every_column(parallelism):
    # window 1 s, bound 0; arrival 5.0 s, then three rows of [0, 1s) (closed) of all types,
    # then 5.5 s: the three go to the late output as they came in, nothing else does
    t = pa.table({
        "ts": pa.array([5_000, 100, 200, 300, 5_500], pa.int64()),
        "k": pa.array(["a", None, "b", "a", "a"]),
        "v": pa.array([1, None, 3, 4, 5], pa.int64()),
        "f": pa.array([1.5, float("nan"), None, -0.0, 2.5]),
        "flag": pa.array([True, None, False, True, False]),
        "at": pa.array([1, 2, 3, 4, 5], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism))
    w = (env.from_arrow(t).with_batch_size(2).with_watermark("ts").key_by("k")
         .window(hdb.TumblingWindow.of(timedelta(seconds=1))).aggregate(n=hdb.count()))
    out, late = hdb.sinks.memory(), hdb.sinks.memory()
    w.sink(out)
    w.late_output().sink(late)
    result = env.execute(name=f"late-rows-{parallelism}")
    lt = late.to_table()
    assert lt.schema == t.schema
    got = sorted(lt.to_pylist(), key=lambda r: r["ts"])
    assert repr(got) == repr(t.slice(1, 3).to_pylist())
    assert result.metrics["streaming_late_events_total"] == 3
    assert ms_rows(out.to_table(), "window_start", "k", "n") == [(5_000, "a", 2)]


# -------------------------------------------------------------------------------------------
# Sliding
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size_ms, slide_ms, expected", [
    # size 10, slide 4 (panes of 2): windows [4j, 4j + 10)
    #   -1 -> [-8,2) [-4,6)        7 -> [0,10) [4,14)        8 -> [0,10) [4,14) [8,18)
    #   10 -> [4,14) [8,18)        12 -> [4,14) [8,18) [12,22)
    (10, 4, {-8: 1, -4: 1, 0: 2, 4: 4, 8: 3, 12: 1}),
    # size 6, slide 2: windows [2j, 2j + 6); 1 -> [-4,2) [-2,4) [0,6); 2 -> [-2,4) [0,6) [2,8)
    #   4 -> [0,6) [2,8) [4,10)   6 -> [2,8) [4,10) [6,12)   -1 -> [-6,0) [-4,2) [-2,4)
    (6, 2, {-6: 1, -4: 2, -2: 3, 0: 3, 2: 3, 4: 2, 6: 1}),
], ids=["10-every-4", "6-every-2"])
def test_sliding_window_membership_at_pane_boundaries(size_ms, slide_ms, expected):
    ts = [7, 8, 10, -1, 12] if slide_ms == 4 else [1, 2, 4, 6, -1]
    t = events(*[("a", x, 1) for x in ts])
    got, late = sliding(t, size_ms, slide_ms, bound_ms=100, batch_size=5)
    assert late.num_rows == 0
    counts = {start: n for start, end, _, n, _ in got}
    assert counts == expected
    assert all(end - start == size_ms for start, end, *_ in got)
    oracle = {}
    for x in ts:
        for s in window_starts(x * MS, size_ms * MS, slide_ms * MS):
            oracle[s // MS] = oracle.get(s // MS, 0) + 1
    assert oracle == expected


def test_sliding_event_within_lateness_updates_only_the_windows_it_is_in():
    # size 10, slide 5, lateness 5, bound 0:
    #   a@1    [-5,5) [0,10)
    #   b@12   wm 12: [-5,5) and [0,10) emitted (a: n 1 each)
    #   a@7    in [0,10) (10 + 5 > 12: update, n 2) and [5,15) (open); [-5,5) untouched
    t = events(("a", 1, 1), ("b", 12, 10), ("a", 7, 2))
    got, late = sliding(t, 10, 5, lateness_ms=5)
    a_rows = [r for r in got if r[2] == "a"]
    assert a_rows == [(-5, 5, "a", 1, 1), (0, 10, "a", 1, 1), (0, 10, "a", 2, 3), (5, 15, "a", 1, 2)]
    assert late.num_rows == 0


def test_sliding_event_does_not_update_a_window_past_its_lateness():
    # size 10, slide 5, no lateness, bound 0:
    #   a@1 a@6       [0,10) holds 1 and 6
    #   a@12          wm 12: [0,10) emitted (n 2, total 11) and final (10 + 0 <= 12)
    #   a@7           in [0,10) (final: untouched) and [5,15) (open): not late
    t = events(("a", 1, 1), ("a", 6, 10), ("a", 12, 100), ("a", 7, 1000))
    got, late = sliding(t, 10, 5)
    assert [r for r in got if r[0] == 0] == [(0, 10, "a", 2, 11)]
    assert [r for r in got if r[0] == 5] == [(5, 15, "a", 3, 1110)]
    assert late.num_rows == 0


# -------------------------------------------------------------------------------------------
# Time range
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [hdb.TumblingWindow.of(1), hdb.SlidingWindow.of(2, 1),
                                  hdb.SessionWindow.with_gap(1)], ids=["tumbling", "sliding", "session"])
@pytest.mark.parametrize("ts", [10**15, -(10**15)], ids=["+1e15ms", "-1e15ms"])
def test_times_beyond_int64_nanoseconds_are_rejected_naming_the_step(spec, ts):
    # +-1e15 ms is +-1e21 ns: outside int64 ns (years 1678-2262) -> DataError naming the step
    t = pa.table({"ts": pa.array([0, ts], pa.int64()), "k": [1, 1], "v": [1, 2]})
    env = hdb.StreamEnvironment()
    (env.from_arrow(t).key_by("k").window(spec, time="ts").aggregate(n=hdb.count())
     .name("far-window").sink(hdb.sinks.memory()))
    with pytest.raises(hdb.errors.HeliosError) as err:
        env.execute(name="far-times")
    msg = str(err.value)
    assert "far-window" in msg and str(ts) in msg and "outside the range" in msg


def test_windows_near_the_int64_nanosecond_limits_match_the_oracle():
    # +-9.2e12 ms (years ~1678 and ~2262), 3 ms windows: start = t - t mod size still holds
    base = np.array([-9_223_372_036_000, 9_223_372_036_000], np.int64)     # in arrival order
    ts = np.concatenate([b + np.array([0, 1, 2, 5, 3]) for b in base])
    t = events(*[("a", int(x), 1) for x in ts])
    got, late = tumbling(t, 3, bound_ms=10)
    expected = {}
    for x in ts.tolist():
        s = x - x % 3
        expected[s] = expected.get(s, 0) + 1
    assert late.num_rows == 0
    assert {start: n for start, _, _, n, _ in got} == expected


# -------------------------------------------------------------------------------------------
# Late events nobody reads: counted per operator, warned about once
# -------------------------------------------------------------------------------------------
SPECS = {"tumbling": hdb.TumblingWindow.of(timedelta(seconds=10)),
         "sliding": hdb.SlidingWindow.of(timedelta(seconds=10), timedelta(seconds=5)),
         "session": hdb.SessionWindow.with_gap(timedelta(seconds=5))}
# bound 2 s, lateness 1 s, one event per batch:
#   a@1s                 [0,10s) open (sliding: also [-5,5s); session a: [1,6s))
#   b@15s                wm 13 s: every window / session of a@1s ended + 1 s <= 13 -> gone
#   a@3s  a@4s  b@2s     late, one per batch: 3 late events, the first warned about, once
LATE_TIMELINE = [("a", 1_000, 1), ("b", 15_000, 2), ("a", 3_000, 3), ("a", 4_000, 4), ("b", 2_000, 5)]


def _late_records(caplog) -> list:
    return [r for r in caplog.records
            if r.name == "heliosdb.window" and r.levelno == logging.WARNING and "late event" in r.getMessage()]


def _windowed(env, specs, late_read=()):
    """One with_watermark source -> a window step per entry of ``specs`` (named after it),
    each with a memory sink; the late output of those in ``late_read`` is sunk too."""
    keyed = (env.from_arrow(events(*LATE_TIMELINE)).with_batch_size(1)
             .with_watermark("ts", max_out_of_orderness=timedelta(seconds=2)).key_by("k"))
    late_sinks = {}
    for name in specs:
        w = (keyed.window(SPECS[name], allowed_lateness=timedelta(seconds=1))
             .aggregate(n=hdb.count()).name(name))
        w.sink(hdb.sinks.memory())
        if name in late_read:
            late_sinks[name] = hdb.sinks.memory()
            w.late_output().sink(late_sinks[name])
    return late_sinks


@pytest.mark.parametrize("kind", list(SPECS))
def test_dropped_late_events_are_warned_about_once_with_count_bound_and_remedies(kind, caplog):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    _windowed(env, [kind])
    with caplog.at_level(logging.WARNING, logger="heliosdb"):
        result = env.execute(name=f"late-warned-{kind}")
    records = _late_records(caplog)
    assert len(records) == 1
    msg = records[0].getMessage()
    assert msg.startswith(f"step {kind!r}: 1 late event dropped so far")       # at the first drop
    assert "max_out_of_orderness=2s" in msg and "allowed_lateness=1s" in msg
    for remedy in (".late_output()", "with_watermark(max_out_of_orderness=)", "allowed_lateness="):
        assert remedy in msg
    assert records[0].operator == kind
    assert result.late_events == {kind: 3}
    assert result.metrics["streaming_late_events_total"] == 3


def test_each_window_warns_once_for_itself(caplog):
    # Two windows read the same timeline: each drops 3 late events, each warns once.
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    _windowed(env, ["tumbling", "session"])
    with caplog.at_level(logging.WARNING, logger="heliosdb"):
        result = env.execute(name="late-two-windows")
    assert sorted(r.operator for r in _late_records(caplog)) == ["session", "tumbling"]
    assert result.late_events == {"tumbling": 3, "session": 3}


@pytest.mark.parametrize("kind", list(SPECS))
def test_no_warning_when_the_late_output_is_read(kind, caplog):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    late = _windowed(env, [kind], late_read=[kind])
    with caplog.at_level(logging.WARNING, logger="heliosdb"):
        result = env.execute(name=f"late-kept-{kind}")
    assert _late_records(caplog) == []
    assert sorted(late[kind].to_table().column("ts").to_pylist()) == [2_000, 3_000, 4_000]
    assert result.late_events == {kind: 3}


def test_only_the_window_whose_late_output_nobody_reads_warns(caplog):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    _windowed(env, ["tumbling", "sliding"], late_read=["sliding"])
    with caplog.at_level(logging.WARNING, logger="heliosdb"):
        env.execute(name="late-one-kept")
    assert [r.operator for r in _late_records(caplog)] == ["tumbling"]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_job_result_counts_late_events_per_window_as_the_oracle(parallelism, caplog):
    # 3,000 events 10 ms apart, each up to 3 s early or on time, keys a/b/c; bound 1 s,
    # lateness 0.5 s: three windows read them, nothing reads their late outputs.  At
    # parallelism 2 sessions run as subtasks "sessions#i" (partitioned by key): they add up.
    rng = np.random.default_rng(7)
    n = 3_000
    ts = (np.arange(n) * 10 - rng.integers(0, 3_000, n) * (rng.random(n) < 0.3)).tolist()
    keys = rng.choice(["a", "b", "c"], n).tolist()
    rows = [{"k": k, "ts": t, "v": i} for i, (k, t) in enumerate(zip(keys, ts))]
    bound, lateness = 1_000 * MS, 500 * MS
    times = [t * MS for t in ts]
    expected = {
        "tumble": len(hopping_oracle(rows, times, ["k"], 1_000 * MS, 1_000 * MS, bound, lateness)[1]),
        "slide": len(hopping_oracle(rows, times, ["k"], 2_000 * MS, 1_000 * MS, bound, lateness)[1]),
        "sessions": len(session_oracle(rows, times, ["k"], 300 * MS, bound, lateness)[1]),
    }
    assert all(expected.values())                 # the data does have late events for each
    specs = {"tumble": hdb.TumblingWindow.of(timedelta(seconds=1)),
             "slide": hdb.SlidingWindow.of(timedelta(seconds=2), timedelta(seconds=1)),
             "sessions": hdb.SessionWindow.with_gap(timedelta(milliseconds=300))}
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism))
    keyed = (env.from_arrow(events(*[(r["k"], r["ts"], r["v"]) for r in rows])).with_batch_size(64)
             .with_watermark("ts", max_out_of_orderness=timedelta(seconds=1)).key_by("k"))
    for name, spec in specs.items():
        (keyed.window(spec, allowed_lateness=timedelta(milliseconds=500)).aggregate(n=hdb.count())
         .name(name).sink(hdb.sinks.memory()))
    with caplog.at_level(logging.WARNING, logger="heliosdb"):
        result = env.execute(name=f"late-per-operator-{parallelism}")
    got: dict = {}
    for op, count in result.late_events.items():
        got[op.split("#")[0]] = got.get(op.split("#")[0], 0) + count
    assert got == expected
    assert result.metrics["streaming_late_events_total"] == sum(expected.values())
    warned = [r.operator for r in _late_records(caplog)]
    assert sorted(warned) == sorted(result.late_events)      # once per operator that dropped
