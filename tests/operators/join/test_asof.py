"""As-of joins at operator level against DuckDB's ``ASOF JOIN``: each on-time left row gets
the latest on-time right row of its key at or before its time (within the tolerance), however
the rows arrived; rows behind the watermark when they arrive are late.

Timeline::

    R (1,a) at 2 and at 6 | L (1,a) at 5 | W 6 -> (5, 2) | W 7 drops the version at 2
"""
from __future__ import annotations

from typing import Optional

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliosdb.operators.join import JoinSpec, make_join

from .harness import (MS, _table, annotate, batch, drive, examples, expected_rows, finish, normalize, schedules,
                      schemas)

SETTINGS = settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_for(how, coalesce, tolerance: Optional[int]):
    _, _, lon, ron = schemas(coalesce)
    return JoinSpec("asof", lon, ron, how=how, coalesce_keys=coalesce, left_time="ts", right_time="ts",
                    tolerance_ns=None if tolerance is None else tolerance * MS)


def asof_pairs(L, R, how, tolerance):
    con = duckdb.connect()
    con.register("l_rows", _table(L))
    con.register("r_rows", _table(R))
    got = con.execute("SELECT l.id, r.id, l.ts - r.ts FROM l_rows l ASOF LEFT JOIN r_rows r "
                      "ON l.k1 = r.k1 AND l.k2 = r.k2 AND l.ts >= r.ts").fetchall()
    out = []
    for lid, rid, age in got:
        if rid is not None and tolerance is not None and age > tolerance:
            rid = None
        if rid is None and how == "inner":
            continue
        out.append((lid, rid))
    return out


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("how", ["left", "inner"])
@SETTINGS
@given(steps=schedules(unique_right_times=True), tolerance=st.one_of(st.none(), st.integers(0, 8)))
def test_asof_join_matches_duckdb_asof(how, coalesce, steps, tolerance):
    spec = spec_for(how, coalesce, tolerance)
    ann = annotate(steps)
    on_time = lambda rows: [r for r in rows if r["wm"] is None or r["ts"] >= r["wm"]]   # noqa: E731
    L, R = on_time(ann["L"]), on_time(ann["R"])
    left, right, _, _ = schemas(coalesce)
    op = make_join(spec, left, right, name="aj")
    op.late_sides_read = (True, True)
    run = finish(op, drive(op, steps, left, right))
    want = expected_rows(asof_pairs(L, R, how, tolerance), L, R, spec, False)
    assert normalize(run.rows, False) == normalize(want, False)
    assert sorted(run.late["late_left"]) == sorted(r["id"] for r in ann["L"] if r not in L)
    assert sorted(run.late["late_right"]) == sorted(r["id"] for r in ann["R"] if r not in R)
    assert op.state_size_bytes() == 0


def test_asof_timeline_waits_for_the_watermark_and_prunes_old_versions():
    spec = spec_for("left", True, None)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    run = drive(op, [("R", [(2, 1, "a", 0), (6, 1, "a", 1)]), ("L", [(5, 1, "a", 0)]), ("W", 5)], left, right)
    assert run.rows == []                                   # the left row at 5 waits: a right row at 5 may come
    run = drive(op, [("W", 6)], left, right, run)
    assert [(r[3], r[5]) for r in run.rows] == [(0, 0)]
    run = drive(op, [("W", 7)], left, right, run)
    assert op.sides[1].live == 1                            # the version at 6 answers every later row


def test_asof_answer_does_not_depend_on_arrival_order():
    spec = spec_for("left", True, None)
    left, right, _, _ = schemas(True)
    rights = [(1, 1, "a", 0), (4, 1, "a", 1), (8, 1, "a", 2)]
    lefts = [(5, 1, "a", 0), (9, 1, "a", 1), (3, 1, "a", 2)]
    got = []
    for steps in ([("R", rights), ("L", lefts)], [("L", lefts), ("R", rights[::-1])],
                  [("L", lefts[:1]), ("R", rights[2:]), ("L", lefts[1:]), ("R", rights[:2])]):
        op = make_join(spec, left, right)
        got.append(normalize(finish(op, drive(op, steps, left, right)).rows, False))
    assert got[0] == got[1] == got[2]
    assert sorted((r[3], r[5]) for r in got[0]) == [(0, 1), (1, 2), (2, 0)]


def test_asof_left_join_keeps_a_row_with_a_null_key():
    spec = spec_for("left", True, None)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    run = drive(op, [("R", [(1, None, "a", 0)]), ("L", [(5, None, "a", 0)])], left, right)
    assert run.rows == [(5, None, "a", 0, None, None)]
