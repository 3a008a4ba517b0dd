"""Formats: batched bytes <-> RecordBatch, and failures that name the reason and the field."""
from __future__ import annotations

import datetime as dt

import msgpack
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliosdb.errors import ConfigError
from heliosdb.formats import (BAD_MAGIC, EMPTY, MALFORMED, MISSING_FIELD, UNKNOWN_SCHEMA, WRONG_TYPE,
                              format_for)
from heliosdb.formats.arrow_ipc import ArrowIpcFormat
from heliosdb.formats.avro import AvroFormat, arrow_to_avro, avro_to_arrow
from heliosdb.formats.json import JsonFormat
from heliosdb.formats.msgpack import MsgpackFormat

UTC = dt.timezone.utc
SCHEMA = pa.schema([
    pa.field("ts", pa.int64(), nullable=False),
    ("key", pa.int64()),
    ("value", pa.float64()),
    ("category", pa.string()),
    ("at", pa.timestamp("ms", "UTC")),
])


def _batch(n: int = 50) -> pa.RecordBatch:
    rng = np.random.default_rng(3)
    vals = rng.random(n)
    return pa.RecordBatch.from_pylist([
        {"ts": 1_700_000_000_000 + i, "key": int(i % 7) if i % 11 else None, "value": float(vals[i]),
         "category": ["alpha", "beta", None][i % 3],
         "at": dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=i)}
        for i in range(n)], schema=SCHEMA)


def _avro() -> AvroFormat:
    return AvroFormat(arrow_to_avro(SCHEMA, "W1"))


FORMATS = {
    "json": lambda: JsonFormat(SCHEMA),
    "msgpack": lambda: MsgpackFormat(SCHEMA),
    "avro": _avro,
    "arrow": lambda: ArrowIpcFormat(SCHEMA),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_round_trip_keeps_every_value(name):
    fmt = FORMATS[name]()
    batch = _batch()
    decoded = fmt.decode(fmt.encode(batch))
    assert not decoded.failures
    assert decoded.batch.equals(batch.cast(fmt.schema) if name == "avro" else batch)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_an_empty_message_fails_alone(name):
    fmt = FORMATS[name]()
    payloads = fmt.encode(_batch(3))
    decoded = fmt.decode([payloads[0], b"", *payloads[1:]])
    assert [(f.index, f.reason) for f in decoded.failures] == [(1, EMPTY)]
    assert decoded.batch.num_rows == 3


def test_json_failures_name_reason_and_field():
    fmt = JsonFormat(SCHEMA)
    good = fmt.encode(_batch(4))
    bad = [b'{"ts": 1, "value": "abc"}', b'{"ts": 1,', b'{"value": 1.0}', b'[1, 2]', b'{"ts": "x"}',
           b'{"ts": 2, "at": "not a time"}']
    decoded = fmt.decode([good[0], *bad, *good[1:]])
    got = [(f.index, f.reason, f.field) for f in decoded.failures]
    assert got == [(1, WRONG_TYPE, "value"), (2, MALFORMED, None), (3, MISSING_FIELD, "ts"),
                   (4, MALFORMED, None), (5, WRONG_TYPE, "ts"), (6, WRONG_TYPE, "at")]
    assert decoded.batch.num_rows == 4
    assert decoded.message_index.tolist() == [0, 7, 8, 9]
    assert decoded.batch.equals(_batch(4))


def test_json_documents_spread_over_lines_decode():
    fmt = JsonFormat(pa.schema([("a", pa.int64()), ("b", pa.string())]))
    decoded = fmt.decode([b'{\n  "a": 1,\n  "b": "x"\n}', b'{"a": 2}'])
    assert decoded.batch.to_pydict() == {"a": [1, 2], "b": ["x", None]}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["good", "type", "broken", "missing", "empty"]), min_size=1, max_size=120))
def test_json_bisection_keeps_exactly_the_good_messages_in_order(kinds):
    """good + dead = input, and good rows come out in message order, whatever the mix."""
    fmt = JsonFormat(SCHEMA)
    payload = {"good": lambda i: b'{"ts": %d, "value": 0.5}' % i, "type": lambda i: b'{"ts": %d, "value": "v"}' % i,
               "broken": lambda i: b'{"ts": %d' % i, "missing": lambda i: b'{"value": 1.5}', "empty": lambda i: b""}
    decoded = fmt.decode([payload[k](i) for i, k in enumerate(kinds)])
    good = [i for i, k in enumerate(kinds) if k == "good"]
    assert decoded.batch.column("ts").to_pylist() == good
    assert [f.index for f in decoded.failures] == [i for i, k in enumerate(kinds) if k != "good"]
    assert decoded.batch.num_rows + len(decoded.failures) == len(kinds)


def test_msgpack_failures():
    fmt = MsgpackFormat(SCHEMA)
    decoded = fmt.decode([msgpack.packb({"ts": 1}), msgpack.packb({"ts": "one"}), b"\xc1",
                          msgpack.packb([1]), msgpack.packb({"value": 2.0})])
    assert [(f.index, f.reason, f.field) for f in decoded.failures] == [
        (1, WRONG_TYPE, "ts"), (2, MALFORMED, None), (3, MALFORMED, None), (4, MISSING_FIELD, "ts")]
    assert decoded.batch.column("ts").to_pylist() == [1]


def test_avro_confluent_wire_format_magic_and_schema_ids():
    avro = arrow_to_avro(SCHEMA, "W1")
    old = {"type": "record", "name": "W1", "fields": avro["fields"] + [{"name": "extra", "type": "long"}]}
    writer = AvroFormat(old, wire_format="confluent", schema_id=4)
    extra_batch = _batch(3).append_column("extra", pa.array([7, 8, 9]))
    payloads = writer.encode(extra_batch.cast(writer.schema))
    reader = AvroFormat(avro, wire_format="confluent", writer_schemas={4: old})
    decoded = reader.decode([payloads[0], b"\x01" + payloads[1][1:], b"\x00\x00\x00\x00\x09" + payloads[1][5:],
                             payloads[2][:9], payloads[2]])
    assert [(f.index, f.reason) for f in decoded.failures] == [(1, BAD_MAGIC), (2, UNKNOWN_SCHEMA), (3, MALFORMED)]
    assert decoded.batch.column("ts").to_pylist() == extra_batch.column("ts").to_pylist()[0::2]


def test_avro_schema_maps_to_arrow():
    schema = {"type": "record", "name": "r", "fields": [
        {"name": "a", "type": "int"}, {"name": "b", "type": ["null", "string"]},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "xs", "type": {"type": "array", "items": "double"}},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}}]}
    assert avro_to_arrow(schema) == pa.schema([
        pa.field("a", pa.int32(), nullable=False), ("b", pa.string()),
        pa.field("t", pa.timestamp("ms", "UTC"), nullable=False),
        pa.field("xs", pa.list_(pa.field("item", pa.float64(), nullable=False)), nullable=False),
        pa.field("e", pa.string(), nullable=False)])


def test_arrow_ipc_many_rows_per_message_and_schema_mismatch():
    fmt = ArrowIpcFormat(SCHEMA, max_message_bytes=2048)
    batch = _batch(200)
    payloads = fmt.encode(batch)
    assert len(payloads) > 1 and all(len(p) <= 2048 * 1.5 for p in payloads)
    other = ArrowIpcFormat(pa.schema([("ts", pa.int32())])).encode(pa.record_batch({"ts": pa.array([1], pa.int32())}))
    decoded = fmt.decode([payloads[0], other[0], b"garbage", *payloads[1:]])
    assert [(f.index, f.reason, f.field) for f in decoded.failures] == [(1, WRONG_TYPE, "ts"), (2, MALFORMED, None)]
    assert decoded.batch.equals(batch)
    counts = np.bincount(decoded.message_index)
    assert counts[0] > 1 and counts[1] == 0 and counts[2] == 0


def test_protobuf_decodes_presence_repeated_and_timestamps():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2  # noqa: F401

    from heliosdb.formats.protobuf import ProtobufFormat

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="hx_fmt_test.proto", package="hxfmt", syntax="proto2",
                                             dependency=["google/protobuf/timestamp.proto"])
    m = fdp.message_type.add(name="Ev")
    m.field.add(name="ts", number=1, type=F.TYPE_INT64, label=F.LABEL_REQUIRED)
    m.field.add(name="value", number=2, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    m.field.add(name="at", number=3, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp",
                label=F.LABEL_OPTIONAL)
    m.field.add(name="tags", number=4, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fdp)
    Ev = message_factory.GetMessageClass(pool.FindMessageTypeByName("hxfmt.Ev"))
    fmt = ProtobufFormat(Ev)
    assert fmt.schema == pa.schema([pa.field("ts", pa.int64(), nullable=False), ("value", pa.float64()),
                                    ("at", pa.timestamp("ns", "UTC")),
                                    pa.field("tags", pa.list_(pa.string()), nullable=False)])
    when = dt.datetime(2024, 5, 1, tzinfo=UTC)
    ok = Ev(ts=1, value=0.5, tags=["a", "b"])
    ok.at.FromDatetime(when)
    decoded = fmt.decode([ok.SerializeToString(), Ev(value=1.0).SerializePartialToString(), b"\xff\xff",
                          Ev(ts=2).SerializeToString()])
    assert [(f.index, f.reason, f.field) for f in decoded.failures] == [(1, MISSING_FIELD, "ts"), (2, MALFORMED, None)]
    rows = decoded.batch.to_pylist()
    assert [r["ts"] for r in rows] == [1, 2] and rows[1]["value"] is None and rows[1]["at"] is None
    assert rows[0]["tags"] == ["a", "b"] and rows[0]["at"] == when
    assert fmt.decode(fmt.encode(decoded.batch)).batch.equals(decoded.batch)


def test_format_for_names_every_format_and_rejects_others():
    assert {format_for(n, SCHEMA).name for n in ("json", "msgpack", "arrow")} == {"json", "msgpack", "arrow"}
    assert format_for("avro", avro_schema=arrow_to_avro(SCHEMA)).name == "avro"
    with pytest.raises(ConfigError, match="unknown format 'xml'"):
        format_for("xml", SCHEMA)
    with pytest.raises(ConfigError, match="message_class"):
        format_for("protobuf", SCHEMA)


_JSON_TYPES = pa.schema([("i", pa.int32()), ("u", pa.uint64()), ("f", pa.float64()), ("g", pa.float32()),
                         ("b", pa.bool_()), ("s", pa.string()), ("t", pa.timestamp("us", "UTC")),
                         ("naive", pa.timestamp("ns")), ("d", pa.date32()), ("xs", pa.list_(pa.int64())),
                         ("bin", pa.binary())])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "i": st.none() | st.integers(-2**31, 2**31 - 1),
    "u": st.none() | st.integers(0, 2**64 - 1),
    "f": st.none() | st.floats(allow_nan=True, allow_infinity=True),
    "g": st.none() | st.floats(width=32, allow_nan=False, allow_infinity=False),
    "b": st.none() | st.booleans(),
    "s": st.none() | st.text(max_size=8),
    "t": st.none() | st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1),
                                  timezones=st.just(UTC)),
    "naive": st.none() | st.integers(-2**62, 2**62),
    "d": st.none() | st.dates(),
    "xs": st.none() | st.lists(st.integers(-5, 5), max_size=3),
    "bin": st.none() | st.binary(max_size=4),
}), min_size=1, max_size=20))
def test_json_encode_by_columns_matches_row_by_row_orjson(rows):
    """The column-wise JSON writer gives the documents orjson writes row by row (the same JSON
    values; number spelling may differ, e.g. 5 vs 5.0), and they decode back."""
    import json

    batch = pa.RecordBatch.from_pylist(rows, schema=_JSON_TYPES)
    fmt = JsonFormat(_JSON_TYPES)
    fast, slow = fmt.encode(batch), fmt.encode_rows(batch)
    assert len(fast) == len(slow) == len(rows)
    for a, b in zip(fast, slow):
        da, db = json.loads(a), json.loads(b)
        if da["g"] is not None:                  # float32: Arrow writes float32's shortest digits
            assert np.float32(da["g"]) == np.float32(db["g"])
            da["g"] = db["g"]
        assert da == db, (a, b)
    back = JsonFormat(_JSON_TYPES.remove(_JSON_TYPES.get_field_index("bin"))).decode(fast)
    assert not back.failures and back.batch.num_rows == len(rows)


def test_json_dates_decode_and_a_bad_one_names_its_field():
    schema = pa.schema([("id", pa.int64()), ("day", pa.date32())])
    fmt = JsonFormat(schema)
    decoded = fmt.decode([b'{"id": 1, "day": "2024-02-29"}', b'{"id": 2, "day": "2024-02-30"}',
                          b'{"id": 3, "day": null}'])
    assert [(f.index, f.reason, f.field) for f in decoded.failures] == [(1, WRONG_TYPE, "day")]
    assert decoded.batch.to_pydict() == {"id": [1, 3], "day": [dt.date(2024, 2, 29), None]}
