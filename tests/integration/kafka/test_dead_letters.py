"""Poison messages of every kind: routed by on_error, counted by reason, named by field;
the good records of the same batches all go on (good + dead = input)."""
from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb.errors import DataError
from heliosdb.formats.avro import AvroFormat

from .broker import new_topic, produce, read_all

SCHEMA = pa.schema([pa.field("ts", pa.int64(), nullable=False), ("user", pa.string()), ("amount", pa.float64())])
GOOD = [b'{"ts": %d, "user": "u%d", "amount": %d.5}' % (i, i % 3, i) for i in range(40)]
# Poison of every kind the JSON path can meet (reason, field), at known positions.
POISON = {
    5: (b'{"ts": 5, "user": "x", "amount": "lots"}', "wrong_type", "amount"),
    9: (b'{"ts": 9, "user": ', "malformed", None),
    17: (b'{"user": "nobody", "amount": 1.0}', "missing_field", "ts"),
    23: (b'{"ts": 23, "user": "' + b"x" * 5000 + b'"}', "oversized", None),
    31: (b"", "empty", None),
    36: (b'{"ts": "thirty-six"}', "wrong_type", "ts"),
}


def _payloads():
    out, expected_good = [], []
    for i in range(40):
        if i in POISON:
            out.append(POISON[i][0])
        else:
            out.append(GOOD[i])
            expected_good.append(i)
    return out, expected_good


def _source(env, kafka, topic, **kw):
    return (env.kafka_source(topic, kafka.bootstrap, bounded=True, max_record_bytes=4096, **kw)
            .with_batch_size(16).deserialize_json(SCHEMA))


def test_poison_goes_to_a_dead_letter_topic_with_reason_field_and_position(kafka):
    topic, dlq = new_topic(kafka, partitions=2), new_topic(kafka, prefix="dlq")
    payloads, good = _payloads()
    produce(kafka, topic, payloads, keys=[b"k%d" % i for i in range(40)], partitions=[i % 2 for i in range(40)])
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    _source(env, kafka, topic, on_error="dead_letter", dead_letter=hdb.sinks.kafka(dlq, kafka.bootstrap)).sink(out)
    result = env.execute(name="dlq-kafka")
    assert sorted(out.to_table()["ts"].to_pylist()) == good
    counts = result.metrics["streaming_dead_letters_total"]
    assert counts == {"wrong_type": 2, "malformed": 1, "missing_field": 1, "oversized": 1, "empty": 1}
    assert len(good) + sum(counts.values()) == 40
    dead = read_all(kafka, dlq)
    assert len(dead) == 6
    seen = {}
    for m in dead:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["topic"] == topic
        i = int(m.key()[1:])                       # the original key, k<index>
        assert m.value() == POISON[i][0] or (POISON[i][1] == "empty" and m.value() in (None, b""))
        assert int(h["partition"]) == i % 2 and int(h["offset"]) == i // 2
        assert h["reason"] == POISON[i][1] and h.get("field") == POISON[i][2]
        assert (POISON[i][2] or "") in h["error"]
        seen[i] = h["reason"]
    assert sorted(seen) == sorted(POISON)


def test_poison_goes_to_a_parquet_dead_letter_folder(kafka, tmp_path):
    topic = new_topic(kafka)
    payloads, good = _payloads()
    produce(kafka, topic, payloads)
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    _source(env, kafka, topic, on_error="dead_letter", dead_letter=hdb.sinks.parquet(str(tmp_path))).sink(out)
    env.execute(name="dlq-parquet")
    dead = pq.read_table(str(tmp_path)).sort_by("offset")
    assert dead["offset"].to_pylist() == sorted(POISON)
    assert dead["reason"].to_pylist() == [POISON[i][1] for i in sorted(POISON)]
    assert dead["field"].to_pylist() == [POISON[i][2] for i in sorted(POISON)]
    assert dead["value"].to_pylist()[0] == POISON[5][0] and set(dead["topic"].to_pylist()) == {topic}
    assert out.to_table().num_rows == len(good)


def test_avro_poison_bad_magic_and_unknown_schema(kafka):
    topic = new_topic(kafka)
    avro = {"type": "record", "name": "E", "fields": [{"name": "n", "type": "long"}]}
    fmt = AvroFormat(avro, wire_format="confluent", schema_id=1)
    good = fmt.encode(pa.record_batch({"n": list(range(10))}))
    bad_magic = b"\x07" + good[0][1:]
    unknown = b"\x00" + struct.pack(">I", 99) + good[1][5:]
    produce(kafka, topic, good[:5] + [bad_magic, unknown] + good[5:])
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    (env.kafka_source(topic, kafka.bootstrap, bounded=True, on_error="skip")
     .deserialize_avro(avro, "confluent", writer_schemas={1: avro}).sink(out))
    result = env.execute(name="avro-poison")
    assert out.to_table()["n"].to_pylist() == list(range(10))
    assert result.metrics["streaming_dead_letters_total"] == {"bad_magic": 1, "unknown_schema": 1}


def test_the_default_fails_naming_topic_partition_offset_and_field(kafka):
    topic = new_topic(kafka)
    produce(kafka, topic, GOOD[:3] + [POISON[5][0]] + GOOD[4:6])
    env = hdb.StreamEnvironment()
    env.kafka_source(topic, kafka.bootstrap, bounded=True).deserialize_json(SCHEMA).sink(hdb.sinks.memory())
    with pytest.raises(DataError) as err:
        env.execute(name="poison-fails")
    msg = str(err.value)
    assert f"topic {topic!r} partition 0 offset 3" in msg and "field 'amount'" in msg and "wrong_type" in msg


def test_skip_counts_and_drops(kafka):
    topic = new_topic(kafka)
    payloads, good = _payloads()
    produce(kafka, topic, payloads)
    env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0)))
    out = hdb.sinks.memory()
    _source(env, kafka, topic, on_error="skip").sink(out)
    try:
        env.execute(name="poison-skip")
        from urllib.request import urlopen

        text = urlopen(env.metrics_url).read().decode()
    finally:
        env.close()
    assert out.to_table().num_rows == len(good)
    assert 'streaming_dead_letters_total{job="poison-skip",operator="kafka-1",reason="wrong_type"} 2.0' in text
    assert 'streaming_dead_letters_total{job="poison-skip",operator="kafka-1",reason="bad_magic"} 0.0' in text


def test_dead_letter_policy_needs_a_sink():
    from heliosdb.errors import ConfigError

    with pytest.raises(ConfigError, match="needs dead_letter="):
        hdb.StreamEnvironment().kafka_source("t", on_error="dead_letter")
    with pytest.raises(ConfigError, match=r"on_error=\) must be one of"):
        hdb.StreamEnvironment().kafka_source("t", on_error="ignore")
