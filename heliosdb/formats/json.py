"""JSON: one JSON object per message.

Decoding joins a batch of messages into newline-delimited JSON and parses it with Arrow's C++
JSON reader in one call (multi-threaded, straight into columns).  When that fails, the batch
is bisected: the halves that parse are kept whole, and only the messages that fail on their
own are examined (with orjson, field by field) to say what is wrong and with which field.
Encoding writes whole columns as JSON text with Arrow compute kernels and joins them into one
document per row (orjson for the columns Arrow cannot write).

Examples
--------
>>> import pyarrow as pa
>>> fmt = JsonFormat(pa.schema([("ts", pa.int64()), ("v", pa.float64())]))
>>> payloads = fmt.encode(pa.record_batch({"ts": [1, 2], "v": [0.5, None]}))
>>> payloads
[b'{"ts":1,"v":0.5}', b'{"ts":2,"v":null}']
>>> fmt.decode(payloads).batch.to_pydict()
{'ts': [1, 2], 'v': [0.5, None]}
"""
from __future__ import annotations

import io
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from .._optional import require
from ..errors import ConfigError
from . import (EMPTY, EXTRA_FIELD, MALFORMED, MISSING_FIELD, WRONG_TYPE, DecodeFailure, Decoded,
               Format, check_required, empty_batch, extra_failure, extra_option, nullable,
               python_columns)
from .values import short

#: Below this many messages a failing slice is examined message by message.
_BISECT_LEAF = 16


class JsonFormat(Format):
    """JSON objects with the fields of ``schema`` (absent fields are null; a non-nullable
    field that is absent or null makes the record fail).  A field the schema lacks is
    ignored (``extra="ignore"``, the default: the schema selects the fields a job reads, as
    in Spark's ``from_json``) or fails the record as ``extra_field`` (``extra="error"``).

    Values are kept exactly or the record fails (``wrong_type``, naming the field): 2.5 or
    1e20 is not an int64, 300 not an int8, a timestamp with more digits than the field's
    unit is not truncated, "2.555" is not a ``decimal128(10, 2)``.  A number in a float
    field is rounded to the nearest float, as JSON numbers always are, unless it would
    overflow to infinity.  Timestamps decode from ISO 8601 strings or numbers in the field's
    unit, and encode as ISO 8601 strings.
    """

    name = "json"

    def __init__(self, schema: pa.Schema, extra: str = "ignore"):
        if not isinstance(schema, pa.Schema):
            raise ConfigError(f"JSON format: schema must be a pyarrow.Schema, got {schema!r}")
        require("orjson", "kafka", "the JSON format")
        self.schema = schema
        self.extra = extra_option(extra, "JSON")
        # Arrow's JSON reader does not parse dates: they are read as text and cast after.
        self._dates = {f.name: f.type for f in schema if pa.types.is_date(f.type)}
        self._floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        self._parse = _parse_options(nullable(schema), self.extra)
        self._names = schema.names

    # -- decode ----------------------------------------------------------------------------------
    def _read(self, values: Sequence[bytes], joined: Optional[bytes] = None) -> Optional[pa.RecordBatch]:
        """One parse of ``values`` (no empty ones); None if it fails or loses a row."""
        try:
            table = pa_json.read_json(io.BytesIO(joined or b"\n".join(values)), parse_options=self._parse)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if table.num_rows != len(values):
            return None            # a message held several documents, or none
        table = table.select(self._names)
        for name, t in self._dates.items():
            try:
                i = table.schema.get_field_index(name)
                table = table.set_column(i, table.field(i).with_type(t), table.column(i).cast(t))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        return table.combine_chunks().to_batches()[0] if table.num_rows else None

    def decode(self, values: Sequence[Optional[bytes]]) -> Decoded:
        failures: List[DecodeFailure] = []
        index = list(range(len(values)))
        if not all(values):
            index = [i for i, v in enumerate(values) if v]
            failures += [DecodeFailure(i, EMPTY, None, "empty message (no JSON document)")
                         for i, v in enumerate(values) if not v]
            values = [values[i] for i in index]
        joined = b"\n".join(values)  # type: ignore[arg-type]
        if joined.count(b"\n") != len(values) - 1:
            # Newlines inside a document are whitespace (JSON strings cannot hold raw ones),
            # but they would split the line-delimited stream.
            values = [v.replace(b"\n", b" ") for v in values]  # type: ignore[union-attr]
            joined = b"\n".join(values)
        pieces: List[Tuple[pa.RecordBatch, int, int]] = []      # (batch, first message, count)
        self._decode_range(values, 0, len(values), pieces, failures, index, joined)
        batches = [p[0] for p in pieces]
        if not batches:
            return Decoded(empty_batch(self.schema), sorted(failures, key=lambda f: f.index),
                           np.array([], dtype=np.int64))
        batch = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
        rows = len(values) if not failures else sum(p[2] for p in pieces)
        msg_index = None
        if failures or len(index) != rows:
            msg_index = np.concatenate([np.asarray(index[p[1]: p[1] + p[2]], dtype=np.int64) for p in pieces])
        before = len(failures)
        all_index = msg_index if msg_index is not None else np.arange(rows, dtype=np.int64)
        batch, kept = self._drop_overflows(batch, all_index, failures)
        batch = check_required(batch, self.schema, kept, failures)
        if len(failures) != before:
            dropped = {f.index for f in failures[before:]}
            msg_index = np.asarray([i for i in all_index if i not in dropped], dtype=np.int64)
        failures.sort(key=lambda f: f.index)
        return Decoded(batch, failures, msg_index)

    def _drop_overflows(self, batch: pa.RecordBatch, index: np.ndarray,
                        failures: List[DecodeFailure]) -> Tuple[pa.RecordBatch, np.ndarray]:
        """Drop rows whose number overflowed a float column to infinity (JSON has no
        infinities, so a non-finite float can only be one), as WRONG_TYPE failures."""
        bad = None
        for name in self._floats:
            col = batch.column(name)
            finite = pc.is_finite(col).fill_null(True)
            if pc.all(finite).as_py():
                continue
            over = ~finite.to_numpy(zero_copy_only=False)
            typ = self.schema.field(name).type
            for i in np.flatnonzero(over if bad is None else over & ~bad):
                failures.append(DecodeFailure(int(index[i]), WRONG_TYPE, name,
                                              f"the number is beyond {typ}'s range (it would "
                                              "become infinite)"))
            bad = over if bad is None else bad | over
        if bad is None:
            return batch, index
        return batch.filter(pa.array(~bad)), index[~bad]

    def _decode_range(self, values: Sequence[bytes], lo: int, hi: int,
                      out: List[Tuple[pa.RecordBatch, int, int]], failures: List[DecodeFailure],
                      index: List[int], joined: Optional[bytes] = None) -> None:
        if lo >= hi:
            return
        batch = self._read(values[lo:hi], joined)
        if batch is not None:
            out.append((batch, lo, hi - lo))
            return
        if hi - lo <= _BISECT_LEAF:
            for i in range(lo, hi):
                one = self._read(values[i:i + 1])
                if one is not None:
                    out.append((one, i, 1))
                else:
                    failures.append(self._explain(values[i], index[i]))
            return
        mid = (lo + hi) // 2
        self._decode_range(values, lo, mid, out, failures, index)
        self._decode_range(values, mid, hi, out, failures, index)

    def _explain(self, value: bytes, index: int) -> DecodeFailure:
        """Why one message does not decode, naming the field where there is one."""
        import orjson

        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return DecodeFailure(index, MALFORMED, None, f"not valid JSON: {exc}")
        if not isinstance(doc, dict):
            return DecodeFailure(index, MALFORMED, None,
                                 f"a JSON {type(doc).__name__}, not an object: {short(doc)}")
        if self.extra == "error" and (extra := extra_failure(self._names, doc)) is not None:
            return DecodeFailure(index, EXTRA_FIELD, extra.field, extra.detail)
        for f in self.schema:
            v = doc.get(f.name)
            if v is None:
                if not f.nullable:
                    what = "absent" if f.name not in doc else "null"
                    return DecodeFailure(index, MISSING_FIELD, f.name,
                                         f"required field is {what} (non-nullable, type {f.type})")
                continue
            options = _parse_options(pa.schema([f.with_nullable(True)]))
            try:
                one = pa_json.read_json(io.BytesIO(orjson.dumps({f.name: v})), parse_options=options)
                if f.name in self._dates:
                    one.column(0).cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return DecodeFailure(index, WRONG_TYPE, f.name, f"value {short(v)} is not a {f.type}")
        return DecodeFailure(index, MALFORMED, None, f"cannot be read as one JSON object: {short(value)}")

    # -- encode ----------------------------------------------------------------------------------
    def encode(self, batch: pa.RecordBatch) -> List[bytes]:
        """One JSON object per row.  Columns of numbers, booleans, strings and timestamps are
        written as JSON text by Arrow compute kernels and joined into documents in one call;
        any other column (and a string column holding characters that need escaping) goes
        value by value through orjson.  Both give the same documents (NaN and infinities are
        written as null, timestamps as RFC 3339 text)."""
        import orjson

        if not batch.num_rows:
            return []
        if not batch.num_columns:
            return [b"{}"] * batch.num_rows
        parts: List = []
        for i, (name, column) in enumerate(zip(batch.schema.names, batch.columns)):
            parts.append(("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":")
            parts.append(_json_text(column))
        parts.append("}")
        joined = pc.binary_join_element_wise(*parts, "")
        return joined.cast(pa.binary()).to_pylist()

    def encode_rows(self, batch: pa.RecordBatch) -> List[bytes]:
        """The row-by-row encoding (orjson over Python values): the reference
        :meth:`encode` is tested against."""
        import orjson

        names = batch.schema.names
        cols = python_columns(batch, iso_timestamps=True)
        dumps = orjson.dumps
        opt = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
        return [dumps(dict(zip(names, row)), option=opt, default=_default) for row in zip(*cols)]

    def describe(self) -> str:
        return f"json ({len(self.schema)} fields)"


def _parse_options(schema: pa.Schema, extra: str = "ignore") -> pa_json.ParseOptions:
    """Arrow JSON parse options for ``schema`` (dates read as text, see JsonFormat)."""
    read = pa.schema([f.with_type(pa.string()) if pa.types.is_date(f.type) else f for f in schema])
    return pa_json.ParseOptions(explicit_schema=read, unexpected_field_behavior=extra)


#: Characters a JSON string must escape (the quote, the backslash, control characters).
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _json_text(col: pa.Array) -> pa.Array:
    """A column as JSON value texts (a string array without nulls)."""
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        text = col.cast(pa.string())
    elif pa.types.is_float64(t):
        text = col.cast(pa.string())                  # shortest round-trip digits
        finite = pc.is_finite(col)
        if not pc.all(finite.fill_null(True)).as_py():
            text = pc.if_else(finite, text, pa.scalar(None, pa.string()))
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        if pc.any(pc.match_substring_regex(col, _NEEDS_ESCAPE)).as_py():
            return _json_text_rows(col)
        text = pc.binary_join_element_wise('"', col.cast(pa.string()), '"', "")
    elif pa.types.is_timestamp(t):
        # Few distinct instants per batch (window bounds, seconds): format each once.
        if t.tz is not None:
            col = col.cast(pa.timestamp(t.unit, "UTC"))
        enc = pc.dictionary_encode(col)
        words = pc.binary_join_element_wise('"', enc.dictionary.cast(pa.string()), '"', "")
        text = words.take(enc.indices)
    elif pa.types.is_null(t):
        return pa.array(["null"] * len(col), pa.string())
    else:
        return _json_text_rows(col)
    return text.fill_null("null") if text.null_count else text


def _json_text_rows(col: pa.Array) -> pa.Array:
    """A column as JSON value texts, value by value with orjson (what Arrow cannot write)."""
    import orjson

    opt = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
    (values,) = python_columns(pa.RecordBatch.from_arrays([col], ["c"]), iso_timestamps=True)
    dumps = orjson.dumps
    return pa.array([dumps(v, option=opt, default=_default) for v in values], pa.binary()).cast(pa.string())


def _default(value):
    """orjson fallback for what it does not serialise itself (Decimal, bytes, timedelta)."""
    import base64
    import datetime
    import decimal

    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")
