"""Watermarks per split: a source of several splits (here a replayed capture of partitions,
``from_arrow(split_by=)``) gives the windows of one partition holding the same events, whatever
the partitioning, the pace at which partitions are read, the batch size and the parallelism.

Timeline (1 s windows, bound 0): partition 0 is read first, up to 9 s; partition 1 then
delivers 1 s..9 s.  One watermark over both would be at 9 s when partition 1 starts, and all of
partition 1 would be late; per split the watermark waits for partition 1.
"""
from datetime import timedelta

import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

import heliosdb as hdb
from heliosdb.testing import assert_same_rows

BOUND_MS = 300


def _windows(stream, parallelism):
    keyed = stream.key_by("k")
    tum = keyed.window(hdb.TumblingWindow.of(timedelta(seconds=1))).aggregate(
        n=hdb.count(), s=hdb.sum("v"), first=hdb.first("v"), last=hdb.last("v"))
    sli = keyed.window(hdb.SlidingWindow.of(timedelta(seconds=2), timedelta(seconds=1))).aggregate(
        n=hdb.count(), mx=hdb.max("v"))
    out = {}
    for name, w in (("tumbling", tum), ("sliding", sli)):
        out[name], out[name + "_late"] = hdb.sinks.memory(), hdb.sinks.memory()
        w.set_parallelism(parallelism).sink(out[name])
        w.late_output().sink(out[name + "_late"])
    return out


def _run(table, split_by, batch, parallelism):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=batch))
    src = env.from_arrow(table, split_by=split_by)
    sinks = _windows(src.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=BOUND_MS)),
                     parallelism)
    env.execute(name="splits")
    return {k: s.to_table() for k, s in sinks.items()}


@st.composite
def captures(draw):
    """One stream within the bound (no late event), partitioned at random, its partitions
    read at random paces (a random interleaving that keeps each partition's order)."""
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    parts = draw(st.integers(1, 5))
    rng = np.random.default_rng(seed)
    ts = 10_000 + np.sort(rng.integers(0, 20_000, n)) + rng.integers(0, BOUND_MS, n)
    k = rng.integers(0, 4, n)
    v = np.arange(n, dtype=np.float64)
    p = rng.integers(0, parts, n)
    # Arrival: repeatedly pick a partition (weighted: each has its own pace), take its next rows.
    pace = rng.random(parts) + 0.05
    queues = [list(np.flatnonzero(p == j)) for j in range(parts)]
    order = []
    while any(queues):
        live = [j for j in range(parts) if queues[j]]
        j = live[rng.choice(len(live), p=pace[live] / pace[live].sum())]
        take = int(rng.integers(1, 40))
        order += queues[j][:take]
        del queues[j][:take]
    order = np.array(order, np.int64)
    single = pa.table({"ts": ts, "k": k, "v": v, "p": np.zeros(n, np.int64)})
    arrival = single.take(pa.array(order)).set_column(3, "p", pa.array(p[order]))
    return single, arrival, draw(st.sampled_from([1, 7, 64, 65_536])), draw(st.sampled_from([1, 2]))


@settings(max_examples=40, deadline=None)
@given(captures())
def test_partitions_read_at_any_pace_give_the_single_partition_result(case):
    single, arrival, batch, parallelism = case
    expected = _run(single, None, 65_536, 1)
    got = _run(arrival, "p", batch, parallelism)
    for name in ("tumbling", "sliding"):
        assert got[name + "_late"].num_rows == 0
        # first/last follow arrival order, which the partitions' interleaving changes
        cols = [c for c in expected[name].column_names if c not in ("first", "last")]
        assert_same_rows(got[name].select(cols), expected[name].select(cols))


def test_a_partition_read_after_the_others_is_not_late():
    # partition 0: 0.5 s .. 9.5 s, then partition 1: the same times; bound 0.
    t = np.arange(500, 10_000, 1000)
    table = pa.table({"ts": np.concatenate([t, t]), "k": [1] * 20, "v": [1.0] * 20,
                      "p": [0] * 10 + [1] * 10})
    got = _run(table, "p", 4, 1)
    assert got["tumbling_late"].num_rows == 0
    assert got["tumbling"]["n"].to_pylist() == [2] * 10
    one = _run(table, None, 4, 1)                  # one watermark: partition 1 is all late
    assert one["tumbling_late"].num_rows == 9


def test_a_split_late_within_itself_is_still_late():
    # partition 1 goes back 5 s within itself: beyond the bound, so late, as with one split.
    table = pa.table({"ts": [1000, 8000, 9000, 9500, 1500], "k": [1] * 5, "v": [1.0] * 5,
                      "p": [0, 1, 0, 1, 1]})
    got = _run(table, "p", 65_536, 1)
    assert got["tumbling_late"]["ts"].to_pylist() == [1500]


def test_rows_without_an_event_time_fail_or_are_skipped_and_counted(caplog):
    import pytest

    rows = pa.table({"ts": pa.array([1000, None, 2000, None], pa.int64()), "k": [1, 1, 1, 1],
                     "v": [1.0, 2.0, 3.0, 4.0]})
    env = hdb.StreamEnvironment()
    with pytest.raises(hdb.DataError, match="on_null='skip'"):
        (env.from_arrow(rows).with_watermark(time="ts").key_by("k")
         .window(hdb.TumblingWindow.of(timedelta(seconds=10))).aggregate(n=hdb.count()).collect())
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    (env.from_arrow(rows).with_watermark(time="ts", on_null="skip").key_by("k")
     .window(hdb.TumblingWindow.of(timedelta(seconds=10))).aggregate(n=hdb.count()).sink(out))
    with caplog.at_level("WARNING"):
        result = env.execute(name="nulls")
    assert out.to_table()["n"].to_pylist() == [2]
    assert result.metrics["streaming_dead_letters_total"]["null_event_time"] == 2
    assert sum("without an event time" in r.getMessage() for r in caplog.records) == 1


def test_a_restored_replay_is_not_held_by_splits_that_already_ended(tmp_path):
    """Partition 0 ends before the checkpoint; after the restore only partition 1 is left:
    partition 0 must not hold the watermark back (the windows close as the data goes)."""
    import heliosdb as hdb
    from heliosdb.connectors.sources import ArrowSource
    from heliosdb.operators.splitclock import SplitClock
    from heliosdb.kernels.window import INT64_MIN

    table = pa.table({"p": [0, 0, 1, 1, 1], "ts": [100, 200, 300, 400, 500]})
    src = ArrowSource(table, split_by="p").build()
    src.seek({"row": 2})
    src.open(2)
    clock = SplitClock(src.splits, table.schema, "wm", 0, None, None)
    clock.restore([{"splits": [[[0], 200 * 10**6], [[1], INT64_MIN]]}])
    b = src.poll(0)[0][0]
    low = clock.low_after(b, b.column(1).to_numpy(), 10**6, INT64_MIN)[3]
    assert low == 400 * 10**6        # partition 1's watermark, not partition 0's 200


def test_a_split_replay_crashed_and_restored_gives_the_uninterrupted_output(tmp_path):
    """Per-split watermark state (each split's largest time) is in the checkpoint: a replay of
    three partitions, one of them ending early, crashed at several batches and restored, gives
    what one uninterrupted run gives (tumbling windows, late output included)."""
    from heliosdb.testing import crash_and_restore, read_parquet_output, run_job

    rng = np.random.default_rng(3)
    n = 6_000
    p = rng.integers(0, 3, n)
    p[n // 2:][p[n // 2:] == 2] = 1              # partition 2 ends half-way
    ts = 1_700_000_000_000 + np.arange(n) * 5 + rng.integers(-400, 1, n)
    ts[p == 1] -= 2_000                          # partition 1 runs two seconds behind
    table = pa.table({"ts": ts, "k": rng.integers(0, 9, n), "v": rng.random(n), "p": p})

    def build(out):
        def wire(env, crash):
            s = env.from_arrow(table, split_by="p").inspect(crash or (lambda b: None))
            s = s.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=100))
            w = s.key_by("k").window(hdb.TumblingWindow.of(timedelta(seconds=1))).aggregate(
                n=hdb.count(), s=hdb.sum("v"))
            w.sink(hdb.sinks.parquet(out + "/win", rows_per_file=500))
            w.late_output().sink(hdb.sinks.parquet(out + "/late", rows_per_file=500))
        return wire

    def config(storage=None):
        cp = None if storage is None else hdb.CheckpointConfig(
            interval=timedelta(milliseconds=1), storage=storage, timeout=timedelta(seconds=60))
        return hdb.StreamingConfig(batch_size=300, buffer_size=300, checkpoint=cp)

    ref = str(tmp_path / "ref")
    run_job(build(ref), config())
    expected = {d: read_parquet_output(f"{ref}/{d}") for d in ("win", "late")}
    assert expected["win"].num_rows > 0 and expected["late"].num_rows > 0
    for crash_at in (3, 11):
        out = str(tmp_path / f"out-{crash_at}")
        run = crash_and_restore(build(out), config(str(tmp_path / f"ckpt-{crash_at}")), crash_at, name="splits")
        assert run.crashed
        for d in ("win", "late"):
            assert_same_rows(read_parquet_output(f"{out}/{d}"), expected[d])
