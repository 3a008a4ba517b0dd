"""Per-partition watermarks on a real broker (issue 12): a topic whose partitions are each in
event-time order, read without ``event_time=`` (partitions fetched at the readers' own pace),
gives exact windows and no late event; a partition that holds events without a time sends
them to the dead letters."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pyarrow as pa

import heliosdb as hdb

from .broker import new_topic, produce

N = 60_000
SCHEMA = pa.schema([("ts", pa.int64()), ("user", pa.string()), ("value", pa.float64())])


def _events(seed: int = 5):
    """N events over 120 s of event time, keys spread over 3 partitions, each partition in
    event-time order (and the partitions of very different sizes: they are read at different
    paces)."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000 + np.sort(rng.integers(0, 120_000, N))
    user = rng.integers(0, 500, N)
    part = np.where(user < 50, 0, np.where(user < 200, 1, 2))        # 10% / 30% / 60%
    value = rng.random(N)
    return ts, user, part, value


def test_partitions_read_at_their_own_pace_lose_nothing(kafka):
    ts, user, part, value = _events()
    topic = new_topic(kafka, partitions=3, prefix="splits")
    msgs = [json.dumps({"ts": int(t), "user": f"u{u}", "value": float(v)}).encode()
            for t, u, v in zip(ts.tolist(), user.tolist(), value.tolist())]
    produce(kafka, topic, msgs, partitions=part.tolist())

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=4_096))
    src = (env.kafka_source(topic, kafka.bootstrap, bounded=True).deserialize_json(SCHEMA)
           .set_parallelism(2)
           .with_watermark(time="ts", max_out_of_orderness=timedelta(seconds=5)))
    w = (src.key_by("user").window(hdb.TumblingWindow.of(timedelta(seconds=1)))
         .aggregate(n=hdb.count(), total=hdb.sum("value")))
    out, late = hdb.sinks.memory(), hdb.sinks.memory()
    w.sink(out)
    w.late_output().sink(late)
    result = env.execute(name="splits")
    got = out.to_table()
    assert late.to_table().num_rows == 0
    assert result.metrics["streaming_late_events_total"] == 0
    # exact: the same (window, user) counts and sums as numpy over all events
    win = (ts // 1000) * 1000
    keys, inverse = np.unique(np.stack([win, user]), axis=1, return_inverse=True)
    counts = np.bincount(inverse.ravel(), minlength=keys.shape[1])
    assert got.num_rows == keys.shape[1]
    assert sorted(got["n"].to_pylist()) == sorted(counts.tolist())
    assert abs(sum(got["total"].to_pylist()) - value.sum()) < 1e-6


def test_an_event_without_a_time_is_a_dead_letter(kafka, tmp_path):
    topic = new_topic(kafka, partitions=2, prefix="nullts")
    msgs = [json.dumps({"ts": 1_700_000_000_000 + i, "user": "a", "value": 1.0}).encode() for i in range(100)]
    msgs[10] = json.dumps({"user": "a", "value": 1.0}).encode()            # no ts
    msgs[11] = json.dumps({"ts": None, "user": "b", "value": 2.0}).encode()  # null ts
    produce(kafka, topic, msgs, partitions=[i % 2 for i in range(100)])
    dlq = hdb.sinks.parquet(str(tmp_path / "dlq"))
    env = hdb.StreamEnvironment()
    src = (env.kafka_source(topic, kafka.bootstrap, bounded=True, on_error="dead_letter",
                            dead_letter=dlq)
           .deserialize_json(pa.schema([("ts", pa.int64()), ("user", pa.string()),
                                        ("value", pa.float64())]))
           .with_watermark(time="ts"))
    out = src.key_by("user").window(hdb.TumblingWindow.of(timedelta(seconds=10))).aggregate(n=hdb.count()).collect()
    assert sum(out["n"].to_pylist()) == 98
    import pyarrow.dataset as ds
    dead = ds.dataset(str(tmp_path / "dlq"), format="parquet").to_table()
    assert sorted(dead["reason"].to_pylist()) == ["null_event_time", "null_event_time"]
    assert sorted(json.loads(v)["user"] for v in dead["value"].to_pylist()) == ["a", "b"]
