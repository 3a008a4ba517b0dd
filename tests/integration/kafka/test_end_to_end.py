"""Kafka -> W1 (filter, project, 1 s tumbling window per key) -> Kafka, exactly once, checked
against the numpy reference: across parallelism (readers and window subtasks) and across a
broker stop and restart in the middle of the run."""
from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from benchmarks.w1data import make_table, reference, validate, w1_pipeline
from heliosdb.formats.json import JsonFormat

from .broker import new_topic, produce, read_all

N = 300_000
IN_SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()), ("category", pa.string())])
OUT_SCHEMA = pa.schema([("window_start", pa.timestamp("ns", "UTC")), ("window_end", pa.timestamp("ns", "UTC")),
                        ("key", pa.int64()), ("count", pa.int64()), ("sum", pa.float64()),
                        ("min", pa.float64()), ("max", pa.float64()), ("mean", pa.float64())])


@pytest.fixture(scope="module")
def w1_topic(kafka):
    """W1's first N events as JSON, keyed by ``key`` over 4 partitions (each in event-time
    order, so the merged stream is in event-time order too)."""
    table = make_table(N)
    topic = new_topic(kafka, partitions=4, prefix="w1")
    produce(kafka, topic, JsonFormat(IN_SCHEMA).encode(table.combine_chunks().to_batches()[0]),
            keys=[b"%d" % k for k in table["key"].to_pylist()])
    return topic, table


def _run(kafka, topic: str, out_topic: str, readers: int, parallelism: int, name: str, slow: float = 0.0):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, batch_size=20_000))
    src = (env.kafka_source(topic, kafka.bootstrap, bounded=True, event_time="ts")
           .deserialize_json(IN_SCHEMA).set_parallelism(readers))
    if slow:
        src = src.map_batches(lambda b: (time.sleep(slow), b)[1])
    (w1_pipeline(src)
     .sink(hdb.sinks.kafka(out_topic, kafka.bootstrap, key="key", exactly_once=True,
                           transactional_id=f"w1-{out_topic}").serialize_json()))
    return env.execute(name=name)


def _output(kafka, topic: str) -> pa.Table:
    msgs = read_all(kafka, topic, committed=True)
    decoded = JsonFormat(OUT_SCHEMA).decode([m.value() for m in msgs])
    assert not decoded.failures
    return pa.Table.from_batches([decoded.batch])


@pytest.mark.parametrize("readers,parallelism", [(1, 1), (3, 2)])
def test_kafka_to_kafka_w1_matches_the_reference_at_any_parallelism(kafka, w1_topic, readers, parallelism):
    topic, table = w1_topic
    out_topic = new_topic(kafka, partitions=3, prefix="w1-out")
    _run(kafka, topic, out_topic, readers, parallelism, f"w1-kafka-{readers}-{parallelism}")
    result = _output(kafka, out_topic)
    validate(result, reference(table))          # rows and counts exact, floats 1e-6
    # ... and exactly the same rows whatever the parallelism (the merge fixes the order).
    rows = sorted(zip(result["window_start"].cast(pa.int64()).to_pylist(), result["key"].to_pylist(),
                      result["count"].to_pylist(), result["sum"].to_pylist()))
    previous = _SEEN.setdefault("rows", rows)
    assert rows == previous


_SEEN = {}


def test_the_job_waits_out_a_broker_restart_and_loses_nothing(kafka, w1_topic):
    topic, table = w1_topic
    out_topic = new_topic(kafka, partitions=2, prefix="w1-restart")
    # Slowed to ~6 s so that the broker goes away in the middle of the run.
    result = {}

    def job():
        try:
            result["r"] = _run(kafka, topic, out_topic, 2, 1, "w1-broker-restart", slow=0.4)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=job)
    t.start()
    time.sleep(2.0)
    kafka.stop()
    time.sleep(2.0)
    kafka.start()
    t.join(timeout=240)
    assert not t.is_alive(), "the job did not finish after the broker came back"
    assert "error" not in result, result.get("error")
    assert result["r"].metrics["streaming_events_processed_total"] == N
    validate(_output(kafka, out_topic), reference(table))
