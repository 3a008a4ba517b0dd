"""Window joins (tumbling, sliding, session) at operator level against DuckDB: the inputs are
windowed by the rule the operator documents (a row joins the windows that had not closed when
it arrived; sessions by the streaming session rule, :func:`harness.assign_sessions`), then
joined in SQL on (window, keys) with the join's ``how``.

Timeline of the tumbling case (size 10 ms)::

    L k=(1,a) at 3 | R k=(1,a) at 7 | W 10 -> [0, 10) emits (3, 7) | L at 8 now is late
"""
from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

import heliosdb as hdb
from heliosdb.operators.join import JoinSpec, make_join

from .harness import (MS, annotate, assign_sessions, drive, examples, expected_rows, finish, normalize,
                      pane_windows, schedules, schemas, sql_pairs)

SETTINGS = settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOWS = ["inner", "left", "right", "full"]
WINDOWS = {"tumbling": (10, 10), "sliding": (12, 4)}


def spec_for(window, how: str, coalesce: bool) -> JoinSpec:
    _, _, lon, ron = schemas(coalesce)
    return JoinSpec("window", lon, ron, how=how, coalesce_keys=coalesce, window=window,
                    left_time="ts", right_time="ts")


def run_op(spec, steps, coalesce):
    left, right, _, _ = schemas(coalesce)
    op = make_join(spec, left, right, name="wj")
    op.late_sides_read = (True, True)
    return finish(op, drive(op, steps, left, right)), op


def windowed(rows, windows_of):
    """Rows expanded into the windows they join, and the late ones."""
    out, late = [], []
    for r in rows:
        wins = [w for w in windows_of(r) if r["wm"] is None or w[1] > r["wm"]]
        if not wins:
            late.append(r["id"])
        out += [{**r, "ws": s, "we": e} for s, e in wins]
    return out, late


def check(spec, steps, coalesce, windows_of):
    ann = annotate(steps)
    L, late_l = windowed(ann["L"], windows_of)
    R, late_r = windowed(ann["R"], windows_of)
    pairs = sql_pairs(L, R, spec.how, "l.ws = r.ws AND l.we = r.we",
                      ["coalesce(l.ws, r.ws) * 1000000", "coalesce(l.we, r.we) * 1000000"], ("ws", "we"))
    run, op = run_op(spec, steps, coalesce)
    assert normalize(run.rows, True) == normalize(expected_rows(pairs, L, R, spec, True), True)
    assert sorted(run.late["late_left"]) == sorted(late_l)
    assert sorted(run.late["late_right"]) == sorted(late_r)
    assert op.late_events == len(late_l) + len(late_r)
    assert op.state_size_bytes() == 0


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("kind", sorted(WINDOWS))
@SETTINGS
@given(steps=schedules())
def test_pane_window_join_matches_duckdb(kind, how, coalesce, steps):
    size, slide = WINDOWS[kind]
    window = hdb.SlidingWindow(size * MS, slide * MS) if kind == "sliding" else hdb.TumblingWindow(size * MS)
    check(spec_for(window, how, coalesce), steps, coalesce, lambda r: pane_windows(r["ts"], size, slide))


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("how", HOWS)
@SETTINGS
@given(steps=schedules())
def test_session_window_join_matches_duckdb(how, coalesce, steps):
    gap = 5
    bounds, late = assign_sessions(steps, gap)
    spec = spec_for(hdb.SessionWindow(gap * MS), how, coalesce)

    def windows_of(side):
        def of(r):
            if (side, r["id"]) in late:
                return []
            return [bounds[(side, r["id"])]]
        return of

    ann = annotate(steps)
    L, late_l = windowed(ann["L"], windows_of("L"))
    R, late_r = windowed(ann["R"], windows_of("R"))
    pairs = sql_pairs(L, R, how, "l.ws = r.ws AND l.we = r.we",
                      ["coalesce(l.ws, r.ws) * 1000000", "coalesce(l.we, r.we) * 1000000"], ("ws", "we"))
    run, op = run_op(spec, steps, coalesce)
    assert normalize(run.rows, True) == normalize(expected_rows(pairs, L, R, spec, True), True)
    assert sorted(run.late["late_left"]) == sorted(late_l)
    assert sorted(run.late["late_right"]) == sorted(late_r)
    assert op.state_size_bytes() == 0


def test_tumbling_timeline_emits_at_the_window_end_and_late_rows_go_aside():
    # L (1,a)@3, R (1,a)@7 | W 10 -> [0, 10) emits the pair | L (1,a)@8 is late
    spec = spec_for(hdb.TumblingWindow(10 * MS), "inner", True)
    steps = [("L", [(3, 1, "a", 0)]), ("R", [(7, 1, "a", 0)])]
    run, _ = run_op(spec, steps + [("W", 10), ("L", [(8, 1, "a", 1)])], True)
    assert [r[2:] for r in run.rows] == [(3, 1, "a", 0, 7, 0)]
    assert run.late["late_left"] == [1]
    assert run.marks == [10 * MS]


def test_window_join_emits_nothing_before_the_watermark():
    spec = spec_for(hdb.TumblingWindow(10 * MS), "full", True)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    steps = [("L", [(3, 1, "a", 0)]), ("R", [(7, 1, "a", 0)]), ("W", 9)]
    run = drive(op, steps, left, right)
    assert run.rows == [] and op.open_windows() == 1 and op.state_size_bytes() > 0
    run.take(op.on_watermark(10 * MS))
    assert len(run.rows) == 1 and op.open_windows() == 0 and op.state_size_bytes() == 0


def test_duplicate_keys_give_every_pair_and_null_keys_none():
    spec = spec_for(hdb.TumblingWindow(10 * MS), "inner", True)
    steps = [("L", [(1, 1, "a", 0), (2, 1, "a", 1), (3, None, "a", 2)]),
             ("R", [(4, 1, "a", 0), (5, 1, "a", 1), (6, None, "a", 2)]), ("W", 10)]
    run, _ = run_op(spec, steps, True)
    assert sorted((r[5], r[7]) for r in run.rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_window_join_of_string_keys_and_large_output_is_batched(monkeypatch):
    from heliosdb.operators.join import base

    monkeypatch.setattr(base, "OUT_ROWS", 7)
    spec = spec_for(hdb.TumblingWindow(10 * MS), "inner", True)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    steps = [("L", [(1, 1, "a", i) for i in range(5)]), ("R", [(2, 1, "a", i) for i in range(4)])]
    drive(op, steps, left, right)
    out = [b for b in op.on_watermark(10 * MS) if isinstance(b, pa.RecordBatch)]
    assert [b.num_rows for b in out] == [7, 7, 6]
    assert all(b.schema == op.output_schema for b in out)


def test_a_batch_with_many_interleaved_panes_is_cut_in_pane_order():
    # 200 rows alternating between 100 windows of 1 ms: more runs than the clock keeps in place
    spec = spec_for(hdb.TumblingWindow(1 * MS), "full", True)
    rows = [((i * 37) % 100, i % 3, "a", i) for i in range(200)]
    rights = [(t, k, "a", t) for t in range(100) for k in range(2)]
    again = [(t, k, s, i + 1000) for t, k, s, i in rows[:10]]
    run, _ = run_op(spec, [("L", rows), ("R", rights), ("W", 50), ("L", again)], True)
    late = [i for t, _, _, i in again if t < 50]
    pairs = sorted((l[3], r[3]) for l in rows + again for r in rights
                   if l[0] == r[0] and l[1] == r[1] and l[3] not in late)
    got = sorted((r[5], r[7]) for r in run.rows if r[5] is not None and r[7] is not None)
    assert got == pairs
    assert sorted(run.late["late_left"]) == late and late
