"""sinks.kafka against a real broker: every format through the broker and back, keys,
exactly-once transactions seen by read_committed readers, the epoch hooks, and a killed
producer's lingering transaction aborted when the sink starts again."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.errors import ConfigError

from .broker import new_topic, read_all

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()), ("cat", pa.string())])


def _data(n: int = 500, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table([pa.array(1_700_000_000_000 + np.arange(n)), pa.array(rng.integers(0, 40, n)),
                     pa.array(rng.random(n)), pa.array(rng.choice(["a", "b", "c"], n))], schema=SCHEMA)


def _write(kafka, topic: str, table: pa.Table, spec, name: str = "writer") -> None:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=128))
    env.from_arrow(table).sink(spec)
    env.execute(name=name)


def _protobuf_class():
    from heliosdb.formats.protobuf import message_class

    return message_class(SCHEMA, "Ev", "hxsink")


FORMATS = {
    "json": (lambda s: s.serialize_json(), lambda src: src.deserialize_json(SCHEMA)),
    "msgpack": (lambda s: s.serialize_msgpack(), lambda src: src.deserialize_msgpack(SCHEMA)),
    "avro": (lambda s: s.serialize_avro(), lambda src: src.deserialize_avro(_avro_schema())),
    "avro-confluent": (lambda s: s.serialize_avro(_avro_schema(), "confluent", schema_id=12),
                       lambda src: src.deserialize_avro(_avro_schema(), "confluent", {12: _avro_schema()})),
    "protobuf": (lambda s: s.serialize_protobuf(_protobuf_class()), lambda src: src.deserialize_protobuf(_protobuf_class())),
    "arrow": (lambda s: s.serialize_arrow(), lambda src: src.deserialize_arrow()),
}


def _avro_schema():
    from heliosdb.formats.avro import arrow_to_avro

    return arrow_to_avro(SCHEMA, "Ev")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_goes_through_the_broker_and_back(kafka, fmt):
    topic = new_topic(kafka, partitions=2)
    ser, de = FORMATS[fmt]
    table = _data()
    _write(kafka, topic, table, ser(hdb.sinks.kafka(topic, kafka.bootstrap)))
    src = de(hdb.StreamEnvironment().kafka_source(topic, kafka.bootstrap, bounded=True))
    back = src.select("ts", "key", "value", "cat").collect().sort_by("ts")
    assert back.cast(SCHEMA).equals(table)


def test_rows_with_the_same_key_land_in_the_same_partition(kafka):
    topic = new_topic(kafka, partitions=4)
    _write(kafka, topic, _data(2000), hdb.sinks.kafka(topic, kafka.bootstrap, key="key").serialize_json())
    where = defaultdict(set)
    msgs = read_all(kafka, topic)
    for m in msgs:
        where[m.key()].add(m.partition())
    assert len(msgs) == 2000 and all(len(p) == 1 for p in where.values())
    assert len({p for ps in where.values() for p in ps}) > 1
    assert {int(k) for k in where} == set(_data(2000)["key"].to_pylist())


def test_exactly_once_output_is_seen_once_by_read_committed_readers(kafka):
    topic = new_topic(kafka, partitions=3)
    table = _data(3000)
    # A slow source and a short commit interval: many transactions, committed as the job runs.
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=100))
    (env.from_arrow(table).map_batches(lambda b: (time.sleep(0.01), b)[1])
     .sink(hdb.sinks.kafka(topic, kafka.bootstrap, key="key", exactly_once=True, commit_interval=0.1)
           .serialize_json()))
    env.execute(name="eo-writer")
    msgs = read_all(kafka, topic, committed=True)
    ts = sorted(int(m.value().split(b'"ts":')[1].split(b",")[0]) for m in msgs)
    assert ts == table["ts"].to_pylist()
    # Several transactions: the log holds commit markers between the records.
    ends = sum(_end_offset(kafka, topic, p) for p in range(3))
    assert ends - len(msgs) >= 3 * 2


def _end_offset(kafka, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "ends"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


def _bound(kafka, topic: str, schema: pa.Schema, **options):
    spec = hdb.sinks.kafka(topic, kafka.bootstrap, exactly_once=True, **options).serialize_json()
    return spec, spec.bind(schema, "sink-under-test")


def test_epoch_hooks_abort_and_commit_with_the_epoch_recorded(kafka):
    topic = new_topic(kafka)
    table = _data(30)
    spec, op = _bound(kafka, topic, SCHEMA, transactional_id=f"hooks-{topic}")
    op.coordinated = True
    op.begin_epoch(1)
    op.process_batch(table.to_batches()[0].slice(0, 10))
    op.flush()
    op.abort_epoch()                                   # epoch 1 never becomes visible
    op.begin_epoch(2)
    op.process_batch(table.to_batches()[0].slice(10, 20))
    op.commit_epoch(2)
    op.close()
    assert len(read_all(kafka, topic, committed=True)) == 20
    assert len(read_all(kafka, topic, committed=False)) == 30   # the aborted ones are in the log
    assert op.committed_epoch() == 2


def test_a_killed_producers_lingering_transaction_is_aborted_when_the_sink_starts(kafka):
    topic = new_topic(kafka)
    txn_id = f"zombie-{topic}"
    # A producer with the sink's transactional.id writes 100 records in a transaction and is
    # SIGKILLed before committing.
    script = textwrap.dedent(f"""
        import os, signal
        from confluent_kafka import Producer
        p = Producer({{"bootstrap.servers": "{kafka.bootstrap}", "transactional.id": "{txn_id}",
                      "transaction.timeout.ms": 600000}})
        p.init_transactions(60)
        p.begin_transaction()
        for i in range(100):
            p.produce("{topic}", b'{{"ts": -1}}')
        p.flush(30)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert len(read_all(kafka, topic, committed=False)) == 100
    # The job's sink starts with the same id: init_transactions fences the zombie and aborts
    # its transaction, then the job's own output commits.
    table = _data(50)
    _write(kafka, topic, table, hdb.sinks.kafka(topic, kafka.bootstrap, exactly_once=True,
                                                transactional_id=txn_id).serialize_json())
    committed = read_all(kafka, topic, committed=True)
    assert len(committed) == 50 and all(b'"ts":-1' not in m.value() for m in committed)


def test_a_transaction_near_its_timeout_is_warned_about(kafka, caplog):
    topic = new_topic(kafka)
    spec, op = _bound(kafka, topic, SCHEMA, commit_interval=0.5, transaction_timeout=1.5)
    op.coordinated = True                          # nobody commits: the transaction ages
    with caplog.at_level(logging.WARNING, logger="heliosdb.kafka"):
        op.process_batch(_data(5).to_batches()[0])
        time.sleep(1.3)
        op.on_tick(time.time_ns())
    op.abort()
    assert any("open" in r.getMessage() and "timeout" in r.getMessage() for r in caplog.records)


def test_sink_configuration_errors_are_explained():
    with pytest.raises(ConfigError, match="shorter than two commit intervals"):
        hdb.sinks.kafka("t", exactly_once=True, commit_interval=10, transaction_timeout=15)
    with pytest.raises(ConfigError, match="'value' column"):
        hdb.sinks.kafka("t").bind(SCHEMA, "s")
    with pytest.raises(ConfigError, match="one row per message"):
        hdb.sinks.kafka("t", key="key").serialize_arrow().bind(SCHEMA, "s")
    with pytest.raises(ConfigError, match="no column 'user'"):
        hdb.sinks.kafka("t", key="user").serialize_json().bind(SCHEMA, "s")
