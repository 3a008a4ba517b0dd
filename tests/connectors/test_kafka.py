"""kafka_source and sinks.kafka without a broker: specs, schemas, positions, errors."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.connectors.kafka import KafkaSource, client_conf
from heliosdb.connectors.kafka_start import normalise_position
from heliosdb.errors import ConfigError, ExecutionError, PlanError

SCHEMA = pa.schema([("ts", pa.int64()), ("v", pa.float64())])


def test_positions_survive_a_json_round_trip():
    pos = {"orders": {0: 42, 3: [7, 120]}, "users": {1: [9, 0]}}
    assert normalise_position(json.loads(json.dumps(pos))) == {"orders": {0: 42, 3: [7, 120]}, "users": {1: 9}}
    with pytest.raises(ConfigError, match="partition 'x'"):
        normalise_position({"orders": {"x": 1}})


def test_librdkafka_settings_from_keywords():
    assert client_conf({"auto_offset_reset": "latest", "fetch.wait.max.ms": 5}) == {
        "auto.offset.reset": "latest", "fetch.wait.max.ms": 5}


def test_the_schema_is_the_format_plus_kafka_metadata_and_needs_no_broker():
    s = hdb.StreamEnvironment().kafka_source("t", "127.0.0.1:1").deserialize_json(SCHEMA)
    assert s.schema.names == ["ts", "v", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
                              "kafka_key"]
    raw = hdb.StreamEnvironment().kafka_source("t", "127.0.0.1:1")
    assert raw.schema.field("value").type == pa.binary()


def test_event_time_must_be_a_time_column():
    with pytest.raises(ConfigError, match="event_time='nope'"):
        hdb.StreamEnvironment().kafka_source("t", event_time="nope").deserialize_json(SCHEMA).schema
    with pytest.raises(ConfigError, match="integer or timestamp"):
        hdb.StreamEnvironment().kafka_source("t", event_time="v").deserialize_json(SCHEMA).schema


def test_formats_apply_only_to_byte_sources():
    with pytest.raises(PlanError, match="kafka_source"):
        hdb.StreamEnvironment().from_iterable([{"x": 1}]).deserialize_json(SCHEMA)
    with pytest.raises(PlanError, match="applies to a source"):
        hdb.StreamEnvironment().kafka_source("t").deserialize_json(SCHEMA).filter(hdb.col("v") > 0).deserialize_json(SCHEMA)


def test_set_parallelism_on_a_kafka_source_sets_its_readers():
    s = hdb.StreamEnvironment().kafka_source("t").deserialize_json(SCHEMA).set_parallelism(3)
    assert s._node.step.source.readers == 3 and "3 readers" in s._node.step.source.describe()


def test_an_unreachable_cluster_fails_naming_the_address():
    src = KafkaSource("t", "127.0.0.1:1", format=None, startup_timeout_s=1, buffer_rows=1000).build()
    with pytest.raises(ExecutionError, match="127.0.0.1:1"):
        src.open(100)
    src.close()


def test_kafka_sink_spec_describes_itself():
    spec = hdb.sinks.kafka("out", "127.0.0.1:1", key="k", exactly_once=True, commit_interval=2)
    assert spec.describe() == "kafka 'out' at 127.0.0.1:1 (raw, exactly once)"
    assert spec.transaction_timeout_s == 60 and spec.serialize_msgpack().format == "msgpack"


def test_the_spec_is_frozen_and_its_reader_contacts_no_broker_until_it_opens():
    import dataclasses

    from heliosdb.formats.json import JsonFormat

    spec = KafkaSource("t", "127.0.0.1:1", format=JsonFormat(SCHEMA), startup_timeout_s=1, buffer_rows=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.readers = 2
    projected = spec.project(["v", "kafka_partition"])
    assert projected.schema.names == ["v", "kafka_partition"] and projected.splits is spec.splits
    reader = projected.build()
    assert reader.replayable and reader.columns == ["v", "kafka_partition"] and reader.position() == {}
    reader.close()                      # never opened: nothing to release
