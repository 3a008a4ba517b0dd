"""W3's generator and oracle (benchmarks/w3data.py), and the engine end to end on W3's data.

The end-to-end tests double as a correctness test of the out-of-order / late path on realistic
data: eight interleaved partitions, late events within and beyond the allowed lateness, a
replayed stretch minutes old, a hot key, null values; tumbling and sliding windows in one job.
"""
import math

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import w3data
from tests.oracle import MS, aggregate, hopping_oracle

N = 50_000


@pytest.fixture(scope="module")
def data():
    return w3data.make_data(N)


@pytest.fixture(scope="module")
def refs(data):
    return {"arrival": w3data.duckdb_w3(data.arrival, watermarks=w3data.split_watermarks(data.arrival)),
            "sorted": w3data.duckdb_w3(data.sorted)}


def _normal(data):
    return ~(data.injected_late | data.replayed)


# -- the generator -----------------------------------------------------------------------------------
def test_same_seed_same_data_other_seed_other_data():
    a, b, c = w3data.make_data(5_000), w3data.make_data(5_000), w3data.make_data(5_000, seed=4)
    assert a.arrival.equals(b.arrival) and a.sorted.equals(b.sorted)
    assert all(x.equals(y) for x, y in zip(a.partitions, b.partitions))
    assert not a.arrival.equals(c.arrival)


def test_exactly_n_events_in_three_consistent_orders(data):
    assert data.n == N and data.sorted.num_rows == N and sum(p.num_rows for p in data.partitions) == N
    assert data.arrival.schema == w3data.SCHEMA
    ts = data.sorted["ts"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    key = ["ts", "user", "value", "partition"]
    assert data.sorted.sort_by([(k, "ascending") for k in key]).equals(
        data.arrival.sort_by([(k, "ascending") for k in key]))
    # A partition's events reach the consumer in offset order.
    part = data.arrival["partition"].to_numpy()
    for p, table in enumerate(data.partitions):
        assert data.arrival.filter(pa.array(part == p)).equals(table)


def test_partitions_have_their_own_rate_and_pace(data):
    counts = np.array([p.num_rows for p in data.partitions])
    assert len(counts) == w3data.PARTITIONS and len(set(counts)) == w3data.PARTITIONS
    # Pace: how far each partition is behind the newest event received so far drifts, and
    # differently per partition: in stretches of the arrival order, which partition lags most
    # changes, and by up to hundreds of ms (but never past the watermark bound).
    ts = data.arrival["ts"].to_numpy()
    part = data.arrival["partition"].to_numpy()
    lag = np.maximum.accumulate(ts) - ts
    normal = _normal(data)
    spread, slowest = [], set()
    for rows in np.array_split(np.arange(N), 40):
        means = [lag[rows][(part[rows] == p) & normal[rows]].mean() for p in range(w3data.PARTITIONS)]
        spread.append(max(means) - min(means))
        slowest.add(int(np.argmax(means)))
    assert max(spread) > 300 and len(slowest) >= 4, (spread, slowest)


def test_hot_key_carries_a_fifth_of_the_events_and_the_rest_are_zipf(data):
    users = data.arrival["user"].to_numpy(zero_copy_only=False)
    assert 0.19 <= np.mean(users == w3data.HOT_KEY) <= 0.21
    _, counts = np.unique(users[users != w3data.HOT_KEY], return_counts=True)
    counts = np.sort(counts)[::-1]
    assert counts[0] > 20 * np.median(counts)                # skewed
    assert len(counts) > 10_000 and counts[0] < 0.1 * N     # over many keys, none as hot


def test_about_one_percent_nulls_and_one_percent_late(data):
    assert 0.008 <= data.arrival["value"].null_count / N <= 0.012
    assert 0.008 <= data.injected_late.mean() <= 0.012
    behind = w3data.behind_watermark(data.arrival["ts"].to_numpy())
    # Every injected late event and replayed event is behind the watermark, no other one is.
    assert not (behind & _normal(data)).any()
    assert behind[data.injected_late].mean() > 0.99
    assert behind[data.replayed].all()


def test_disorder_within_a_partition_is_bounded_by_the_jitter(data):
    part = data.arrival["partition"].to_numpy()
    ts = data.arrival["ts"].to_numpy()
    normal = _normal(data)
    for p in range(w3data.PARTITIONS):
        m = part == p
        t = ts[m]
        prev = np.maximum.accumulate(np.concatenate([[t[0]], t[:-1]]))
        assert (prev - t)[normal[m]].max() <= w3data.JITTER_MS
    # and across partitions, as received, within the watermark bound
    prev = np.maximum.accumulate(ts)
    assert (prev - ts)[normal].max() < w3data.BOUND_MS


def test_one_partition_replays_a_stretch_minutes_old(data):
    rep = data.replayed
    assert rep.sum() == int(N * w3data.REPLAY_SHARE)
    assert (data.arrival["partition"].to_numpy()[rep] == w3data.REPLAY_PARTITION).all()
    ts = data.arrival["ts"].to_numpy()
    behind = np.maximum.accumulate(ts)[rep] - ts[rep]
    assert behind.min() >= 60_000
    # one burst: consecutive in arrival order
    idx = np.flatnonzero(rep)
    assert (np.diff(idx) == 1).all()


def test_late_events_both_update_windows_and_go_to_late_output(refs, data):
    behind = int(w3data.behind_watermark(data.arrival["ts"].to_numpy()).sum())
    late = {w: refs["arrival"][w + "_late"].num_rows for w in w3data.WINDOWS}
    # some events behind the watermark are still within the allowed lateness (updates) ...
    assert late["sliding"] < late["tumbling"] < behind
    # ... and some are past it (beyond the replayed stretch, which is minutes late)
    assert late["sliding"] > data.replayed.sum()
    assert refs["sorted"]["tumbling_late"].num_rows == 0 == refs["sorted"]["sliding_late"].num_rows


def test_in_the_merge_order_each_event_sees_its_own_partitions_watermark(data):
    merged = w3data.merge_order(data.partitions)
    per_split = np.concatenate([w3data.behind_watermark(p["ts"].to_numpy()) for p in data.partitions])
    # merged rows, back in (partition, offset) order
    part = merged["partition"].to_numpy()
    order = np.argsort(part, kind="stable")
    behind = w3data.behind_watermark(merged["ts"].to_numpy())[order]
    np.testing.assert_array_equal(behind, per_split)


# -- the oracle ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", list(w3data.WINDOWS))
def test_duckdb_oracle_matches_the_plain_python_replay(window):
    small = w3data.make_data(10_000)
    table = small.arrival
    size, slide = w3data.WINDOWS[window]
    events = table.to_pylist()
    groups, late = hopping_oracle(events, [e["ts"] * MS for e in events], ["user"], size * MS,
                                  slide * MS, w3data.BOUND_MS * MS, w3data.LATENESS_MS * MS)
    ref = w3data.duckdb_w3(table)
    exp = {(s // MS, k[0]): g.events for (s, k), g in groups.items()}
    got = {(r["window_start"], r["user"]): r for r in ref[window].to_pylist()}
    assert got.keys() == exp.keys()
    for k, evs in exp.items():
        r = got[k]
        assert r["count"] == aggregate("count", None, evs)
        for agg in ("sum", "max", "mean"):
            e = aggregate(agg, "value", evs)
            assert (r[agg] is None) == (e is None) and (e is None or math.isclose(r[agg], e, rel_tol=1e-9)), (k, agg)
    assert ref[window + "_late"].to_pylist() == [
        {"ts": events[i]["ts"], "user": events[i]["user"], "value": events[i]["value"]} for i in late]
    assert late, "the small data has late events too"


def test_final_rows_keep_the_last_update_of_each_window_and_key():
    ws = pa.array([1_000, 2_000, 1_000], pa.int64()).cast(pa.timestamp("ms", "UTC")).cast(pa.timestamp("ns", "UTC"))
    result = pa.table({"window_start": ws, "window_end": ws, "user": ["a", "a", "a"],
                       "count": [1, 1, 2], "sum": [1.0, 5.0, 3.0], "max": [1.0, 5.0, 2.0],
                       "mean": [1.0, 5.0, 1.5]})
    final = w3data.final_rows(result).sort_by("window_start").to_pylist()
    assert final == [{"window_start": 1_000, "user": "a", "count": 2, "sum": 3.0, "max": 2.0, "mean": 1.5},
                     {"window_start": 2_000, "user": "a", "count": 1, "sum": 5.0, "max": 5.0, "mean": 5.0}]


def test_merge_order_is_by_running_max_then_partition_then_offset():
    a = pa.table({"ts": [10, 5, 30]})
    b = pa.table({"ts": [20, 25]})
    assert w3data.merge_order([a, b])["ts"].to_pylist() == [10, 5, 20, 25, 30]


# -- the engine, end to end ---------------------------------------------------------------------------------
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("order", ["arrival", "sorted"])
def test_engine_matches_the_oracle_on_w3(data, refs, order, parallelism):
    from benchmarks.w3 import heliosdb_w3

    out = heliosdb_w3(getattr(data, order), parallelism)
    w3data.validate(out, refs[order])


def test_small_batches_do_not_change_the_result(data, refs):
    from benchmarks.w3 import heliosdb_w3

    w3data.validate(heliosdb_w3(data.arrival, 1, batch_size=777), refs["arrival"])


@pytest.mark.parametrize("order,batch", [("one after another", 5_000), ("arrival", 777),
                                         ("arrival", 65_536)])
def test_partitions_as_splits_give_the_per_split_result(data, order, batch):
    """Partitions are splits with watermarks of their own (``from_arrow(split_by=)``): each row
    is judged by the smallest watermark of the splits still sending (``split_watermarks``),
    whatever the batch size; read one after another (the worst pace there is), or in W3's
    arrival order."""
    from datetime import timedelta

    import pyarrow as pa

    import heliosdb as hdb

    capture = pa.concat_tables(data.partitions) if order != "arrival" else data.arrival
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1, batch_size=batch))
    src = env.from_arrow(capture, split_by="partition").with_watermark(
        time="ts", max_out_of_orderness=timedelta(milliseconds=w3data.BOUND_MS))
    ref = w3data.duckdb_w3(capture, watermarks=w3data.split_watermarks(capture))
    w3data.validate(w3data.run_w3(env, src), ref)
