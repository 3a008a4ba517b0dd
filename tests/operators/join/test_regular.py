"""Regular joins (two unbounded streams, rows kept for ``ttl``) at operator level against
DuckDB: a pair joins when the earlier of its rows was kept (key not null, not yet expired when
it arrived) and had not expired by the time the later one arrived (expiry: the watermark
passing ``t + ttl``).  Outer joins emit a row that never matched when it expires or at the end.

Timeline (ttl 5 ms)::

    L (1,a) at 0 | W 4 | R (1,a) at 4 -> pair | W 6 drops L@0 | R (1,a) at 9: no partner
"""
from __future__ import annotations

from typing import Optional

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliosdb.operators.base import Tick
from heliosdb.operators.join import JoinSpec, make_join

from .harness import (MS, annotate, batch, drive, examples, expected_rows, finish, normalize, schedules, schemas,
                      sql_pairs)

SETTINGS = settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOWS = ["inner", "left", "right", "full"]
FOREVER = 10**15


def spec_for(how, coalesce, ttl: Optional[int], timed: bool = True):
    _, _, lon, ron = schemas(coalesce)
    return JoinSpec("regular", lon, ron, how=how, coalesce_keys=coalesce,
                    left_time="ts" if timed else None, right_time="ts" if timed else None,
                    ttl_ns=None if ttl is None else ttl * MS)


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("how", HOWS)
@SETTINGS
@given(steps=schedules(), ttl=st.one_of(st.none(), st.integers(1, 15)))
def test_regular_join_matches_duckdb(how, coalesce, steps, ttl):
    spec = spec_for(how, coalesce, ttl)
    ann = annotate(steps)
    for r in ann["L"] + ann["R"]:
        r["exp"] = FOREVER if ttl is None else r["ts"] + ttl
        r["wm"] = -FOREVER if r["wm"] is None else r["wm"]
    cond = ("(l.seq < r.seq AND l.exp >= l.wm AND l.exp >= r.wm) OR "
            "(r.seq < l.seq AND r.exp >= r.wm AND r.exp >= l.wm)")
    pairs = sql_pairs(ann["L"], ann["R"], how, cond, cols=("exp",))
    left, right, _, _ = schemas(coalesce)
    op = make_join(spec, left, right, name="rj")
    run = finish(op, drive(op, steps, left, right))
    assert normalize(run.rows, False) == normalize(expected_rows(pairs, ann["L"], ann["R"], spec, False), False)
    assert run.late == {"late_left": [], "late_right": []}
    assert op.state_size_bytes() == 0


def test_regular_join_emits_each_match_once_as_it_arrives():
    spec = spec_for("inner", True, 5)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    run = drive(op, [("L", [(0, 1, "a", 0)]), ("W", 4), ("R", [(4, 1, "a", 0)])], left, right)
    assert [(r[3], r[5]) for r in run.rows] == [(0, 0)]
    run = drive(op, [("W", 6), ("R", [(9, 1, "a", 1)])], left, right, run)
    assert len(run.rows) == 1                               # L@0 expired at 5 < 6


def test_regular_join_without_event_time_expires_on_the_wall_clock():
    clock = [0]
    spec = spec_for("left", True, 5, timed=False)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right, now=lambda: clock[0])
    assert op.process_side(0, batch(0, [(0, 1, "a", 0), (0, 2, "a", 1)], left, right)) == []
    clock[0] = 3 * MS
    out = op.process_side(1, batch(1, [(0, 1, "a", 0)], left, right))
    assert [b.column("lv").to_pylist() for b in out] == [[0]]
    clock[0] = 6 * MS
    out = op.on_tick(6 * MS)
    assert out[-1] == Tick(6 * MS)
    assert [b.column("lv").to_pylist() for b in out[:-1]] == [[1]]        # L1 expired unmatched
    assert op.sides[0].live == 0
    op.close()
    assert op.state_size_bytes() == 0


def test_regular_join_with_no_ttl_keeps_rows_until_the_end():
    spec = spec_for("full", True, None)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    run = drive(op, [("L", [(0, 1, "a", 0)]), ("W", 10**9), ("R", [(10**9, 2, "a", 0)])], left, right)
    assert run.rows == [] and op.sides[0].live == 1
    rows = finish(op, run).rows
    assert sorted(((r[3], r[5]) for r in rows), key=str) == [(0, None), (None, 0)]
