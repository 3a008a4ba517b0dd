"""Late rows of a join, per side: each side's ``late_output(side)`` is read or not on its own;
the rows of a side nobody reads are counted and dropped with one warning for that side, and
the job's end, its result and ``diagnose()`` say per side how many were kept or dropped.

Timeline (both inputs without a disorder bound, one row a batch; a side's later batches wait
until the join's watermark is at 5 s, so which rows are late does not depend on thread timing)::

    left:  t=5 s | t=1 s (behind the join's watermark of 5 s: late), t=0.5 s (late)
    right: t=6 s | t=2 s (late)
"""
from __future__ import annotations

import logging
import time

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.operators.base import LateCount
from heliosdb.operators.join import JoinOperator, JoinSpec, make_join

MS = 1_000_000


def _held(holder, t_ms):
    """An ``inspect`` function that lets a side's first batch through and holds the later ones
    until the join's watermark has reached ``t_ms``: the rows behind it are then late whatever
    order the two sides reach the join in."""
    batches = [0]

    def hold(batch):
        batches[0] += 1
        deadline = time.monotonic() + 60
        while batches[0] > 1 and time.monotonic() < deadline:
            op = holder.get("op")
            if op is not None and op.watermark >= t_ms * MS:
                return
            time.sleep(0.001)

    return hold


def _job(read):
    """A join whose late outputs ``read`` (a subset of left/right) are sunk; run it with
    :func:`_start`."""
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    holder: dict = {}
    left = (env.from_arrow(pa.table({"ts": [5000, 1000, 500], "k": [1, 1, 1]})).with_batch_size(1)
            .inspect(_held(holder, 5000)).with_watermark("ts"))
    right = (env.from_arrow(pa.table({"ts": [6000, 2000], "k": [1, 1]})).with_batch_size(1)
             .inspect(_held(holder, 5000)).with_watermark("ts"))
    j = left.join(right, on="k", between=(0, 1)).name("j")
    j.sink(hdb.sinks.memory())
    sinks = {}
    for side in read:
        sinks[side] = hdb.sinks.memory()
        j.late_output(side).sink(sinks[side])
    return env, holder, sinks


def _start(env, holder, name):
    handle = env.execute_async(name=name)
    (holder["op"],) = [o for o in handle._job.metrics.state_ops if isinstance(o, JoinOperator)]
    return handle


def _late_warnings(caplog, logger):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING
            and "late" in r.getMessage()]


def _late_rows():
    """Both sides' late rows at the operator: the watermark first, then rows behind it."""
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    op = make_join(JoinSpec("interval", "k", "k", between=(0, 0), left_time="ts", right_time="ts"),
                   schema, schema, name="j")
    return op, lambda side, ts: op.process_side(side, pa.record_batch({"ts": ts, "k": [1] * len(ts)}))


def test_each_side_is_kept_or_dropped_on_its_own():
    op, send = _late_rows()
    op.late_sides_read = (True, False)
    op.on_watermark(10_000 * MS)
    kept = send(0, [1, 2])
    dropped = send(1, [3])
    assert [(o.tag, o.batch.num_rows) for o in kept] == [("late_left", 2)] and dropped == []
    assert op.late_counts() == [LateCount("j", "left", 2, True), LateCount("j", "right", 1, False)]
    assert op.late_events == 3 and op.late_output_read is False


def test_a_dropped_side_warns_once_and_each_side_for_itself(caplog):
    op, send = _late_rows()
    op.on_watermark(10_000 * MS)
    with caplog.at_level(logging.WARNING, logger="heliosdb.join"):
        for _ in range(3):
            assert send(0, [1]) == [] and send(1, [2, 3]) == []
    warned = _late_warnings(caplog, "heliosdb.join")
    assert len(warned) == 2
    assert "late left row dropped" in warned[0] and "late_output('left')" in warned[0]
    assert "late right rows dropped" in warned[1] and "late_output('right')" in warned[1]
    assert [(c.side, c.events) for c in op.late_counts()] == [("left", 3), ("right", 6)]


def test_setting_late_output_read_on_a_join_sets_both_sides():
    op, _ = _late_rows()
    op.late_output_read = True
    assert op.late_sides_read == (True, True) and op.late_output_read


@pytest.mark.parametrize("read", [(), ("left",), ("right",), ("left", "right")])
def test_the_planner_marks_each_side_read_as_its_late_output_is_sunk(read):
    env, holder, _ = _job(read)
    _start(env, holder, f"join-late-plan-{'-'.join(read) or 'none'}").wait()
    op = holder["op"]
    assert op.late_sides_read == ("left" in read, "right" in read)


@pytest.mark.parametrize("read", [(), ("left",), ("right",), ("left", "right")])
def test_the_job_says_per_side_what_was_kept_and_what_dropped(read, caplog):
    env, holder, sinks = _job(read)
    with caplog.at_level(logging.INFO, logger="heliosdb"):
        handle = _start(env, holder, "join-late")
        result = handle.wait()
    expected = {"left": 2, "right": 1}
    # the result: per side, kept or dropped
    got = {(o["side"], o["events"], o["kept"]) for o in result.metrics["late_outputs"]}
    assert got == {(side, n, side in read) for side, n in expected.items()}
    assert result.late_events == {"j": 3}
    for side, sink in sinks.items():
        assert sink.to_table().num_rows == expected[side]
    # the end of the job: one line per side, a warning for a dropped one
    ends = {r.getMessage(): r.levelno for r in caplog.records if r.name == "heliosdb.runtime"
            and "step 'j'" in r.getMessage()}
    for side, n in expected.items():
        kept = side in read
        line = (f"job 'join-late': step 'j': {n} late {side} rows, sent to its late_output('{side}')" if kept else
                f"job 'join-late': step 'j': {n} late {side} rows dropped (nothing reads its "
                f"late_output('{side}'); sink it to keep them)")
        assert ends.get(line) == (logging.INFO if kept else logging.WARNING), sorted(ends)
    # the operator warned once per dropped side
    assert len(_late_warnings(caplog, "heliosdb.join")) == 2 - len(read)
    # diagnose(): a finding per side
    findings = [f.message for f in handle.diagnose(interval_s=0).findings if f.kind == "late"]
    for side, n in expected.items():
        if side in read:
            assert f"{n} late {side} rows at 'j', sent to its late_output('{side}')" in findings
        else:
            assert f"{n} late {side} rows dropped by 'j' (nothing reads its late_output('{side}'))" in findings
