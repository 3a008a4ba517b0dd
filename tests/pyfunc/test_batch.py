"""``batch(n)`` / ``unbatch()``: batches of exactly n rows, and watermarks that never overtake
the rows they follow (``heliosdb/operators/rebatch.py``)."""
from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb.errors import ConfigError, PlanError
from heliosdb.operators.base import WATERMARK_MAX, Watermark
from heliosdb.operators.rebatch import RebatchOperator


def rows(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"i": list(range(start, start + n))})


def test_watermark_waits_for_the_rows_before_it():
    # in:  [0 1 2] W10 [3 4 5] W20 [6] end        n = 4
    # out: [0 1 2 3] W10 [4 5 6] W20 Wmax          (W10 after row 2, W20 after row 5)
    op = RebatchOperator(4, "b")
    out = []
    out += op.process_batch(rows(0, 3))
    out += op.on_watermark(10)
    assert out == []                                  # held: rows 0-2 are still buffered
    out += op.process_batch(rows(3, 3))
    out += op.on_watermark(20)
    out += op.process_batch(rows(6, 1))
    out += op.on_watermark(WATERMARK_MAX)
    shapes = [("rows", o["i"].to_pylist()) if isinstance(o, pa.RecordBatch) else ("wm", o.t)
              for o in out]
    assert shapes == [("rows", [0, 1, 2, 3]), ("wm", 10), ("rows", [4, 5, 6]), ("wm", 20),
                      ("wm", WATERMARK_MAX)]


def test_watermark_with_nothing_buffered_passes_at_once():
    op = RebatchOperator(2, "b")
    assert op.process_batch(rows(0, 2))[0].num_rows == 2
    assert op.on_watermark(5) == [Watermark(5)]


events = st.lists(st.one_of(st.integers(0, 9).map(lambda n: ("rows", n)),
                            st.just(("wm", None))), max_size=30)


@given(events=events, n=st.integers(1, 7), end=st.booleans())
@settings(max_examples=300, deadline=None)
def test_exact_sizes_order_and_watermarks_never_overtake_rows(events, n, end):
    op = RebatchOperator(n, "b")
    out, sent, marks = [], 0, 0
    before = {}                     # watermark -> rows received before it
    for kind, k in events:
        if kind == "rows":
            out += op.process_batch(rows(sent, k))
            sent += k
        else:
            marks += 1
            before[marks] = sent
            out += op.on_watermark(marks)
    out += op.on_watermark(WATERMARK_MAX) if end else op.close()
    emitted, seen_marks = [], []
    batches = [o for o in out if isinstance(o, pa.RecordBatch)]
    for o in out:
        if isinstance(o, Watermark):
            if o.t != WATERMARK_MAX:
                assert len(emitted) >= before[o.t]        # never ahead of its rows
                seen_marks.append(o.t)
        else:
            emitted += o["i"].to_pylist()
    assert emitted == list(range(sent))
    assert all(b.num_rows == n for b in batches[:-1]) and all(0 < b.num_rows <= n for b in batches)
    assert seen_marks == sorted(before) if (end or not sent) else seen_marks == sorted(seen_marks)


@pytest.mark.parametrize("source_batch", [1, 3, 64])
def test_map_batches_sees_exact_sizes_between_batch_and_unbatch(source_batch):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=source_batch))
    seen = []

    def record(b):
        seen.append(b.num_rows)
        return b

    src = env.generate(count=23)
    out = (src.batch(5).map_batches(record, schema=src.schema).unbatch()
           .filter(lambda e: e.value >= 0).collect())
    assert seen == [5, 5, 5, 5, 3] and out.num_rows == 23


def test_window_results_are_the_same_with_batch_in_front():
    ts = [0, 100, 900, 1200, 1500, 2100, 2200, 3900, 4000, 4100]
    t = pa.table({"ts": ts, "k": [1, 2, 1, 1, 2, 2, 1, 2, 1, 2], "v": [float(i) for i in range(10)]})

    def run(n):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=4))
        s = env.from_arrow(t).with_watermark(time="ts", max_out_of_orderness=timedelta(0))
        if n:
            s = s.batch(n).unbatch()
        return (s.key_by("k").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
                .aggregate(n=hdb.count(), total=hdb.sum("v")).collect()
                .sort_by([("window_start", "ascending"), ("k", "ascending")]))

    assert run(3).equals(run(0))


def test_unbatch_needs_a_batch_and_batch_needs_a_positive_size():
    env = hdb.StreamEnvironment()
    with pytest.raises(PlanError, match="no batch\\(\\)"):
        env.generate(count=3).unbatch()
    with pytest.raises(PlanError):
        env.generate(count=3).batch(2).unbatch().unbatch()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            env.generate(count=3).batch(bad)


def test_unbatch_fuses_away():
    env = hdb.StreamEnvironment()
    s = (env.generate(count=3).batch(2).filter(lambda e: e.value > 0).unbatch()
         .map(lambda e: {"v": e.value * 2}))
    plan = str(s.explain())
    assert plan.count("fused kernel [") == 1 and "batch[" in plan
