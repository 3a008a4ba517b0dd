"""Every window kind and every aggregate, end to end, against the plain-Python oracles of
``tests/oracle.py`` (hypothesis).

Streams are out of order (some events far enough back to be late), have duplicate times, times
around the epoch, 2023 and +-9e12 ms (near the int64-nanosecond limits; +-1e15 ms is beyond
them and rejected, see test_lateness.py), keys that are strings, ints or both (with null keys),
values with nulls (and NaN, -0.0), and are cut into random micro-batches; they run through
tumbling, sliding (size a multiple of the slide or not) and session windows, with 1 or 2
parallel window subtasks, with or without ``with_watermark`` and ``allowed_lateness``.

What is compared:

- ``late_output()`` holds exactly the input rows the oracle finds late, and
  ``streaming_late_events_total`` counts them;
- tumbling/sliding: for each (window, key) the rows, in emission order, are the first emission
  (the events that arrived before the watermark passed the window's end) and then updates
  (each a longer arrival-order prefix of the window's events); the last row has every non-late
  event of the window;
- sessions: the last row of every oracle session (its final bounds) matches it; every other
  row is an earlier state of one of them (inside its bounds, fewer events); without lateness
  there are no updates, so the rows are exactly the oracle's sessions;
- running keyed aggregates: after each batch one row per key the batch touched; each key's
  rows are growing arrival-order prefixes, the last one over all its events.
"""
from __future__ import annotations

import itertools
from datetime import timedelta
from typing import List, Optional, Sequence

import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from tests.oracle import (ALL_AGGS, MS, agg_specs, assert_row_matches, by_group, hopping_oracle,
                          output_rows, run_windows, running_oracle, session_oracle)

LATE = "streaming_late_events_total"

ORIGINS = [0, -37, 1_700_000_000_000, 9_000_000_000_000, -9_000_000_000_000]   # ms
STRINGS = ["a", "b", "", "ü", None]
KEY_SETS = {"str": ["ks"], "int": ["ki"], "both": ["ki", "ks"]}
SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -------------------------------------------------------------------------------------------
# Streams
# -------------------------------------------------------------------------------------------
_floats = st.one_of(st.none(), st.integers(-400, 400).map(lambda x: x / 8),
                    st.sampled_from([float("nan"), -0.0, 0.0, 1e6]))


@st.composite
def event_tables(draw, max_n: int = 40) -> pa.Table:
    """Events in arrival order: time walks forward 0-4 ms a step (duplicates common) and
    jumps back now and then, a little (out of order) or a lot (late)."""
    n = draw(st.integers(1, max_n))
    origin = draw(st.sampled_from(ORIGINS))
    steps = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    back = draw(st.lists(st.one_of(st.just(0), st.just(0), st.integers(0, 6), st.integers(0, 40)),
                         min_size=n, max_size=n))
    ts = list(itertools.accumulate(steps, initial=origin))[1:]
    ts = [t - b for t, b in zip(ts, back)]
    nkeys = draw(st.integers(1, 4))
    ki = draw(st.lists(st.one_of(st.none(), st.integers(-1, nkeys - 2)), min_size=n, max_size=n))
    ks = draw(st.lists(st.sampled_from(STRINGS[:nkeys] + [None]), min_size=n, max_size=n))
    v = draw(st.lists(st.one_of(st.none(), st.integers(-50, 50)), min_size=n, max_size=n))
    f = draw(st.lists(_floats, min_size=n, max_size=n))
    s = draw(st.lists(st.sampled_from(STRINGS), min_size=n, max_size=n))
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "ts": pa.array(ts, pa.int64()),
        "ki": pa.array(ki, pa.int64()),
        "ks": pa.array(ks, pa.string()),
        "v": pa.array(v, pa.int64()),
        "f": pa.array(f, pa.float64()),
        "s": pa.array(s, pa.string()),
    })


def assert_late_rows(table: pa.Table, late: pa.Table, late_idx: List[int], metrics) -> None:
    """The late output is exactly the late input rows (all columns), counted in the metric."""
    got = sorted(late.to_pylist(), key=lambda r: r["id"])
    expected = table.take(pa.array(late_idx, pa.int64())).to_pylist() if late_idx else []
    assert [r["id"] for r in got] == [r["id"] for r in expected], "late event ids"
    assert late.schema == table.schema
    for g, e in zip(got, expected):
        assert repr(g) == repr(e)              # repr: NaN == NaN, -0.0 != 0.0
    assert metrics[LATE] == len(late_idx)


def check_hopping(table: pa.Table, keys: Sequence[str], size_ms: int, slide_ms: int,
                  bound_ms: Optional[int], lateness_ms: int, out: pa.Table, late: pa.Table,
                  metrics, aggs=ALL_AGGS) -> None:
    events = table.to_pylist()
    times = [e["ts"] * MS for e in events]
    size, slide = size_ms * MS, slide_ms * MS
    groups, late_idx = hopping_oracle(events, times, keys, size, slide, (bound_ms or 0) * MS,
                                      lateness_ms * MS)
    assert_late_rows(table, late, late_idx, metrics)
    rows = by_group(output_rows(out), keys)
    expected = {(s, s + size) + k: g for (s, k), g in groups.items()}
    assert set(rows) == set(expected), "the (window, key) groups"
    for gk, g in expected.items():
        rs = rows[gk]
        counts = [r["n"] for r in rs]
        assert all(a < b for a, b in zip(counts, counts[1:])), f"{gk}: counts {counts} must grow"
        assert counts[-1] == len(g.events), f"{gk}: the last row has every event of the window"
        if g.on_time:
            assert counts[0] == g.on_time, f"{gk}: the first emission has the on-time events"
        for r in rs:
            assert_row_matches(r, g.events[: r["n"]], aggs, where=str(gk))


def check_sessions(table: pa.Table, keys: Sequence[str], gap_ms: int, bound_ms: Optional[int],
                   lateness_ms: int, out: pa.Table, late: pa.Table, metrics, aggs=ALL_AGGS) -> None:
    events = table.to_pylist()
    times = [e["ts"] * MS for e in events]
    gap = gap_ms * MS
    sessions, late_idx = session_oracle(events, times, keys, gap, (bound_ms or 0) * MS,
                                        lateness_ms * MS)
    assert_late_rows(table, late, late_idx, metrics)
    rows = by_group(output_rows(out), keys)
    finals = {(s.start, s.end(gap)) + s.key: s for s in sessions}
    assert len(finals) == len(sessions), "two oracle sessions of a key with the same bounds"
    for gk, sess in finals.items():
        assert gk in rows, f"session {gk} ({len(sess.events)} events) was never emitted"
        assert_row_matches(rows[gk][-1], sess.ordered(), aggs, where=f"session {gk}")
    for gk, rs in rows.items():
        if gk in finals:
            continue
        start, end, key = gk[0], gk[1], gk[2:]
        holders = [s for s in sessions if s.key == key and s.start <= start and end <= s.end(gap)]
        assert holders, f"row {gk} is no state of any session"
        assert any(r["n"] < len(s.events) for r in rs for s in holders), gk
    if lateness_ms == 0:
        # Without lateness a session is emitted once, when closed, and dropped: no updates.
        assert sorted(map(repr, rows)) == sorted(map(repr, finals))
        assert all(len(rs) == 1 for rs in rows.values()), "a session emitted twice"


# -------------------------------------------------------------------------------------------
# Properties
# -------------------------------------------------------------------------------------------
# The @example cases are the smallest streams that found engine bugs (reported, then fixed):
# tumbling rows aliasing the live accumulators, sliding updates of windows past their
# lateness, and quantile over no values raising IndexError.


def table_of(ts: List[int], ks: List[Optional[str]]) -> pa.Table:
    """A stream for an @example: times and string keys; every value column null."""
    n = len(ts)
    none = [None] * n
    return pa.table({"id": pa.array(range(n), pa.int64()), "ts": pa.array(ts, pa.int64()),
                     "ki": pa.array(none, pa.int64()), "ks": pa.array(ks, pa.string()),
                     "v": pa.array(none, pa.int64()), "f": pa.array(none, pa.float64()),
                     "s": pa.array(none, pa.string())})


_common = dict(
    table=event_tables(),
    key_set=st.sampled_from(sorted(KEY_SETS)),
    bound_ms=st.one_of(st.none(), st.integers(0, 12)),
    lateness_ms=st.sampled_from([0, 0, 3, 10]),
    batch_size=st.integers(1, 16),
    parallelism=st.sampled_from([1, 2]),
)


@SETTINGS
@given(size_ms=st.sampled_from([1, 3, 5, 10]), **_common)
# window 3 ms, lateness 3 ms: 2 (a), 4 (b) -> wm 4 emits [0,3) a n=1; 2 (a) updates it to n=2
@example(table=table_of([2, 4, 2], ["a", "b", "a"]), key_set="str", bound_ms=None, lateness_ms=3,
         batch_size=1, parallelism=1, size_ms=3)
def test_tumbling_windows_match_oracle(table, key_set, bound_ms, lateness_ms, batch_size,
                                       parallelism, size_ms):
    # [0, size) [size, 2 size) ...   each event in one window; late when end + L <= wm
    keys = KEY_SETS[key_set]
    spec = hdb.TumblingWindow.of(timedelta(milliseconds=size_ms))
    out, late, metrics = run_windows(table, keys, spec, bound_ms, lateness_ms, batch_size, parallelism)
    check_hopping(table, keys, size_ms, size_ms, bound_ms, lateness_ms, out, late, metrics)


def _check_sliding(table, key_set, bound_ms, lateness_ms, batch_size, parallelism, size_ms, slide_ms):
    keys = KEY_SETS[key_set]
    spec = hdb.SlidingWindow.of(timedelta(milliseconds=size_ms), timedelta(milliseconds=slide_ms))
    out, late, metrics = run_windows(table, keys, spec, bound_ms, lateness_ms, batch_size, parallelism)
    check_hopping(table, keys, size_ms, slide_ms, bound_ms, lateness_ms, out, late, metrics)


@SETTINGS
@given(size_slide=st.sampled_from([(10, 5), (6, 2), (9, 3), (4, 1)]), **_common)
# size 4, slide 1, no lateness: -4 (a) -> wm -4; -5 (b) belongs to [-8,-4) (closed: end -4 <=
# wm) and [-7,-3) .. [-5,-1): [-8,-4) must get no row for b
@example(table=table_of([-4, -5], ["a", "b"]), key_set="str", bound_ms=None, lateness_ms=0,
         batch_size=1, parallelism=1, size_slide=(4, 1))
def test_sliding_windows_size_multiple_of_slide_match_oracle(table, key_set, bound_ms, lateness_ms,
                                                             batch_size, parallelism, size_slide):
    # size 6, slide 2: [0,6) [2,8) [4,10) ... each event in 3 windows (panes of 2)
    _check_sliding(table, key_set, bound_ms, lateness_ms, batch_size, parallelism, *size_slide)


@SETTINGS
@given(size_slide=st.sampled_from([(10, 4), (5, 3), (7, 2), (5, 5)]), **_common)
# size 5, slide 3, no lateness: 1 (a), 6 (b) -> wm 6 closes [0,5); 4 (a) is in [0,5) (closed)
# and [3,8) (open): only [3,8) may change
@example(table=table_of([1, 6, 4], ["a", "b", "a"]), key_set="str", bound_ms=None, lateness_ms=0,
         batch_size=1, parallelism=1, size_slide=(5, 3))
def test_sliding_windows_size_not_multiple_of_slide_match_oracle(table, key_set, bound_ms, lateness_ms,
                                                                 batch_size, parallelism, size_slide):
    # size 5, slide 3 (panes of 1): [0,5) [3,8) [6,11) ... an event is in 1 or 2 windows
    _check_sliding(table, key_set, bound_ms, lateness_ms, batch_size, parallelism, *size_slide)


@SETTINGS
@given(gap_ms=st.sampled_from([1, 3, 5, 10]), **_common)
@example(table=table_of([0], ["a"]), key_set="str", bound_ms=None, lateness_ms=0, batch_size=1,
         parallelism=1, gap_ms=3)
def test_session_windows_match_oracle(table, key_set, bound_ms, lateness_ms, batch_size,
                                      parallelism, gap_ms):
    # gap 3: events 0 1 2 | 7 8 | 20  ->  [0, 5) [7, 11) [20, 23); an event bridging two merges them
    keys = KEY_SETS[key_set]
    spec = hdb.SessionWindow.with_gap(timedelta(milliseconds=gap_ms))
    out, late, metrics = run_windows(table, keys, spec, bound_ms, lateness_ms, batch_size, parallelism)
    check_sessions(table, keys, gap_ms, bound_ms, lateness_ms, out, late, metrics)


@SETTINGS
@given(table=event_tables(max_n=60), key_set=st.sampled_from(sorted(KEY_SETS)),
       batch_size=st.integers(1, 16), parallelism=st.sampled_from([1, 2]))
@example(table=table_of([0], ["a"]), key_set="str", batch_size=1, parallelism=1)
def test_running_keyed_aggregates_match_oracle(table, key_set, batch_size, parallelism):
    # batches:  [a a b] [b c] [a]   ->  rows a(2) b(1) | b(2) c(1) | a(3): one per touched key
    aggs = ALL_AGGS
    keys = KEY_SETS[key_set]
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism,
                                                    batch_timeout=timedelta(seconds=60)))
    out = (env.from_arrow(table).with_batch_size(batch_size).key_by(*keys)
           .aggregate(**agg_specs(aggs)).collect())
    events = table.to_pylist()
    expected = running_oracle(events, keys)
    rows = by_group(output_rows(out), keys, window=False)
    assert set(rows) == set(expected)
    for k, evs in expected.items():
        counts = [r["n"] for r in rows[k]]
        assert all(a < b for a, b in zip(counts, counts[1:])), f"{k}: counts {counts} must grow"
        assert counts[-1] == len(evs)
        for r in rows[k]:
            assert_row_matches(r, evs[: r["n"]], aggs, where=f"key {k}")
    # One row per key a batch touched (the batcher cuts at batch_size: its timeout is long).
    touched = sum(len({tuple(e[c] for c in keys) for e in events[b: b + batch_size]})
                  for b in range(0, len(events), batch_size))
    assert out.num_rows == touched
    assert out.column_names == keys + [name for name, *_ in aggs]
