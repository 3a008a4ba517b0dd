"""Where a Kafka source starts is never guessed: the group's committed offsets and the log
offsets are read with retries until ``startup_timeout``, then the job fails with an error that
says what could not be read and what to do (never "no committed offsets, so auto_offset_reset").

The broker is real; its coordinator's errors are injected through the seams the source reads
them by (``kafka_start._committed``, ``kafka_start._watermarks``).
"""
from __future__ import annotations

import time
import uuid

import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import heliosdb as hdb
from heliosdb.connectors import kafka_start as kafka_mod
from heliosdb.errors import ExecutionError

from .broker import new_topic, produce

COMMITTED = {0: 4, 1: 7}        # the group's position: 10 messages per partition, 6 + 3 left
PER_PARTITION = 10


@pytest.fixture
def topic_with_group(kafka):
    topic = new_topic(kafka, partitions=2, prefix="startup")
    produce(kafka, topic, [b"m%d" % i for i in range(2 * PER_PARTITION)],
            partitions=[i % 2 for i in range(2 * PER_PARTITION)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in COMMITTED.items()], asynchronous=False)
    finally:
        c.close()
    return topic, group


def _failing(real, failures):
    """``real`` behind a coordinator that answers NOT_COORDINATOR ``failures`` times (None:
    always); ``calls`` counts the tries."""
    def call(*args):
        call.calls += 1
        if failures is None or call.calls <= failures:
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Broker: Not coordinator"))
        return real(*args)

    call.calls = 0
    return call


def _read(kafka, topic, group, **kw):
    env = hdb.StreamEnvironment()
    return env.kafka_source(topic, kafka.bootstrap, group_id=group, bounded=True, **kw).collect()


@pytest.mark.parametrize("seam", ["_committed", "_watermarks"])
@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_a_coordinator_error_at_start_is_retried_and_the_committed_offsets_are_used(
        seam, reset, topic_with_group, kafka, monkeypatch):
    topic, group = topic_with_group
    flaky = _failing(getattr(kafka_mod, seam), failures=3)
    monkeypatch.setattr(kafka_mod, seam, flaky)
    out = _read(kafka, topic, group, auto_offset_reset=reset)
    assert flaky.calls > 3
    for p, start in COMMITTED.items():
        offsets = out.filter(pc.equal(out["kafka_partition"], p))["kafka_offset"].to_pylist()
        assert sorted(offsets) == list(range(start, PER_PARTITION)), (p, reset)


def test_committed_offsets_that_cannot_be_read_fail_the_job_after_startup_timeout(
        topic_with_group, kafka, monkeypatch):
    topic, group = topic_with_group
    broken = _failing(kafka_mod._committed, failures=None)
    monkeypatch.setattr(kafka_mod, "_committed", broken)
    t0 = time.monotonic()
    with pytest.raises(ExecutionError) as info:
        _read(kafka, topic, group, startup_timeout=1.5)
    took = time.monotonic() - t0
    msg = str(info.value)
    assert f"group {group!r}" in msg and f"topic {topic!r} partitions [0, 1]" in msg, msg
    assert "NOT_COORDINATOR" in msg and "startup_timeout=1.5s" in msg, msg
    assert "start_offsets=" in msg, "the error must say what to do"
    assert broken.calls >= 3, "retried, with backoff, until the timeout"
    assert 1.5 <= took < 60, took


def test_explicit_start_offsets_need_no_committed_offsets(topic_with_group, kafka, monkeypatch):
    # A restored checkpoint seeks every partition: a coordinator problem must not hold it up.
    topic, group = topic_with_group
    broken = _failing(kafka_mod._committed, failures=None)
    monkeypatch.setattr(kafka_mod, "_committed", broken)
    out = _read(kafka, topic, group, start_offsets={topic: {0: 8, 1: 9}}, startup_timeout=1.0)
    assert out.num_rows == 2 + 1 and broken.calls == 0
