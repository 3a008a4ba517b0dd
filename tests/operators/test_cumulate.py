"""Cumulative windows (``hdb.CumulateWindow``, heliosdb/windows/cumulate.py): golden results
against a brute-force oracle, at parallelism 1 and 2, on memory and RocksDB state; late rows;
processing time; crash and restore.

Timeline of the windows (max_size 6 ms, step 2 ms)::

    event time  0 ... 2 ... 4 ... 6 ... 8 ... 10 ... 12
    windows     [0,2) [0,4) [0,6) | [6,8) [6,10) [6,12) | ...
    an event at 3 is in [0,4) and [0,6); it is late once the watermark passed 6 + lateness
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import timedelta
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb.operators.base import WATERMARK_MAX, Watermark
from heliosdb.operators.clock import ProcessingClock
from heliosdb.operators.window import WindowAggregate
from heliosdb.testing import assert_same_rows, crash_and_restore, read_parquet_output, run_job
from heliosdb.windows import WINDOW_SPECS, CumulateWindow
from tests.oracle import (ALL_AGGS, MS, Group, agg_specs, assert_row_matches, by_group, ms_rows,
                          output_rows, watermarks)
from tests.operators.test_windows_oracle import KEY_SETS, assert_late_rows, event_tables, table_of

HOUR = 3_600 * 10**9
SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -------------------------------------------------------------------------------------------
# The oracle: every window of every event, replayed in arrival order
# -------------------------------------------------------------------------------------------
def cumulate_windows(t: int, max_size: int, step: int) -> List[Tuple[int, int]]:
    """``(start, end)`` of the cumulative windows holding time ``t``, by brute force."""
    start = t - t % max_size                   # Python's % floors: right before 1970 too
    return [(start, end) for end in range(start + step, start + max_size + 1, step) if t < end]


def cumulate_oracle(events: Sequence[dict], times: Sequence[int], keys: Sequence[str], max_size: int,
                    step: int, bound: int, lateness: int):
    """``(groups, late)``: ``{((start, end), key tuple): Group}`` and the late arrival positions.
    An event is late when every window holding it has ``end + lateness <= watermark``; else it
    joins each of them still within the lateness (an update of those already ended)."""
    groups: Dict[Tuple[Tuple[int, int], tuple], Group] = defaultdict(Group)
    late: List[int] = []
    for i, (e, t, wm) in enumerate(zip(events, times, watermarks(times, bound))):
        open_ = [w for w in cumulate_windows(t, max_size, step) if wm is None or w[1] + lateness > wm]
        if not open_:
            late.append(i)
            continue
        key = tuple(e[k] for k in keys)
        for w in open_:
            g = groups[(w, key)]
            g.events.append(e)
            if wm is None or w[1] > wm:
                g.on_time += 1
    return dict(groups), late


def check(table: pa.Table, keys, max_ms: int, step_ms: int, bound_ms: Optional[int], lateness_ms: int,
          out: pa.Table, late: pa.Table, late_count: int) -> None:
    events = table.to_pylist()
    groups, late_idx = cumulate_oracle(events, [e["ts"] * MS for e in events], keys, max_ms * MS,
                                       step_ms * MS, (bound_ms or 0) * MS, lateness_ms * MS)
    assert_late_rows(table, late, late_idx, {"streaming_late_events_total": late_count})
    rows = by_group(output_rows(out), keys)
    expected = {w + k: g for (w, k), g in groups.items()}
    assert set(rows) == set(expected), "the (window, key) groups"
    for gk, g in expected.items():
        counts = [r["n"] for r in rows[gk]]
        assert all(a < b for a, b in zip(counts, counts[1:])), f"{gk}: counts {counts} must grow"
        assert counts[-1] == len(g.events), f"{gk}: the last row has every event of the window"
        if g.on_time:
            assert counts[0] == g.on_time, f"{gk}: the first emission has the on-time events"
        for r in rows[gk]:
            assert_row_matches(r, g.events[: r["n"]], ALL_AGGS, where=str(gk))


def run(table: pa.Table, keys, spec, bound_ms: Optional[int], lateness_ms: int, batch_size: int,
        parallelism: int, backend: Optional[hdb.StateBackend] = None, aggs=ALL_AGGS):
    """source -> [with_watermark] -> key_by -> window(spec) -> aggregate, and its late output."""
    env = hdb.StreamEnvironment(hdb.StreamingConfig(
        parallelism=parallelism, state_backend=backend or hdb.StateBackend.memory()))
    s = env.from_arrow(table).with_batch_size(batch_size)
    if bound_ms is not None:
        s = s.with_watermark("ts", max_out_of_orderness=timedelta(milliseconds=bound_ms))
    w = (s.key_by(*keys).window(spec, time="ts", allowed_lateness=timedelta(milliseconds=lateness_ms))
         .aggregate(**agg_specs(aggs)))
    out, late = hdb.sinks.memory(), hdb.sinks.memory()
    w.sink(out)
    w.late_output().sink(late)
    result = env.execute(name="cumulate")
    return out.to_table(), late.to_table(), result.metrics["streaming_late_events_total"]


# -------------------------------------------------------------------------------------------
# The spec and its windower
# -------------------------------------------------------------------------------------------
def test_the_spec_is_found_by_the_api_without_being_listed():
    assert hdb.CumulateWindow is CumulateWindow and "CumulateWindow" in hdb.__all__
    assert CumulateWindow in WINDOW_SPECS


@pytest.mark.parametrize("max_size, step, match", [
    (timedelta(hours=1), timedelta(minutes=7), "whole number of steps"),
    (0, 1, "max_size must be positive"),
    (1, timedelta(0), "step must be positive"),
    (timedelta(days=1), timedelta(microseconds=1), "over 100,000"),
])
def test_a_bad_spec_says_what_to_fix(max_size, step, match):
    with pytest.raises(hdb.ConfigError, match=match):
        hdb.CumulateWindow.of(max_size, step)


def test_an_event_at_0530_is_in_every_hourly_window_of_its_day_from_6():
    # max_size 1 day, step 1 hour: 05:30 -> [0:00,6:00), [0:00,7:00) ... [0:00,24:00)
    w = hdb.CumulateWindow.of(timedelta(days=1), timedelta(hours=1)).windower()
    day = 19_000 * 24 * HOUR
    t = day + 5 * HOUR + 30 * 60 * 10**9
    pane = t - t % w.pane_ns
    got = [(w.start(x), w.end(x)) for x in w.windows_of(pane)]
    assert got == [(day, day + h * HOUR) for h in range(6, 25)]
    assert got == cumulate_windows(t, 24 * HOUR, HOUR)
    assert list(w.panes_of(day + 6 * HOUR)) == [day + h * HOUR for h in range(6)]


@settings(max_examples=200, deadline=None)
@given(step=st.integers(1, 7), steps=st.integers(1, 6), t=st.integers(-200, 200),
       before=st.integers(-200, 200), dt=st.integers(0, 60))
def test_the_windower_agrees_with_brute_force(step, steps, t, before, dt):
    max_size = step * steps
    w = hdb.CumulateWindow(max_size, step).windower()
    pane = t - t % step
    assert [(w.start(x), w.end(x)) for x in w.windows_of(pane)] == cumulate_windows(t, max_size, step)
    assert w.last_end(pane) == max(e for _, e in cumulate_windows(t, max_size, step))
    panes = sorted({pane, pane + step, pane - 3 * step})
    brute = sorted({x for p in panes for x in w.windows_of(p) if before < w.end(x) <= before + dt})
    assert w.due(panes, before, before + dt) == brute


# -------------------------------------------------------------------------------------------
# Golden results against the oracle
# -------------------------------------------------------------------------------------------
_common = dict(
    table=event_tables(),
    key_set=st.sampled_from(sorted(KEY_SETS)),
    bound_ms=st.one_of(st.none(), st.integers(0, 12)),
    lateness_ms=st.sampled_from([0, 0, 3, 10]),
    batch_size=st.integers(1, 16),
    parallelism=st.sampled_from([1, 2]),
    sizes=st.sampled_from([(6, 2), (9, 3), (4, 1), (5, 5), (10, 5), (12, 3)]),
)


@SETTINGS
@given(**_common)
# max 6, step 2, lateness 3: 1 (a), 7 (b) -> wm 7 emits [0,2) [0,4) [0,6) for a; 5 (a) is in
# [0,6) only (ended at 6 <= wm 7 < 6 + 3): an update of it
@example(table=table_of([1, 7, 5], ["a", "b", "a"]), key_set="str", bound_ms=None, lateness_ms=3,
         batch_size=1, parallelism=1, sizes=(6, 2))
def test_cumulative_windows_match_the_oracle(table, key_set, bound_ms, lateness_ms, batch_size,
                                             parallelism, sizes):
    keys = KEY_SETS[key_set]
    spec = hdb.CumulateWindow.of(timedelta(milliseconds=sizes[0]), timedelta(milliseconds=sizes[1]))
    out, late, late_count = run(table, keys, spec, bound_ms, lateness_ms, batch_size, parallelism)
    check(table, keys, *sizes, bound_ms, lateness_ms, out, late, late_count)


NUMERIC = tuple(a for a in ALL_AGGS if a[1] not in ("count_distinct", "quantile"))


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(**_common)
def test_cumulative_windows_on_rocksdb_match_the_oracle(table, key_set, bound_ms, lateness_ms,
                                                        batch_size, parallelism, sizes):
    # RocksDB state keeps no value sets (count_distinct, quantile): the other aggregates
    keys = KEY_SETS[key_set]
    spec = hdb.CumulateWindow.of(timedelta(milliseconds=sizes[0]), timedelta(milliseconds=sizes[1]))
    backend = hdb.StateBackend.rocksdb(path=tempfile.mkdtemp(prefix="cumulate-"))
    out, late, late_count = run(table, keys, spec, bound_ms, lateness_ms, batch_size, parallelism,
                                backend, NUMERIC)
    events = table.to_pylist()
    groups, late_idx = cumulate_oracle(events, [e["ts"] * MS for e in events], keys, sizes[0] * MS,
                                       sizes[1] * MS, (bound_ms or 0) * MS, lateness_ms * MS)
    assert_late_rows(table, late, late_idx, {"streaming_late_events_total": late_count})
    rows = by_group(output_rows(out), keys)
    assert set(rows) == {w + k for w, k in groups}
    for (w, k), g in groups.items():
        assert_row_matches(rows[w + k][-1], g.events, NUMERIC, where=str(w + k))


def test_late_rows_and_updates_follow_the_timeline():
    # max 6 ms, step 2 ms, no out-of-orderness, lateness 2 ms; one batch per row:
    #   a@1          -> [0,2) [0,4) [0,6) open
    #   b@7          -> wm 7: a's [0,2) [0,4) [0,6) emitted (n 1)
    #   a@5          -> pane [4,6): [0,6) ended at 6 <= wm 7 < 6 + 2: update (n 2)
    #   b@9          -> wm 9: b's [6,8) emitted (b@7 only); [0,6) is past 6 + 2: gone
    #   a@3          -> late (every window of it, up to [0,6), is past its lateness)
    t = table_of([1, 7, 5, 9, 3], ["a", "b", "a", "b", "a"])
    out, late, late_count = run(t, ["ks"], hdb.CumulateWindow.of(timedelta(milliseconds=6),
                                                                 timedelta(milliseconds=2)),
                                None, 2, 1, 1)
    assert ms_rows(out, "window_start", "window_end", "ks", "n") == [
        (0, 2, "a", 1), (0, 4, "a", 1), (0, 6, "a", 1), (0, 6, "a", 2), (6, 8, "b", 1),
        (6, 10, "b", 2), (6, 12, "b", 2)]
    assert late.column("id").to_pylist() == [4] and late_count == 1


# -------------------------------------------------------------------------------------------
# Processing time
# -------------------------------------------------------------------------------------------
def test_processing_time_windows_grow_with_the_wall_clock():
    # max 3 h, step 1 h, wall clock injected: rows at 0:30 (a, b), 1:20 (a); a tick at 2:10
    # closes [0,1) and [0,2); the end of input closes [0,3)
    now = [HOUR // 2]
    schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
    spec = hdb.CumulateWindow.of(timedelta(hours=3), timedelta(hours=1))
    op = WindowAggregate("w", schema, ["k"], spec, spec.windower(), ProcessingClock(lambda: now[0]),
                         [("n", hdb.count()), ("s", hdb.sum("v"))], 1 << 30)
    got = op.process_batch(pa.record_batch({"k": ["a", "b"], "v": [1, 2]}))
    now[0] = HOUR + 20 * 60 * 10**9
    got += op.process_batch(pa.record_batch({"k": ["a"], "v": [10]}))     # [0,1) closes after it
    now[0] = 2 * HOUR + 10 * 60 * 10**9
    got += op.on_tick(now[0]) + op.on_watermark(10) + op.on_watermark(WATERMARK_MAX)
    rows = [b for b in got if isinstance(b, pa.RecordBatch)]
    out = pa.Table.from_batches(rows, schema=op.output_schema)
    assert [(r["window_start"] // HOUR, r["window_end"] // HOUR, r["k"], r["n"], r["s"])
            for r in output_rows(out)] == [
        (0, 1, "a", 1, 1), (0, 1, "b", 1, 2), (0, 2, "a", 2, 11), (0, 2, "b", 1, 2),
        (0, 3, "a", 2, 11), (0, 3, "b", 1, 2)]
    assert [it.t for it in got if isinstance(it, Watermark)] == [10, WATERMARK_MAX]
    assert op.watermark_ns() is None and op.open_windows() == 0


def test_a_processing_time_job_emits_each_day_total_once():
    # every row arrives within moments: the last window of each day (end - start = 1 day)
    # holds every row of that day, and earlier windows of a day hold no more than later ones
    rows = [{"k": "a" if i % 3 else "b", "v": i} for i in range(50)]
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=10)))
    out = (env.from_iterable(rows).with_batch_size(7).key_by("k")
           .window(hdb.CumulateWindow.of(timedelta(days=1), timedelta(hours=1)))
           .aggregate(n=hdb.count()).collect())
    day = 24 * HOUR
    full = [r for r in output_rows(out) if r["window_end"] - r["window_start"] == day]
    assert sum(r["n"] for r in full) == 50
    for r in output_rows(out):
        assert r["window_start"] % day == 0 and (r["window_end"] - r["window_start"]) % HOUR == 0
    for k in ("a", "b"):
        ns = [r["n"] for r in sorted(output_rows(out), key=lambda r: r["window_end"]) if r["k"] == k]
        assert ns == sorted(ns)


# -------------------------------------------------------------------------------------------
# Checkpoints
# -------------------------------------------------------------------------------------------
def _events(n: int = 6_000) -> pa.Table:
    from tests.checkpoint import pipelines as P

    return P.events(n)


def _build(table: pa.Table, out: str, value_sets: bool):
    aggs = dict(n=hdb.count(), s=hdb.sum("v"), lo=hdb.min("v"), hi=hdb.max("v"), sd=hdb.stddev("v"),
                f=hdb.first("u"), l=hdb.last("v"))
    if value_sets:
        aggs.update(cd=hdb.count_distinct("u"), q=hdb.quantile("v", 0.9))

    def wire(env, crash):
        (env.from_arrow(table).inspect(crash or (lambda b: None))
         .with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=100))
         .key_by("k").window(hdb.CumulateWindow.of(timedelta(seconds=3), timedelta(seconds=1)),
                             allowed_lateness=timedelta(milliseconds=200))
         .aggregate(**aggs).name("agg").sink(hdb.sinks.parquet(out, rows_per_file=500)))
    return wire


def _config(storage: Optional[str], parallelism: int, backend: hdb.StateBackend) -> hdb.StreamingConfig:
    cp = None if storage is None else hdb.CheckpointConfig(
        interval=timedelta(milliseconds=1), storage=storage, timeout=timedelta(seconds=60))
    return hdb.StreamingConfig(parallelism=parallelism, batch_size=300, buffer_size=300, checkpoint=cp,
                               state_backend=backend)


@pytest.mark.parametrize("backend, crash_at, par", [
    ("memory", 7, (1, 2)), ("memory", 15, (2, 1)), ("rocksdb", 11, (1, 1)), ("rocksdb", 5, (2, 2)),
])
def test_a_crashed_and_restored_job_gives_the_uninterrupted_output(backend, crash_at, par, tmp_path):
    table = _events()
    value_sets = backend == "memory"

    def state():
        if backend == "memory":
            return hdb.StateBackend.memory()
        return hdb.StateBackend.rocksdb(path=str(tmp_path / "rocks"))

    ref = str(tmp_path / "ref")
    run_job(_build(table, ref, value_sets), _config(None, 1, hdb.StateBackend.memory()))
    expected = read_parquet_output(ref)
    assert expected.num_rows > 0
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    got = crash_and_restore(_build(table, out, value_sets), _config(storage, par[0], state()), crash_at,
                            name="cumulate", restore_config=_config(storage, par[1], state()))
    assert got.crashed
    assert_same_rows(read_parquet_output(out), expected)


def test_explain_shows_the_window_and_its_state_estimate():
    env = hdb.StreamEnvironment()
    (env.from_arrow(pa.table({"ts": [0], "k": ["a"], "v": [1.0]})).key_by("k")
     .window(hdb.CumulateWindow.of(timedelta(hours=1), timedelta(minutes=10)), time="ts")
     .aggregate(total=hdb.sum("v")).sink(hdb.sinks.memory()))
    text = str(env.explain(events_per_second=100))
    assert "CumulateWindow.of(1:00:00, 0:10:00)" in text
    assert "3600 s (window size)" in text
