"""Session windows, scenario by scenario, each with its timeline.

A key's session is ``[first, last + gap)``; an event whose ``[t, t + gap)`` overlaps a session
joins it, and one that overlaps two merges them.  With ``allowed_lateness`` a closed (emitted)
session stays until ``end + lateness <= watermark``: an event for it emits an update row (same
bounds if it stays closed), or reopens it if it moves its end past the watermark (emitted again
when it closes, with the new bounds).  Sessions are compared through ``(window_start ms,
window_end ms, key, n, total)`` rows in emission order; every scenario also runs against the
oracle of ``tests/oracle.py``.
"""
from __future__ import annotations

import itertools
from datetime import timedelta
from typing import List, Optional, Tuple

import pyarrow as pa
import pytest

import heliosdb as hdb
from tests.oracle import MS, ms_rows, run_windows, session_oracle

AGGS = (("n", "count", None, None, 0.01), ("total", "sum", "v", None, 0.01))
COLS = ("window_start", "window_end", "k", "n", "total")


def events(*rows: Tuple[str, int, int]) -> pa.Table:
    """(key, ts ms, v) in arrival order."""
    return pa.table({"k": pa.array([r[0] for r in rows], pa.string()),
                     "ts": pa.array([r[1] for r in rows], pa.int64()),
                     "v": pa.array([r[2] for r in rows], pa.int64())})


def sessions(table: pa.Table, gap_ms: int, bound_ms: Optional[int] = None, lateness_ms: int = 0,
             batch_size: int = 1, parallelism: int = 1):
    """(rows in emission order, late rows) of a session window over ``table``."""
    spec = hdb.SessionWindow.with_gap(timedelta(milliseconds=gap_ms))
    out, late, metrics = run_windows(table, ["k"], spec, bound_ms, lateness_ms, batch_size,
                                     parallelism, AGGS)
    assert metrics["streaming_late_events_total"] == late.num_rows
    return ms_rows(out, *COLS), late.to_pylist()


def oracle_sessions(table: pa.Table, gap_ms: int, bound_ms: Optional[int] = None,
                    lateness_ms: int = 0) -> List[tuple]:
    """The oracle's final sessions as (start, end, key, n, total), sorted."""
    evs = table.to_pylist()
    ss, _ = session_oracle(evs, [e["ts"] * MS for e in evs], ["k"], gap_ms * MS, (bound_ms or 0) * MS,
                           lateness_ms * MS)
    return sorted((s.start // MS, s.end(gap_ms * MS) // MS, s.key[0], len(s.events),
                   sum(e["v"] for _, e in s.events)) for s in ss)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("batch_size", [1, 3])
def test_event_bridging_two_sessions_merges_them_in_any_arrival_order(order, batch_size):
    # gap 10 ms, bound 20 ms (nothing closes before the end):
    #   0 ......... [0,10)      18 ......... [18,28)
    #            9 [9,19) overlaps both  ->  one session [0, 28), n 3
    # whether 9 arrives first (nothing to bridge yet), between or last (bridges two sessions)
    rows = [("a", 0, 1), ("a", 18, 2), ("a", 9, 4)]
    t = events(*[rows[i] for i in order])
    got, late = sessions(t, 10, bound_ms=20, batch_size=batch_size)
    assert got == [(0, 28, "a", 3, 7)]
    assert late == []
    assert got == oracle_sessions(t, 10, bound_ms=20)


def test_events_exactly_gap_apart_are_separate_sessions():
    # gap 10:  0 -> [0,10)   10 -> [10,20): [10,20) does not overlap [0,10) (ends are open)
    #          30 -> [30,40)  39 -> joins: [30, 49)
    t = events(("a", 0, 1), ("a", 10, 2), ("a", 30, 3), ("a", 39, 4))
    got, _ = sessions(t, 10)
    assert got == [(0, 10, "a", 1, 1), (10, 20, "a", 1, 2), (30, 49, "a", 2, 7)]


def test_session_update_after_emission_within_lateness():
    # gap 10, allowed lateness 10, bound 0 (wm = max seen):
    #   a@0 ........ [0,10)
    #   b@15         wm 15: [0,10) ends 10 <= 15 -> emitted (n 1); kept until wm >= 20
    #   a@5          joins: [0,15), end 15 <= wm 15, still closed -> update row now (n 2),
    #                superseding [0,10)
    t = events(("a", 0, 1), ("b", 15, 10), ("a", 5, 2))
    got, late = sessions(t, 10, lateness_ms=10)
    assert got == [(0, 10, "a", 1, 1), (0, 15, "a", 2, 3), (15, 25, "b", 1, 10)]
    assert late == []
    assert sorted(got[1:]) == oracle_sessions(t, 10, lateness_ms=10)


def test_session_reopened_by_an_event_that_extends_it_past_the_watermark():
    # gap 10, allowed lateness 10:
    #   a@0  ........ [0,10)
    #   b@12          wm 12: [0,10) emitted (n 1)
    #   a@8           joins, last 8 -> [0,18): end 18 > wm 12 -> reopened, no row yet
    #   b@30          wm 30: [0,18) emitted again (n 2), superseding [0,10); b's [12,22) too
    t = events(("a", 0, 1), ("b", 12, 10), ("a", 8, 2), ("b", 30, 20))
    got, late = sessions(t, 10, lateness_ms=10)
    a_rows = [r for r in got if r[2] == "a"]
    assert a_rows == [(0, 10, "a", 1, 1), (0, 18, "a", 2, 3)]
    assert late == []
    assert sorted([r for r in got if r[2] == "b"] + a_rows[-1:]) == oracle_sessions(t, 10, lateness_ms=10)


def test_emitted_session_merged_with_an_open_one_is_superseded_by_the_merged_row():
    # gap 10, allowed lateness 20:
    #   a@0   [0,10)      b@15: wm 15 -> [0,10) emitted (n 1)
    #   a@18  [18,28) open (wm 18)
    #   a@9   [9,19) overlaps [0,10) and [18,28) -> [0,28), end 28 > wm: reopened
    #   end   [0,28) emitted (n 3)
    t = events(("a", 0, 1), ("b", 15, 10), ("a", 18, 2), ("a", 9, 4))
    got, _ = sessions(t, 10, lateness_ms=20)
    assert [r for r in got if r[2] == "a"] == [(0, 10, "a", 1, 1), (0, 28, "a", 3, 7)]
    assert oracle_sessions(t, 10, lateness_ms=20) == [(0, 28, "a", 3, 7), (15, 25, "b", 1, 10)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_event_for_a_dropped_session_goes_to_late_output(parallelism):
    # gap 10, no lateness:
    #   a@0 [0,10)    b@30: wm 30 -> [0,10) emitted and dropped
    #   a@5: [5,15) overlaps no open session, 15 + 0 <= 30 -> late output (not aggregated)
    #   a@25: [25,35) ends after wm -> a new session
    t = events(("a", 0, 1), ("b", 30, 10), ("a", 5, 100), ("a", 25, 2))
    got, late = sessions(t, 10, parallelism=parallelism)
    assert late == [{"k": "a", "ts": 5, "v": 100}]
    assert sorted(got) == [(0, 10, "a", 1, 1), (25, 35, "a", 1, 2), (30, 40, "b", 1, 10)]
    assert sorted(got) == oracle_sessions(t, 10)


def test_event_within_lateness_overlapping_no_session_starts_a_closed_session():
    # gap 10, allowed lateness 25:
    #   a@0 [0,10)    b@30: wm 30 -> [0,10) emitted, kept until wm >= 35
    #   a@12: [12,22) overlaps nothing; 22 + 25 > 30 -> not late: a session of its own,
    #         already closed (22 <= wm); it is emitted (at the latest at the end of input)
    t = events(("a", 0, 1), ("b", 30, 10), ("a", 12, 2))
    got, late = sessions(t, 10, lateness_ms=25)
    assert late == []
    assert sorted(got) == [(0, 10, "a", 1, 1), (12, 22, "a", 1, 2), (30, 40, "b", 1, 10)]
    assert sorted(got) == oracle_sessions(t, 10, lateness_ms=25)


def test_sessions_of_different_keys_never_merge():
    # gap 10: a@0 b@5 a@8 b@12 -> a [0,18), b [5,22): interleaved keys stay apart
    t = events(("a", 0, 1), ("b", 5, 2), ("a", 8, 3), ("b", 12, 4))
    got, _ = sessions(t, 10, batch_size=4)
    assert sorted(got) == [(0, 18, "a", 2, 4), (5, 22, "b", 2, 6)]


def test_session_update_with_unchanged_bounds_supersedes_by_window_and_key():
    # gap 10, allowed lateness 10:
    #   a@0 a@4 ...... [0,14)     b@20: wm 20 -> [0,14) emitted (n 2)
    #   a@2            inside [0,14): bounds unchanged -> update row [0,14) (n 3)
    t = events(("a", 0, 1), ("a", 4, 2), ("b", 20, 10), ("a", 2, 4))
    got, _ = sessions(t, 10, lateness_ms=10)
    assert [r for r in got if r[2] == "a"] == [(0, 14, "a", 2, 3), (0, 14, "a", 3, 7)]


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_one_batch_merging_a_chain_of_sessions_folds_every_aggregate_into_the_survivor(backend, tmp_path):
    # gap 10 ms, bound 100 ms; first batch: three sessions of key a
    #   0 [0,10)        18 [18,28)        36 [36,46)
    # second batch (one micro-batch): 9 bridges [0,10) and [18,28) (folded into the newer,
    # [18,28)), then 27 bridges that one and [36,46) (folded into [36,46)): the merge log is a
    # chain (a session merged into one that is merged later in the same batch)
    #   -> one session [0, 46), n 5
    t = events(("a", 0, 1), ("a", 18, 2), ("a", 36, 3), ("a", 9, 4), ("a", 27, 5))
    spec = hdb.SessionWindow.with_gap(timedelta(milliseconds=10))
    state = (hdb.StateBackend.memory() if backend == "memory"
             else hdb.StateBackend.rocksdb(path=str(tmp_path / "rocks")))
    env = hdb.StreamEnvironment(hdb.StreamingConfig(state_backend=state, batch_size=3))
    sink = hdb.sinks.memory()
    (env.from_arrow(t).with_watermark("ts", max_out_of_orderness=timedelta(milliseconds=100))
     .key_by("k").window(spec, time="ts")
     .aggregate(n=hdb.count(), total=hdb.sum("v"), lo=hdb.min("v"), hi=hdb.max("v"),
                sd=hdb.stddev("v"), first=hdb.first("v"), last=hdb.last("v"),
                distinct=hdb.count_distinct("v"))
     .sink(sink))
    env.execute(name=f"session-chain-{backend}")
    (row,) = sink.to_table().to_pylist()
    assert (row["n"], row["total"], row["lo"], row["hi"], row["first"], row["last"], row["distinct"]) == \
        (5, 15, 1, 5, 1, 5, 5)
    assert row["sd"] == pytest.approx(1.5811388300841898)       # sample stddev of 1..5
    assert row["window_end"].timestamp() - row["window_start"].timestamp() == pytest.approx(0.046)


# -------------------------------------------------------------------------------------------
# A batch cut by watermarks, in one call (process_run) or one call per piece
# -------------------------------------------------------------------------------------------
# The watermark assigner cuts a batch before every row behind the watermark its predecessors
# imply (for sessions every watermark value matters) and hands the pieces with the watermarks
# between them to the session operator as one run.  Whatever happens between the pieces - a
# session emitted at a watermark and then extended, merged or updated by a later row of the
# same run, a session dropped past its lateness before a row that would have joined it - the
# run must give what one process_batch per piece and one on_watermark per watermark give.

import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliosdb.kernels.window import EXACT_GRID
from heliosdb.operators.base import WATERMARK_MAX, Operator, SideOutput, Watermark
from heliosdb.operators.session import SessionAggregate
from heliosdb.operators.watermark import WatermarkAssigner
from heliosdb.operators.window import window_operator
from tests.oracle import ALL_AGGS, agg_specs
from tests.operators.test_windows_oracle import KEY_SETS, check_sessions, event_tables

RUN_SETTINGS = settings(max_examples=60, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def feed(table: pa.Table, keys, gap_ms: int, bound_ms: int, lateness_ms: int, batch_size: int,
         runs: bool, backend=None):
    """(rows, late rows, last watermark, operator) of a session window fed ``table`` in
    batches through a watermark assigner: each batch's pieces in one ``process_run`` call
    (``runs``) or one call per piece and watermark (the per-piece path)."""
    spec = hdb.SessionWindow.with_gap(timedelta(milliseconds=gap_ms))
    wa = WatermarkAssigner("wm", table.schema, "ts", bound_ms * MS, None, EXACT_GRID)
    op = window_operator("w", table.schema, keys, spec, "ts", list(agg_specs(ALL_AGGS).items()),
                         1 << 40, lateness_ms * MS, backend)
    op.late_output_read = True                  # as the planner sets it when late_output() is read
    rows, late, mark = [], [], None
    for b in table.to_batches(max_chunksize=batch_size):
        items = wa.process_batch(b)
        emitted = op.process_run(items) if runs else Operator.process_run(op, items)
        for it in emitted:
            if isinstance(it, SideOutput):
                late.append(it.batch)
            elif isinstance(it, Watermark):
                mark = it.t
            else:
                rows.append(it)
    rows += [it for it in op.on_watermark(WATERMARK_MAX) + op.close() if not isinstance(it, Watermark)]
    out = pa.Table.from_batches(rows, schema=op.output_schema)
    return out, pa.Table.from_batches(late, schema=table.schema), mark, op


def assert_same_run_and_pieces(table, key_set, gap_ms, bound_ms, lateness_ms, batch_size, backend=None):
    keys = KEY_SETS[key_set]
    got, late, mark, op = feed(table, keys, gap_ms, bound_ms, lateness_ms, batch_size, True, backend)
    want, want_late, want_mark, ref = feed(table, keys, gap_ms, bound_ms, lateness_ms, batch_size,
                                           False, backend)
    # Same rows in the same order, every value bit for bit (NaN and -0.0 included).
    assert got.num_rows == want.num_rows
    for name in got.column_names:
        assert repr(got.column(name).to_pylist()) == repr(want.column(name).to_pylist()), name
    assert late.to_pylist() == want_late.to_pylist() or repr(late.to_pylist()) == repr(want_late.to_pylist())
    assert (op.updates, op.late_events, op.watermark, mark) == \
        (ref.updates, ref.late_events, ref.watermark, want_mark)
    assert op.run_stats["runs"] > 0 or table.num_rows == 0
    check_sessions(table, keys, gap_ms, bound_ms, lateness_ms, got, late,
                   {"streaming_late_events_total": op.late_events})


@RUN_SETTINGS
@given(table=event_tables(max_n=60), key_set=st.sampled_from(sorted(KEY_SETS)),
       gap_ms=st.sampled_from([1, 3, 5, 10]), bound_ms=st.integers(0, 12),
       lateness_ms=st.sampled_from([0, 0, 3, 10, 40]), batch_size=st.integers(1, 64))
def test_a_run_gives_what_one_call_per_piece_gives(table, key_set, gap_ms, bound_ms, lateness_ms,
                                                  batch_size):
    # e.g. gap 3, bound 0, lateness 10, one batch [a@0 b@5 a@2 a@4]: cut before a@2 (wm 5):
    # [0,3) emitted at wm 5, then a@2 joins it -> an update row [0,5), then a@4 reopens it
    # ([0,7) ends after wm 5) -> emitted again at the end.  Same rows, same order, either way.
    assert_same_run_and_pieces(table, key_set, gap_ms, bound_ms, lateness_ms, batch_size)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(table=event_tables(max_n=40), gap_ms=st.sampled_from([3, 10]), bound_ms=st.integers(0, 6),
       lateness_ms=st.sampled_from([0, 10]), batch_size=st.integers(4, 40))
def test_a_run_on_rocksdb_state_gives_what_one_call_per_piece_gives(table, gap_ms, bound_ms,
                                                                    lateness_ms, batch_size):
    backend = hdb.StateBackend.rocksdb(path=tempfile.mkdtemp(prefix="h6-sessions-"))
    assert_same_run_and_pieces(table, "str", gap_ms, bound_ms, lateness_ms, batch_size, backend)


def test_one_batch_emits_updates_then_merges_an_emitted_session_as_per_piece():
    # gap 10, bound 0 (wm = max seen), lateness 40; ONE batch, cut by the assigner before
    # a row behind the watermark the rows before it imply (a@5: wm 20; a@21: wm 45):
    #   a@0   A [0,10)
    #   b@20  B [20,30)
    #   | wm 20: A emitted (n 1)
    #   a@5   joins A -> [0,15): ends before wm 20 -> update (n 2)
    #   a@30  C [30,40)
    #   b@45  D [45,55)
    #   | wm 45: B, then C (n 1) emitted (by end)
    #   a@21  joins C -> [21,40)
    #   a@14  bridges A [0,15) and C [21,40) -> [0,40) (n 5), emitted both: one update
    #         after the piece (A's state merged into C's first, then the piece's rows)
    #   end   D emitted
    t = with_oracle_columns(events(("a", 0, 1), ("b", 20, 2), ("a", 5, 4), ("a", 30, 8),
                                   ("b", 45, 16), ("a", 21, 32), ("a", 14, 64)))
    got, late, _, op = feed(t, ["ks"], 10, 0, 40, 64, True)
    want, want_late, _, ref = feed(t, ["ks"], 10, 0, 40, 64, False)
    assert op.run_stats["runs"] == 1 and op.run_stats["parts"] == 3
    assert got.equals(want) and late.num_rows == want_late.num_rows == 0
    assert ms_rows(got, "window_start", "window_end", "ks", "n", "sv") == [
        (0, 10, "a", 1, 1), (0, 15, "a", 2, 5), (20, 30, "b", 1, 2), (30, 40, "a", 1, 8),
        (0, 40, "a", 5, 109), (45, 55, "b", 1, 16)]
    assert op.updates == ref.updates == 2


def with_oracle_columns(t: pa.Table) -> pa.Table:
    """``events`` rows as the oracle's event table (id, ts, ki, ks, v, f, s)."""
    n = t.num_rows
    v = t.column("v")
    return pa.table({"id": pa.array(range(n), pa.int64()), "ts": t.column("ts"),
                     "ki": pa.array([0] * n, pa.int64()), "ks": t.column("k"), "v": v,
                     "f": pa.array(np.asarray(v.to_pylist(), float) / 8), "s": t.column("k")})
