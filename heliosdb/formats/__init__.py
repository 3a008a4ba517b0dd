"""Record formats: a batch of message payloads (bytes) <-> one Arrow record batch.

A :class:`Format` decodes a whole batch of messages at once (``decode(values)``) and encodes a
record batch into message payloads (``encode(batch)``).  Decoding never throws a batch away for
one bad record: records that cannot be decoded come back as :class:`DecodeFailure` (the
message's index, a short ``reason`` code and the field it concerns) next to the batch of good
ones, so the source can apply its ``on_error`` policy (fail, dead-letter, skip) record by record.

Formats: :class:`~heliosdb.formats.json.JsonFormat`, :class:`~heliosdb.formats.msgpack.MsgpackFormat`,
:class:`~heliosdb.formats.avro.AvroFormat`, :class:`~heliosdb.formats.protobuf.ProtobufFormat`,
:class:`~heliosdb.formats.arrow_ipc.ArrowIpcFormat`; :func:`format_for` builds one by name.

Examples
--------
>>> import pyarrow as pa
>>> from heliosdb.formats import format_for
>>> fmt = format_for("json", pa.schema([("user", pa.string()), ("n", pa.int64())]))
>>> decoded = fmt.decode([b'{"user": "a", "n": 1}', b'{"user": "b", "n": "x"}'])
>>> decoded.batch.to_pydict()
{'user': ['a'], 'n': [1]}
>>> [(f.index, f.reason, f.field) for f in decoded.failures]
[(1, 'wrong_type', 'n')]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from .values import to_column

#: The reasons a record can fail to decode: the ``reason`` label of
#: ``streaming_dead_letters_total`` and the ``reason`` column of dead letters.
MALFORMED = "malformed"            # not parseable at all (bad JSON, corrupt bytes, truncated)
WRONG_TYPE = "wrong_type"          # a field has a value of the wrong type
MISSING_FIELD = "missing_field"    # a required (non-nullable) field is absent or null
BAD_MAGIC = "bad_magic"            # the Confluent wire format's magic byte is not 0
UNKNOWN_SCHEMA = "unknown_schema"  # the Confluent wire format names a schema id we do not know
OVERSIZED = "oversized"            # the message is larger than the source's max_record_bytes
EMPTY = "empty"                    # no payload (an empty message or a tombstone)
EXTRA_FIELD = "extra_field"        # a field the schema lacks, with the format's extra="error"
NULL_EVENT_TIME = "null_event_time"  # no value in the event-time column of a watermark after it
REASONS = (MALFORMED, WRONG_TYPE, MISSING_FIELD, BAD_MAGIC, UNKNOWN_SCHEMA, OVERSIZED, EMPTY,
           EXTRA_FIELD, NULL_EVENT_TIME)

#: What the ``extra=`` option of the JSON and MessagePack formats accepts: what to do with a
#: field the schema does not have.  "ignore" (their default) reads only the schema's fields.
EXTRA = ("ignore", "error")


@dataclass(frozen=True)
class DecodeFailure:
    """A message that did not decode: its index in the batch, why, and which field (if one)."""

    index: int
    reason: str
    field: Optional[str]
    detail: str

    def describe(self) -> str:
        where = f"field {self.field!r}: " if self.field else ""
        return f"{where}{self.detail} ({self.reason})"


@dataclass
class Decoded:
    """The result of decoding a batch of messages.

    ``batch`` holds the good records in message order; ``message_index[i]`` is the index of
    the message row ``i`` came from (None means row ``i`` came from message ``i``: one record
    per message and no failures); ``failures`` lists the messages that did not decode.
    """

    batch: pa.RecordBatch
    failures: List[DecodeFailure] = field(default_factory=list)
    message_index: Optional[np.ndarray] = None


class Format:
    """Base class of every format.

    ``schema`` is the schema of decoded records (None: not known until data is seen, see
    :meth:`with_schema`); ``rows_per_message`` is 1 for one record per message (JSON,
    MessagePack, Avro, Protobuf) and 0 for "any number" (Arrow IPC).
    """

    name = "format"
    rows_per_message = 1
    schema: Optional[pa.Schema] = None

    def with_schema(self, schema: pa.Schema) -> "Format":
        """This format with ``schema`` (for a format built without one, whose schema is read
        from the data or given by the stream: Arrow IPC).  A format whose schema is fixed
        when it is built is returned as it is if ``schema`` is the same.

        >>> import pyarrow as pa
        >>> fmt = format_for("json", pa.schema([("x", pa.int64())]))
        >>> fmt.with_schema(pa.schema([("x", pa.int64())])) is fmt
        True
        """
        if self.schema is not None and self.schema.equals(schema):
            return self
        raise ConfigError(f"the {self.name} format's schema is fixed when it is built "
                          f"({self.schema}); build it with the schema {schema} instead")

    def decode(self, values: Sequence[Optional[bytes]]) -> Decoded:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, batch: pa.RecordBatch) -> List[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def nullable(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field nullable (parsers fill absent fields with nulls; required
    fields are checked afterwards, so the error can name the field)."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def check_required(batch: pa.RecordBatch, schema: pa.Schema, index: Sequence[int],
                   failures: List[DecodeFailure]) -> pa.RecordBatch:
    """Drop rows where a non-nullable field of ``schema`` is null, as MISSING_FIELD failures.

    ``index`` maps rows of ``batch`` to message indexes.  Returns the batch with ``schema``.
    """
    bad = None
    for f in schema:
        if f.nullable:
            continue
        col = batch.column(batch.schema.get_field_index(f.name))
        if not col.null_count:
            continue
        nulls = col.is_null().to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(nulls & ~bad if bad is not None else nulls):
            failures.append(DecodeFailure(int(index[i]), MISSING_FIELD, f.name,
                                          f"required field is absent or null (it is non-nullable in "
                                          f"the schema, type {f.type})"))
        bad = nulls if bad is None else (bad | nulls)
    if bad is not None:
        batch = batch.filter(pa.array(~bad))
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def extra_option(extra: str, what: str) -> str:
    if extra not in EXTRA:
        raise ConfigError(f"{what} format: extra= must be 'ignore' or 'error', got {extra!r}")
    return extra


def extra_failure(names: Sequence[str], rec: dict) -> Optional["Reject"]:
    """A Reject naming the fields of ``rec`` that ``names`` lacks (None if there are none)."""
    allowed = set(names)
    if allowed.issuperset(rec):
        return None
    extra = [k for k in rec if k not in allowed]
    return Reject(EXTRA_FIELD, f"field(s) {', '.join(map(repr, extra))} not in the schema "
                               "(the format has extra='error')", str(extra[0]))


class Reject(Exception):
    """Raised by a per-message decoder of :func:`decode_each`: the message fails with
    ``reason`` (one of :data:`REASONS`) and ``detail``."""

    def __init__(self, reason: str, detail: str, field: Optional[str] = None):
        super().__init__(detail)
        self.reason, self.detail, self.field = reason, detail, field


def decode_each(values: Sequence[Optional[bytes]], one: Callable[[bytes], dict],
                schema: pa.Schema) -> "Decoded":
    """Decode messages one by one with ``one`` (bytes -> a record dict, or :class:`Reject`)
    and build the batch of the good ones; empty messages fail as EMPTY.

    >>> import json, pyarrow as pa
    >>> def one(v):
    ...     return json.loads(v)
    >>> decode_each([b'{"x": 1}', b""], one, pa.schema([("x", pa.int64())])).batch.to_pydict()
    {'x': [1]}
    """
    failures: List[DecodeFailure] = []
    records: List[Optional[dict]] = []
    append = records.append
    for i, v in enumerate(values):
        if not v:
            failures.append(DecodeFailure(i, EMPTY, None, "empty message"))
            append(None)
            continue
        try:
            append(one(v))
        except Reject as r:
            failures.append(DecodeFailure(i, r.reason, r.field, r.detail))
            append(None)
    return records_to_batch(records, schema, failures)


def records_to_batch(records: List[Optional[dict]], schema: pa.Schema,
                     failures: List[DecodeFailure]) -> Decoded:
    """Decoded records (dicts; None where the message already failed) -> a record batch.

    Columns are converted whole and kept exactly (:func:`~heliosdb.formats.values.to_column`:
    2.5 is not an int64, a too-fine timestamp is not truncated); only when a column does not
    convert is it checked value by value, so a wrong type costs time only in the batches that
    have one.  Failures (wrong type or a value that would change, required field missing) are
    appended to ``failures``, naming the field.
    """
    ok = [i for i, r in enumerate(records) if r is not None]
    good: List[dict] = records if len(ok) == len(records) else [records[i] for i in ok]  # type: ignore[assignment]
    bad = np.zeros(len(good), dtype=bool)
    arrays: List[Optional[pa.Array]] = []
    for f in schema:
        name = f.name
        values = [r.get(name) for r in good]
        column, wrong = to_column(values, f.type)
        arrays.append(column)
        for i, why in wrong:
            if not bad[i]:
                bad[i] = True
                failures.append(DecodeFailure(ok[i], WRONG_TYPE, name, why))
        if not f.nullable:
            for i, r in enumerate(good):
                if not bad[i] and r.get(name) is None:
                    bad[i] = True
                    what = "absent" if name not in r else "null"
                    failures.append(DecodeFailure(ok[i], MISSING_FIELD, name,
                                                  f"required field is {what} (non-nullable, type {f.type})"))
    if bad.any():
        keep = np.flatnonzero(~bad)
        good = [good[i] for i in keep]
        ok = [ok[i] for i in keep]
        arrays = [to_column([r.get(f.name) for r in good], f.type)[0] for f in schema]
    failures.sort(key=lambda x: x.index)
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema) if good else empty_batch(schema)
    index = None if len(ok) == len(records) else np.asarray(ok, dtype=np.int64)
    return Decoded(batch, failures, index)


def python_columns(batch: pa.RecordBatch, iso_timestamps: bool = False) -> List[list]:
    """The batch's columns as Python lists, for per-row encoders.

    Timestamps become ``datetime`` objects (nanosecond ones are cut to microseconds, what
    ``datetime`` holds), or with ``iso_timestamps`` RFC 3339 strings at full precision (UTC,
    ending in ``Z``, for time-zone-aware columns; a space between date and time).
    """
    out = []
    for col in batch.columns:
        t = col.type
        if pa.types.is_timestamp(t):
            if iso_timestamps:
                if t.tz is not None:
                    col = col.cast(pa.timestamp(t.unit, "UTC"))
                col = col.cast(pa.string())      # "2024-01-01 00:00:00.123Z": RFC 3339; 3x strftime's speed
            elif t.unit == "ns":
                col = col.cast(pa.timestamp("us", t.tz), safe=False)
        out.append(col.to_pylist())
    return out


def format_for(name: str, schema: Optional[pa.Schema] = None, **options: Any) -> Format:
    """A format by name: ``json``, ``msgpack``, ``avro``, ``protobuf`` or ``arrow``.

    >>> import pyarrow as pa
    >>> format_for("msgpack", pa.schema([("x", pa.int64())])).name
    'msgpack'
    """
    from .arrow_ipc import ArrowIpcFormat
    from .avro import AvroFormat
    from .json import JsonFormat
    from .msgpack import MsgpackFormat
    from .protobuf import ProtobufFormat

    formats: Dict[str, Any] = {"json": JsonFormat, "msgpack": MsgpackFormat, "avro": AvroFormat,
                               "protobuf": ProtobufFormat, "arrow": ArrowIpcFormat,
                               "arrow_ipc": ArrowIpcFormat}
    cls = formats.get(name)
    if cls is None:
        raise ConfigError(f"unknown format {name!r}; use one of {', '.join(sorted(formats))}")
    if cls is ProtobufFormat:
        if "message_class" not in options:
            raise ConfigError("format 'protobuf' needs message_class= (a generated protobuf message class)")
        return cls(options.pop("message_class"), **options)
    if cls is AvroFormat:
        return cls(options.pop("avro_schema", None) or schema, **options)
    return cls(schema, **options)


__all__ = ["Format", "Decoded", "DecodeFailure", "format_for", "REASONS", "MALFORMED", "WRONG_TYPE",
           "MISSING_FIELD", "BAD_MAGIC", "UNKNOWN_SCHEMA", "OVERSIZED", "EMPTY", "EXTRA_FIELD", "EXTRA",
           "Reject", "decode_each"]
