"""A Kafka source's on_error policy without a broker: fail names the record, skip counts,
dead_letter counts and hands the records (with their position and reason) to its sink."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.connectors.kafka_dead_letters import DEAD_LETTER_SCHEMA, DeadLetters, check_policy
from heliosdb.errors import ConfigError, DataError
from heliosdb.formats import DecodeFailure


class Message:
    """What the reader reads from confluent-kafka: the key and the timestamp are used."""

    def __init__(self, key: bytes, ts: int):
        self._key, self._ts = key, ts

    def key(self) -> bytes:
        return self._key

    def timestamp(self):
        return (1, self._ts)


MSGS = [Message(b"k0", 1_000), Message(b"k1", -1), Message(b"k2", 3_000)]
VALUES = [b'{"x": 1}', b"{", b'{"x": "a"}']
OFFSETS = np.array([40, 41, 42], dtype=np.int64)
FAILURES = [DecodeFailure(1, "malformed", None, "not JSON"), DecodeFailure(2, "wrong_type", "x", "not an int")]


def test_fail_names_topic_partition_offset_and_field_and_counts_nothing():
    dl = DeadLetters("fail", None)
    with pytest.raises(DataError, match=r"topic 't' partition 3 offset 41: cannot decode.*not JSON \(malformed\)"):
        dl.handle("t", 3, MSGS, VALUES, OFFSETS, FAILURES)
    assert dl.counts == {}


def test_skip_counts_by_reason_in_the_job_metrics_too():
    dl = DeadLetters("skip", None)
    job_counts = {"malformed": 2}
    dl.attach_metrics(job_counts)
    assert dl.handle("t", 3, MSGS, VALUES, OFFSETS, FAILURES) is None
    assert dl.counts == {"malformed": 1, "wrong_type": 1}
    assert job_counts == {"malformed": 3, "wrong_type": 1}


def test_dead_letters_carry_position_key_value_reason_and_go_to_the_sink():
    sink = hdb.sinks.memory()
    dl = DeadLetters("dead_letter", sink)
    dl.open()
    dead = dl.handle("t", 3, MSGS, VALUES, OFFSETS, FAILURES)
    assert dead.schema == DEAD_LETTER_SCHEMA
    rows = dead.to_pylist()
    assert [(r["partition"], r["offset"], r["key"], r["value"], r["reason"], r["field"]) for r in rows] == [
        (3, 41, b"k1", b"{", "malformed", None), (3, 42, b"k2", b'{"x": "a"}', "wrong_type", "x")]
    assert rows[0]["timestamp"] is None and rows[1]["error"] == "field 'x': not an int (wrong_type)"
    dl.write([dead])
    dl.close(failed=False)
    assert sink.to_table().num_rows == 2


def test_the_policy_is_checked_when_the_source_is_made():
    check_policy("skip", None)
    with pytest.raises(ConfigError, match=r"on_error=\) must be one of"):
        check_policy("ignore", None)
    with pytest.raises(ConfigError, match="needs dead_letter="):
        check_policy("dead_letter", None)
    with pytest.raises(ConfigError, match="takes a sink"):
        check_policy("dead_letter", "events-dlq")
    with pytest.raises(ConfigError, match="needs dead_letter="):
        hdb.StreamEnvironment().kafka_source("t", on_error="dead_letter")
    assert pa.types.is_binary(DEAD_LETTER_SCHEMA.field("value").type)
