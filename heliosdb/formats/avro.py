"""Avro: one record per message, plain (schemaless binary) or in the Confluent wire format.

The Confluent wire format is a magic byte ``0``, the writer schema's id (4 bytes, big-endian),
then the Avro binary.  Without a schema registry, the ids this format accepts are given
(``writer_schemas={id: schema}``); a message with another id, or another magic byte, fails to
decode (``unknown_schema``, ``bad_magic``).  Records are read with fastavro and become Arrow
columns a column at a time.

Avro types map to Arrow as: boolean, int (int32), long (int64), float, double, string, bytes
(binary), enum (string), fixed (binary), ``timestamp-millis``/``-micros`` (UTC timestamps),
``date`` (date32), arrays (lists), maps, nested records (structs); a union with ``null`` is a
nullable field.

Examples
--------
>>> import pyarrow as pa
>>> schema = {"type": "record", "name": "Ev", "fields": [
...     {"name": "user", "type": "string"}, {"name": "n", "type": ["null", "long"]}]}
>>> fmt = AvroFormat(schema, wire_format="confluent", schema_id=7)
>>> payloads = fmt.encode(pa.RecordBatch.from_pylist([{"user": "a", "n": 1}], schema=fmt.schema))
>>> payloads[0][:5]
b'\\x00\\x00\\x00\\x00\\x07'
>>> fmt.decode(payloads + [b"\\x01bad"]).failures[0].reason
'bad_magic'
"""
from __future__ import annotations

import io
import json
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pyarrow as pa

from .._optional import require
from ..errors import ConfigError
from . import (BAD_MAGIC, MALFORMED, UNKNOWN_SCHEMA, Decoded, Format, Reject, decode_each,
               python_columns)

AvroSchema = Union[Dict[str, Any], str]
_PRIMITIVE = {"boolean": pa.bool_(), "int": pa.int32(), "long": pa.int64(), "float": pa.float32(),
              "double": pa.float64(), "string": pa.string(), "bytes": pa.binary()}
_LOGICAL = {"timestamp-millis": pa.timestamp("ms", "UTC"), "timestamp-micros": pa.timestamp("us", "UTC"),
            "local-timestamp-millis": pa.timestamp("ms"), "local-timestamp-micros": pa.timestamp("us"),
            "date": pa.date32(), "time-millis": pa.time32("ms"), "time-micros": pa.time64("us")}


def _parse(schema: AvroSchema) -> Dict[str, Any]:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ConfigError(f"Avro schema is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ConfigError(f"an Avro schema for records must be a dict with type 'record', got {schema!r}")
    return schema


def avro_to_arrow(schema: AvroSchema) -> pa.Schema:
    """The Arrow schema of an Avro record schema.

    >>> avro_to_arrow({"type": "record", "name": "r", "fields": [{"name": "x", "type": ["null", "double"]}]})
    x: double
    """
    schema = _parse(schema)
    return pa.schema([_field(f["name"], f["type"]) for f in schema["fields"]])


def _field(name: str, typ: Any) -> pa.Field:
    if isinstance(typ, list):
        others = [t for t in typ if t != "null"]
        if len(others) != 1:
            raise ConfigError(f"Avro field {name!r}: unions other than [null, T] are not supported ({typ!r})")
        return pa.field(name, _type(name, others[0]), nullable="null" in typ)
    return pa.field(name, _type(name, typ), nullable=False)


def _type(name: str, typ: Any) -> pa.DataType:
    if isinstance(typ, str):
        if typ in _PRIMITIVE:
            return _PRIMITIVE[typ]
        raise ConfigError(f"Avro field {name!r}: type {typ!r} is not supported (named types must be inline)")
    if not isinstance(typ, dict):
        raise ConfigError(f"Avro field {name!r}: cannot read type {typ!r}")
    logical = typ.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    kind = typ.get("type")
    if kind in ("enum",):
        return pa.string()
    if kind == "fixed":
        return pa.binary()
    if kind == "array":
        return pa.list_(_field("item", typ["items"]))
    if kind == "map":
        return pa.map_(pa.string(), _field("value", typ["values"]).type)
    if kind == "record":
        return pa.struct([_field(f["name"], f["type"]) for f in typ["fields"]])
    if kind in _PRIMITIVE:
        return _PRIMITIVE[kind]
    raise ConfigError(f"Avro field {name!r}: type {typ!r} is not supported")


def arrow_to_avro(schema: pa.Schema, name: str = "Record") -> Dict[str, Any]:
    """An Avro record schema for Arrow ``schema`` (nullable fields become ``["null", T]``).

    >>> arrow_to_avro(pa.schema([("x", pa.int64())]))["fields"]
    [{'name': 'x', 'type': ['null', 'long']}]
    """
    return {"type": "record", "name": name, "fields": [
        {"name": f.name, "type": (["null", _avro_type(f.name, f.type)] if f.nullable
                                  else _avro_type(f.name, f.type))} for f in schema]}


def _avro_type(name: str, t: pa.DataType) -> Any:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "long" if t.bit_width > 32 or (pa.types.is_unsigned_integer(t) and t.bit_width == 32) else "int"
    if pa.types.is_float32(t):
        return "float"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_timestamp(t):
        local = "" if t.tz else "local-"
        unit = "millis" if t.unit in ("s", "ms") else "micros"
        return {"type": "long", "logicalType": f"{local}timestamp-{unit}"}
    if pa.types.is_date(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"type": "array", "items": ["null", _avro_type(name, t.value_type)]}
    if pa.types.is_struct(t):
        return arrow_to_avro(pa.schema(list(t)), f"{name}_record")
    if pa.types.is_dictionary(t):
        return _avro_type(name, t.value_type)
    raise ConfigError(f"column {name!r}: Arrow type {t} has no Avro mapping here")


class AvroFormat(Format):
    """Avro records of ``schema`` (the reader schema: a dict or JSON string).

    ``wire_format="plain"`` is bare Avro binary; ``"confluent"`` is the Confluent wire format,
    where ``writer_schemas`` maps accepted schema ids to the schema each was written with (if
    None, every id is read with ``schema``), and ``schema_id`` is the id written on encode.
    """

    name = "avro"

    def __init__(self, schema: AvroSchema, wire_format: str = "plain",
                 writer_schemas: Optional[Mapping[int, AvroSchema]] = None,
                 schema_id: Optional[int] = None):
        require("fastavro", "kafka", "the Avro format")
        import fastavro

        if wire_format not in ("plain", "confluent"):
            raise ConfigError(f"Avro wire_format must be 'plain' or 'confluent', got {wire_format!r}")
        if schema_id is not None and not (isinstance(schema_id, int) and 0 <= schema_id < 2**31):
            raise ConfigError(f"Avro schema_id must be an int in [0, 2**31), got {schema_id!r}")
        self.avro_schema = _parse(schema)
        self.schema = avro_to_arrow(self.avro_schema)
        self.wire_format = wire_format
        self.schema_id = schema_id
        self._parsed = fastavro.parse_schema(self.avro_schema)
        self._writers = None if writer_schemas is None else {
            int(k): fastavro.parse_schema(_parse(v)) for k, v in writer_schemas.items()}

    def decode(self, values: Sequence[Optional[bytes]]) -> Decoded:
        from fastavro import schemaless_reader

        confluent = self.wire_format == "confluent"
        reader = self._parsed

        def one(v: bytes) -> dict:
            writer = reader
            start = 0
            if confluent:
                if len(v) < 5 or v[0] != 0:
                    raise Reject(BAD_MAGIC, f"Confluent wire format starts with magic byte 0, this "
                                            f"message starts with {v[:1]!r} ({len(v)} bytes)")
                if self._writers is not None:
                    sid = struct.unpack_from(">I", v, 1)[0]
                    writer = self._writers.get(sid)
                    if writer is None:
                        raise Reject(UNKNOWN_SCHEMA, f"schema id {sid} is not one of {sorted(self._writers)}")
                start = 5
            buf = io.BytesIO(v)
            buf.seek(start)
            try:
                rec = (schemaless_reader(buf, writer, reader) if writer is not reader
                       else schemaless_reader(buf, writer, None))
            except Exception as exc:  # noqa: BLE001 - fastavro raises many types on bad bytes
                raise Reject(MALFORMED, f"not valid Avro for this schema: {type(exc).__name__}: {exc}") from None
            if buf.tell() != len(v):
                raise Reject(MALFORMED, f"{len(v) - buf.tell()} bytes left over after the record "
                                        "(written with another schema?)")
            return rec

        return decode_each(values, one, self.schema)

    def encode(self, batch: pa.RecordBatch) -> List[bytes]:
        from fastavro import schemaless_writer

        if self.wire_format == "confluent" and self.schema_id is None:
            raise ConfigError("Avro in the Confluent wire format needs schema_id= to encode")
        head = b"" if self.wire_format == "plain" else b"\x00" + struct.pack(">I", self.schema_id)
        parsed = self._parsed
        out = []
        names = batch.schema.names
        for row in zip(*python_columns(batch)):
            rec = dict(zip(names, row))
            buf = io.BytesIO()
            buf.write(head)
            schemaless_writer(buf, parsed, rec)
            out.append(buf.getvalue())
        return out

    def describe(self) -> str:
        return f"avro ({self.wire_format}, {len(self.schema)} fields)"
