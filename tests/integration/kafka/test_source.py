"""kafka_source against a real broker: batching, metadata columns, positions and seeking,
bounded reads, the event-time merge of partitions, parallel readers."""
from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.config import DEFAULT_KAFKA_PARTITION_BUFFER_ROWS
from heliosdb.connectors.kafka import KafkaSource
from heliosdb.connectors.kafka_reader import KafkaReader
from heliosdb.formats.arrow_ipc import ArrowIpcFormat
from heliosdb.formats.json import JsonFormat

from .broker import new_topic, produce

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64())])
#: What env.kafka_source() gives a KafkaSource it builds.
DEFAULTS = {"startup_timeout_s": 30.0, "buffer_rows": DEFAULT_KAFKA_PARTITION_BUFFER_ROWS}


def _records(n: int, seed: int = 7, per_ms: int = 10) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    return pa.record_batch([pa.array(1_700_000_000_000 + np.arange(n) // per_ms),
                            pa.array(rng.integers(0, 100, n)), pa.array(rng.random(n))], schema=SCHEMA)


def _drain(src: KafkaReader, batch_size: int = 1000, limit_rows: int = None, timeout: float = 30.0) -> pa.Table:
    """Poll an opened source until it ends (or ``limit_rows`` rows came); the rows as a table."""
    out, rows = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pieces = src.poll(0.1)
        if pieces is None:
            break
        for b, _ in pieces:
            out.append(b)
            rows += b.num_rows
        if limit_rows is not None and rows >= limit_rows:
            break
    else:
        raise AssertionError("the source did not end in time")
    return pa.Table.from_batches(out, schema=src.schema)


def test_json_topic_arrives_in_batches_with_kafka_metadata_columns(kafka):
    topic = new_topic(kafka, partitions=3)
    data = _records(3000)
    parts = [i % 3 for i in range(3000)]
    produce(kafka, topic, JsonFormat(SCHEMA).encode(data), keys=[b"k%d" % i for i in range(3000)],
            partitions=parts, timestamps=data.column("ts").to_pylist())
    sizes = []
    out = (hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, bounded=True)
           .with_batch_size(500).deserialize_json(SCHEMA)
           .inspect(lambda b: sizes.append(b.num_rows)).collect())
    assert out.num_rows == 3000 and max(sizes) <= 500
    out = out.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    # Per partition, offsets 0..999 in produce order.
    for p in range(3):
        mine = out.filter(pa.compute.equal(out["kafka_partition"], p))
        assert mine["kafka_offset"].to_pylist() == list(range(1000))
        idx = np.arange(p, 3000, 3)
        assert mine["ts"].to_pylist() == data.column("ts").to_numpy()[idx].tolist()
        assert mine["kafka_key"].to_pylist() == [b"k%d" % i for i in idx]
        assert mine["kafka_timestamp"].cast(pa.int64()).to_pylist() == mine["ts"].to_pylist()
    assert set(out["kafka_topic"].to_pylist()) == {topic}


def test_columns_nobody_reads_are_not_built(kafka):
    from heliosdb.plan import build

    topic = new_topic(kafka)
    produce(kafka, topic, JsonFormat(SCHEMA).encode(_records(10)))
    env = hdb.StreamEnvironment()
    counts = (env.kafka_source(topic, kafka.bootstrap, bounded=True).deserialize_json(SCHEMA)
              .key_by("key").window(hdb.TumblingWindow.of(1), time="ts").aggregate(n=hdb.count()))
    assert sum(counts.collect()["n"].to_pylist()) == 10
    counts.sink(hdb.sinks.memory())
    plan = build(env, env._sinks, explain=True)[0]
    assert sorted(plan.source.columns) == ["key", "ts"]      # no kafka_* column, no value


def test_position_and_seek_resume_without_gap_or_duplicate(kafka):
    topic = new_topic(kafka, partitions=2)
    data = _records(4000)
    produce(kafka, topic, JsonFormat(SCHEMA).encode(data), partitions=[i % 2 for i in range(4000)])
    first = KafkaSource(topic, kafka.bootstrap, format=JsonFormat(SCHEMA), bounded=True, **DEFAULTS).build()
    first.open(500)
    part1 = _drain(first, limit_rows=1500)
    position = first.position()
    first.close()
    # The position names the next offset after what poll() returned, per partition.
    for p in (0, 1):
        done = part1.filter(pa.compute.equal(part1["kafka_partition"], p))["kafka_offset"].to_pylist()
        assert position[topic][p] == (max(done) + 1 if done else 0)
    second = KafkaSource(topic, kafka.bootstrap, format=JsonFormat(SCHEMA), bounded=True, **DEFAULTS).build()
    second.seek(json.loads(json.dumps(position)))          # as a checkpoint manifest stores it
    second.open(500)
    part2 = _drain(second)
    second.close()
    both = pa.concat_tables([part1, part2])
    keys = list(zip(both["kafka_partition"].to_pylist(), both["kafka_offset"].to_pylist()))
    assert len(keys) == len(set(keys)) == 4000


def test_start_offsets_skip_the_rows_of_a_multi_row_message_already_read(kafka):
    topic = new_topic(kafka)
    data = _records(500)
    fmt = ArrowIpcFormat(SCHEMA)
    produce(kafka, topic, [fmt.encode(data.slice(i, 100))[0] for i in range(0, 500, 100)])
    out = (hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, bounded=True,
                                                start_offsets={topic: {0: [2, 40]}})
           .deserialize_arrow(SCHEMA).collect())
    assert out["ts"].to_pylist() == data.column("ts").to_pylist()[240:]
    assert out["kafka_offset"].to_pylist() == [2] * 60 + [3] * 100 + [4] * 100


def test_arrow_schema_is_read_from_the_topic_when_not_given(kafka):
    topic = new_topic(kafka)
    produce(kafka, topic, ArrowIpcFormat(SCHEMA).encode(_records(50)))
    s = hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, bounded=True).deserialize_arrow()
    assert s.schema.names[:3] == ["ts", "key", "value"]
    assert s.collect().num_rows == 50


@pytest.mark.parametrize("readers", [1, 2, 4])
def test_partitions_merge_into_one_event_time_order_whatever_the_readers(kafka, readers):
    # Four partitions, each in event-time order, produced unevenly (partition 3 gets 4x the
    # rows): merged on "ts", the stream is the single order (ts, partition, offset).
    topic = _merge_topic(kafka)
    rows = (hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, bounded=True, event_time="ts")
            .with_batch_size(700).deserialize_json(SCHEMA).set_parallelism(readers).collect())
    got = list(zip(rows["ts"].to_pylist(), rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist()))
    assert got == sorted(got) and len(got) == _MERGE["n"]


_MERGE = {}


def _merge_topic(kafka) -> str:
    if "topic" not in _MERGE:
        topic = new_topic(kafka, partitions=4)
        data = _records(8000, per_ms=3)
        rng = np.random.default_rng(1)
        parts = rng.choice(4, size=8000, p=[0.1, 0.15, 0.15, 0.6])
        produce(kafka, topic, JsonFormat(SCHEMA).encode(data), partitions=parts)
        _MERGE.update(topic=topic, n=8000)
    return _MERGE["topic"]


def test_a_bounded_read_of_a_transactional_topic_ends(kafka):
    topic = new_topic(kafka, partitions=2)
    env = hdb.StreamEnvironment()
    env.from_arrow(_records(1000)).sink(hdb.sinks.kafka(topic, kafka.bootstrap, exactly_once=True,
                                                        key="key").serialize_json())
    env.execute(name="txn-writer")
    t0 = time.monotonic()
    out = hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, bounded=True).deserialize_json(SCHEMA).collect()
    assert out.num_rows == 1000, time.monotonic() - t0


def test_several_topics_in_one_source(kafka):
    a, b = new_topic(kafka), new_topic(kafka, partitions=2)
    produce(kafka, a, JsonFormat(SCHEMA).encode(_records(30)))
    produce(kafka, b, JsonFormat(SCHEMA).encode(_records(20)))
    out = hdb.StreamEnvironment().kafka_source([a, b], kafka.bootstrap, bounded=True).deserialize_json(SCHEMA).collect()
    counts = {t: out["kafka_topic"].to_pylist().count(t) for t in (a, b)}
    assert counts == {a: 30, b: 20}


def test_a_live_topic_flows_while_it_is_written(kafka):
    topic = new_topic(kafka, partitions=2)
    env = hdb.StreamEnvironment()
    sink = hdb.sinks.memory()
    (env.kafka_source(topic, kafka.bootstrap).with_batch_timeout(0.02)
     .deserialize_json(SCHEMA).sink(sink))
    handle = env.execute_async(name="live")
    try:
        for i in range(5):
            produce(kafka, topic, JsonFormat(SCHEMA).encode(_records(200, seed=i)))
            time.sleep(0.1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and handle.metrics()["streaming_events_processed_total"] < 1000:
            time.sleep(0.1)
    finally:
        handle.stop()
        handle.wait(30)
    assert sink.to_table().num_rows == 1000


def test_the_group_gets_the_end_position_of_a_bounded_read_and_a_new_job_resumes_there(kafka):
    topic = new_topic(kafka)
    produce(kafka, topic, JsonFormat(SCHEMA).encode(_records(100)))
    group = f"g-{topic}"
    first = hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, group, bounded=True).deserialize_json(SCHEMA).collect()
    produce(kafka, topic, JsonFormat(SCHEMA).encode(_records(40, seed=2)))
    second = hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, group, bounded=True).deserialize_json(SCHEMA).collect()
    assert first.num_rows == 100 and second["kafka_offset"].to_pylist() == list(range(100, 140))


def test_a_slow_merged_read_pauses_partitions_and_still_reads_everything_in_order(kafka):
    # A queue of 200 rows per partition: partitions pause and resume all along; the one that
    # holds the merge back must always be reading, or the read would stall.
    topic = _merge_topic(kafka)
    src = KafkaSource(topic, kafka.bootstrap, format=JsonFormat(SCHEMA), bounded=True, event_time="ts",
                      startup_timeout_s=30, buffer_rows=200, readers=2).build()
    src.open(100)
    rows = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            pieces = src.poll(0.05)
            if pieces is None:
                break
            for b, _ in pieces:
                rows += zip(b["ts"].to_pylist(), b["kafka_partition"].to_pylist(), b["kafka_offset"].to_pylist())
            time.sleep(0.002)
        else:
            raise AssertionError(f"stalled after {len(rows)} rows")
    finally:
        src.close()
    assert len(rows) == _MERGE["n"] and rows == sorted(rows)


@pytest.mark.parametrize("event_time", [None, "ts"], ids=["arrival", "merged"])
def test_a_poll_releases_about_one_batch_of_a_backlog(kafka, event_time):
    """However much the readers have queued, a poll hands the micro-batcher about one batch
    (so a checkpoint barrier can follow any batch); merged, the cut is by event time and the
    order stays (ts, partition, offset); nothing is lost or repeated."""
    topic = _merge_topic(kafka)
    src = KafkaSource(topic, kafka.bootstrap, format=JsonFormat(SCHEMA), bounded=True, event_time=event_time,
                      **DEFAULTS).build()
    src.open(300)
    try:
        deadline = time.monotonic() + 30
        while sum(p.rows for p in src._merge.parts) < _MERGE["n"] // 2 and time.monotonic() < deadline:
            time.sleep(0.02)                         # let the readers queue a backlog
        sizes, got = [], []
        while True:
            pieces = src.poll(0.5)
            if pieces is None:
                break
            n = sum(b.num_rows for b, _ in pieces)
            if n:
                sizes.append(n)
            for b, _ in pieces:
                got += zip(b["ts"].to_pylist(), b["kafka_partition"].to_pylist(), b["kafka_offset"].to_pylist())
    finally:
        src.close()
    assert len(got) == _MERGE["n"] and len(set(got)) == _MERGE["n"]
    assert max(sizes) <= 300 + 12, sizes                 # a run of equal ts is not split (3 per ms)
    assert len(sizes) >= _MERGE["n"] // 300
    if event_time is not None:
        assert got == sorted(got)
