"""Checkpoints of join state: a run snapshotted after step ``cut`` (the tables written to
Parquet and read back, as a checkpoint does), restored into a new operator and continued gives
exactly the rows and late rows of an uninterrupted run; so does restoring into two subtasks
that each select their keys with one selector on the left key names (rows routed to them as a
hash exchange on each side's keys would)."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb.operators.join import JoinSpec, make_join

from .harness import MS, Run, drive, examples, finish, normalize, schedules, schemas, subtask_router

SETTINGS = settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIGS = {
    "tumbling-full": dict(kind="window", how="full", window=hdb.TumblingWindow(10 * MS)),
    "sliding-left": dict(kind="window", how="left", window=hdb.SlidingWindow(12 * MS, 4 * MS)),
    "session-full": dict(kind="window", how="full", window=hdb.SessionWindow(5 * MS)),
    "interval-full": dict(kind="interval", how="full", between=(-3 * MS, 4 * MS)),
    "asof-left": dict(kind="asof", how="left", tolerance_ns=6 * MS),
    "regular-full": dict(kind="regular", how="full", ttl_ns=8 * MS),
    "regular-inner-forever": dict(kind="regular", how="inner"),
}


def spec_for(name: str, coalesce: bool) -> JoinSpec:
    _, _, lon, ron = schemas(coalesce)
    return JoinSpec(left_on=lon, right_on=ron, coalesce_keys=coalesce, left_time="ts", right_time="ts",
                    **CONFIGS[name])


def through_parquet(tables):
    out = {}
    for name, t in tables.items():
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        out[name] = pq.read_table(io.BytesIO(buf.getvalue()))
    return out


def operator(spec, coalesce):
    left, right, _, _ = schemas(coalesce)
    op = make_join(spec, left, right, name="j")
    op.late_sides_read = (True, True)
    return op


def outcome(run: Run, window: bool):
    return normalize(run.rows, window), sorted(run.late["late_left"]), sorted(run.late["late_right"])


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@SETTINGS
@given(steps=schedules(max_steps=16, unique_right_times=True), data=st.data())
def test_restore_continues_exactly(name, coalesce, steps, data):
    cut = data.draw(st.integers(0, len(steps)))
    spec = spec_for(name, coalesce)
    left, right, _, _ = schemas(coalesce)
    window = spec.kind == "window"
    whole = outcome(finish(op := operator(spec, coalesce), drive(op, steps, left, right)), window)

    first = operator(spec, coalesce)
    before = drive(first, steps[:cut], left, right)
    snap = first.snapshot()
    tables, meta = through_parquet(snap.tables), snap.meta
    second = operator(spec, coalesce)
    second.restore(tables, [meta], None, True, owned=True)
    assert second.watermark == first.watermark and second.late_events == first.late_events
    run = Run()
    run.rows, run.late = list(before.rows), {k: list(v) for k, v in before.late.items()}
    finish(second, drive(second, steps[cut:], left, right, run))
    assert outcome(run, window) == whole

    # into two subtasks, each selecting its keys of both sides' tables by the left key names
    run = Run()
    run.rows, run.late = list(before.rows), {k: list(v) for k, v in before.late.items()}
    for i in range(2):
        route, select = subtask_router(spec, left, right, 2, i)
        sub = operator(spec, coalesce)
        sub.restore(tables, [meta], select, i == 0, owned=False)
        finish(sub, drive(sub, steps[cut:], left, right, run, route=route))
    assert outcome(run, window) == whole


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_snapshot_tables_carry_both_sides_keys_under_the_left_names(name):
    spec = spec_for(name, False)
    left, right, _, _ = schemas(False)
    op = operator(spec, False)
    drive(op, [("L", [(10, 1, "a", 0)]), ("R", [(11, 1, "a", 0)])], left, right)
    snap = op.snapshot()
    for side in ("left", "right"):
        t = snap.tables[side]
        # the type both sides fit: int64 (int64 / int32), large_string (string / large_string)
        assert t.schema.field("k1").type == pa.int64() and t.schema.field("k2").type == pa.large_string()
        assert t.column("k1").to_pylist() == [1] and t.column("k2").to_pylist() == ["a"]
    assert snap.tables["right"].column("row.rk1").type == pa.int32()
    assert snap.meta["watermark"] == op.watermark
