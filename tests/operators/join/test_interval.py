"""Interval joins at operator level against DuckDB's ``BETWEEN``: rows behind the watermark
when they arrive are late (left out of the expectation, found on the late outputs), the rest
join every row of the other side within the interval, whatever the arrival order.

Timeline (between=(-2, 3) ms)::

    L (1,a) at 10 waits for rights in [8, 13] | R (1,a) at 12 -> pair | W 14 drops L@10
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliosdb.operators.join import JoinSpec, make_join

from .harness import (MS, annotate, batch, drive, examples, expected_rows, finish, normalize, schedules, schemas,
                      sql_pairs)

SETTINGS = settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOWS = ["inner", "left", "right", "full"]


def spec_for(how, coalesce, lo, hi):
    _, _, lon, ron = schemas(coalesce)
    return JoinSpec("interval", lon, ron, how=how, coalesce_keys=coalesce, between=(lo * MS, hi * MS),
                    left_time="ts", right_time="ts")


def on_time(rows):
    ok = [r for r in rows if r["wm"] is None or r["ts"] >= r["wm"]]
    return ok, sorted(r["id"] for r in rows if r not in ok)


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("how", HOWS)
@SETTINGS
@given(steps=schedules(), bounds=st.tuples(st.integers(-10, 10), st.integers(0, 10)))
def test_interval_join_matches_duckdb_between(how, coalesce, steps, bounds):
    lo, hi = bounds[0], bounds[0] + bounds[1]
    spec = spec_for(how, coalesce, lo, hi)
    ann = annotate(steps)
    L, late_l = on_time(ann["L"])
    R, late_r = on_time(ann["R"])
    pairs = sql_pairs(L, R, how, f"r.ts BETWEEN l.ts + ({lo}) AND l.ts + ({hi})")
    left, right, _, _ = schemas(coalesce)
    op = make_join(spec, left, right, name="ij")
    op.late_sides_read = (True, True)
    run = finish(op, drive(op, steps, left, right))
    assert normalize(run.rows, False) == normalize(expected_rows(pairs, L, R, spec, False), False)
    assert sorted(run.late["late_left"]) == late_l
    assert sorted(run.late["late_right"]) == late_r
    assert op.state_size_bytes() == 0


def test_interval_timeline_drops_a_row_once_the_watermark_passes_its_interval():
    # between=(-2, 3): L@10 waits for rights in [8, 13]
    spec = spec_for("left", True, -2, 3)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    run = drive(op, [("L", [(10, 1, "a", 0)]), ("R", [(12, 1, "a", 0)]), ("W", 13)], left, right)
    assert [r[3] for r in run.rows] == [0] and op.sides[0].live == 1      # still waiting at 13
    run = drive(op, [("W", 14)], left, right, run)
    assert op.sides[0].live == 0 and len(run.rows) == 1                   # matched: not emitted again


def test_left_interval_join_emits_an_unmatched_row_when_its_interval_passes():
    spec = spec_for("left", True, 0, 5)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    run = drive(op, [("L", [(10, 1, "a", 0), (10, None, "a", 1)])], left, right)
    assert [r[3] for r in run.rows] == [1]                     # a null key: unmatched at once
    run = drive(op, [("W", 15)], left, right, run)
    assert len(run.rows) == 1                                  # 10 + 5 is not behind 15 yet
    run = drive(op, [("W", 16)], left, right, run)
    assert [r[3] for r in run.rows] == [1, 0] and run.rows[1][4:] == (None, None)


def test_interval_state_is_bounded_by_the_interval_while_running():
    # In-order rows, 10 per ms, interval 5 ms: the state never holds much more than 2 x 5 ms.
    spec = spec_for("inner", True, -5, 0)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    most = 0
    for t in range(0, 3000):
        rows = [(t, i % 3, "a", t * 10 + i) for i in range(10)]
        op.process_side(0, batch(0, rows, left, right))
        op.process_side(1, batch(1, rows, left, right))
        op.on_watermark(t * MS)
        most = max(most, op.sides[0].n + op.sides[1].n)
    assert most <= 4 * (6 * 10) + 2 * 1024
    op.close()
    assert op.state_size_bytes() == 0
