"""Protocol Buffers: one message of a generated message class per Kafka message.

Each payload is parsed with the class's ``FromString`` (the upb C parser); fields are read a
column at a time with one ``attrgetter`` per message, never through ``MessageToDict``.

Field types map to Arrow as: int32/sint32/sfixed32 (int32), int64/sint64/sfixed64 (int64),
uint32/fixed32 (uint32), uint64/fixed64 (uint64), float, double, bool, string, bytes
(binary), enum (int32, the number), ``google.protobuf.Timestamp`` (UTC timestamp, ns),
repeated scalars (lists).  A field with presence (proto3 ``optional``, proto2, a message) is
null when absent; proto2 ``required`` fields are required.  Other nested messages are not
supported: flatten them, or decode the raw bytes in ``map_batches``.

Examples
--------
>>> from google.protobuf import timestamp_pb2
>>> fmt = ProtobufFormat(timestamp_pb2.Timestamp)
>>> fmt.schema
seconds: int64 not null
nanos: int32 not null
>>> fmt.decode([timestamp_pb2.Timestamp(seconds=5).SerializeToString(), b"\\xff"]).batch.to_pydict()
{'seconds': [5], 'nanos': [0]}
"""
from __future__ import annotations

from operator import attrgetter
from typing import Any, List, Optional, Sequence

import pyarrow as pa

from ..errors import ConfigError
from . import (EMPTY, MALFORMED, MISSING_FIELD, DecodeFailure, Decoded, Format, empty_batch,
               records_to_batch)

_TIMESTAMP = "google.protobuf.Timestamp"


def _scalar_type(fd) -> pa.DataType:
    T = fd.__class__
    t = fd.type
    if t in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32, T.TYPE_ENUM):
        return pa.int32()
    if t in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64):
        return pa.int64()
    if t in (T.TYPE_UINT32, T.TYPE_FIXED32):
        return pa.uint32()
    if t in (T.TYPE_UINT64, T.TYPE_FIXED64):
        return pa.uint64()
    if t == T.TYPE_FLOAT:
        return pa.float32()
    if t == T.TYPE_DOUBLE:
        return pa.float64()
    if t == T.TYPE_BOOL:
        return pa.bool_()
    if t == T.TYPE_STRING:
        return pa.string()
    if t == T.TYPE_BYTES:
        return pa.binary()
    if t == T.TYPE_MESSAGE and fd.message_type.full_name == _TIMESTAMP:
        return pa.timestamp("ns", "UTC")
    what = fd.message_type.full_name if fd.message_type is not None else t
    raise ConfigError(
        f"protobuf field {fd.full_name!r} has type {what}, which has no column mapping here; "
        "flatten nested messages, or decode the raw bytes in map_batches()"
    )


class ProtobufFormat(Format):
    """Messages of ``message_class`` (a generated protobuf class)."""

    name = "protobuf"

    def __init__(self, message_class: Any):
        desc = getattr(message_class, "DESCRIPTOR", None)
        if desc is None or not hasattr(message_class, "FromString"):
            raise ConfigError(f"protobuf format: {message_class!r} is not a generated protobuf message class")
        self.message_class = message_class
        fields = []
        self._presence: List[str] = []
        self._timestamps: List[str] = []
        self._repeated: List[str] = []
        for fd in desc.fields:
            typ = _scalar_type(fd)
            repeated = fd.is_repeated
            if repeated:
                typ = pa.list_(typ)
                self._repeated.append(fd.name)
            elif fd.has_presence:
                self._presence.append(fd.name)
            if pa.types.is_timestamp(typ if not repeated else typ.value_type):
                self._timestamps.append(fd.name)
            required = getattr(fd, "is_required", False)
            fields.append(pa.field(fd.name, typ, nullable=not required and fd.has_presence and not repeated))
        self.schema = pa.schema(fields)
        self._names = [f.name for f in fields]
        self._required = any(getattr(fd, "is_required", False) for fd in desc.fields)
        self._get = attrgetter(*self._names) if self._names else None

    def decode(self, values: Sequence[Optional[bytes]]) -> Decoded:
        from google.protobuf.message import DecodeError

        parse = self.message_class.FromString
        failures: List[DecodeFailure] = []
        msgs = []
        index = []
        for i, v in enumerate(values):
            if v is None:
                failures.append(DecodeFailure(i, EMPTY, None, "no payload (a tombstone)"))
                continue
            try:
                m = parse(v)
            except (DecodeError, ValueError, TypeError) as exc:
                failures.append(DecodeFailure(i, MALFORMED, None, f"not a valid {self.message_class.DESCRIPTOR.full_name}: {exc}"))
                continue
            if self._required and not m.IsInitialized():
                missing = m.FindInitializationErrors()
                failures.append(DecodeFailure(i, MISSING_FIELD, missing[0] if missing else None,
                                              f"required field(s) {', '.join(missing)} absent"))
                continue
            msgs.append(m)
            index.append(i)
        if not msgs:
            import numpy as np

            return Decoded(empty_batch(self.schema), failures, np.array([], dtype=np.int64))
        if self._presence or self._timestamps or self._repeated or len(self._names) == 1:
            records = [self._record(m) for m in msgs]
        else:
            get = self._get
            names = self._names
            records = [dict(zip(names, get(m))) for m in msgs]
        full: List[Optional[dict]] = [None] * len(values)
        for i, r in zip(index, records):
            full[i] = r
        return records_to_batch(full, self.schema, failures)

    def _record(self, m) -> dict:
        rec = {}
        for name in self._names:
            if name in self._presence and not m.HasField(name):
                rec[name] = None
                continue
            v = getattr(m, name)
            if name in self._timestamps:
                v = [t.ToNanoseconds() for t in v] if name in self._repeated else v.ToNanoseconds()
            elif name in self._repeated:
                v = list(v)
            rec[name] = v
        return rec

    def encode(self, batch: pa.RecordBatch) -> List[bytes]:
        cls = self.message_class
        names = batch.schema.names
        cols = []
        for name, col in zip(names, batch.columns):
            if name in self._timestamps and pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("ns", col.type.tz)).view(pa.int64())
            cols.append(col.to_pylist())
        stamps = [n for n in names if n in self._timestamps]
        out = []
        for row in zip(*cols):
            kwargs = {}
            for name, v in zip(names, row):
                if v is not None and name not in self._timestamps:
                    kwargs[name] = v
            m = cls(**kwargs)
            for name in stamps:
                v = row[names.index(name)]
                if v is None:
                    continue
                if name in self._repeated:
                    for ns in v:
                        getattr(m, name).add().FromNanoseconds(ns)
                else:
                    getattr(m, name).FromNanoseconds(v)
            out.append(m.SerializeToString())
        return out

    def describe(self) -> str:
        return f"protobuf ({self.message_class.DESCRIPTOR.full_name})"


def message_class(schema: pa.Schema, name: str = "Record", package: str = "heliosdb") -> Any:
    """A protobuf message class for the flat Arrow ``schema`` (proto3, every field
    ``optional``, numbered in schema order), built at run time without ``protoc``: for writing
    a stream with ``serialize_protobuf`` when no ``.proto`` exists yet.

    Arrow types map to int32, int64, uint32, uint64, float, double, bool, string and bytes.

    >>> import pyarrow as pa
    >>> Ev = message_class(pa.schema([("id", pa.int64()), ("tag", pa.string())]), "Ev")
    >>> Ev.FromString(Ev(id=7, tag="a").SerializeToString()).id
    7
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    kinds = [(pa.types.is_int32, F.TYPE_INT32), (pa.types.is_int64, F.TYPE_INT64),
             (pa.types.is_uint32, F.TYPE_UINT32), (pa.types.is_uint64, F.TYPE_UINT64),
             (pa.types.is_float32, F.TYPE_FLOAT), (pa.types.is_float64, F.TYPE_DOUBLE),
             (pa.types.is_boolean, F.TYPE_BOOL), (pa.types.is_string, F.TYPE_STRING),
             (pa.types.is_binary, F.TYPE_BYTES)]
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{package}_{name}.proto", package=package,
                                             syntax="proto3")
    msg = fdp.message_type.add(name=name)
    for i, f in enumerate(schema, 1):
        kind = next((k for test, k in kinds if test(f.type)), None)
        if kind is None:
            raise ConfigError(f"message_class(): field {f.name!r} has type {f.type}, which has no "
                              "protobuf scalar here (int32/64, uint32/64, float, double, bool, "
                              "string, binary); write a .proto for it")
        msg.oneof_decl.add(name=f"_{f.name}")          # proto3 optional: presence, so nulls
        msg.field.add(name=f.name, number=i, type=kind, label=F.LABEL_OPTIONAL,
                      oneof_index=i - 1, proto3_optional=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))

