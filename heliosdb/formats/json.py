"""JSON: one JSON object per message.

Decoding joins a batch of messages into newline-delimited JSON and parses it with Arrow's C++
JSON reader in one call (multi-threaded, straight into columns).  When that fails, the batch
is bisected: the halves that parse are kept whole, and only the messages that fail on their
own are examined (with orjson, field by field) to say what is wrong and with which field.
Encoding writes each row with orjson.

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
import pyarrow.json as pa_json

from ..errors import ConfigError
from . import (EMPTY, MALFORMED, MISSING_FIELD, WRONG_TYPE, DecodeFailure, Decoded, Format,
               _short, check_required, empty_batch, nullable, python_columns)

#: Below this many messages a failing slice is examined message by message.
_BISECT_LEAF = 16


class JsonFormat(Format):
    """JSON objects with the fields of ``schema`` (extra fields are ignored; absent fields
    are null; a non-nullable field that is absent or null makes the record fail).

    Timestamps decode from ISO 8601 strings or numbers in the field's unit, and encode as
    ISO 8601 strings.
    """

    name = "json"

    def __init__(self, schema: pa.Schema):
        if not isinstance(schema, pa.Schema):
            raise ConfigError(f"JSON format: schema must be a pyarrow.Schema, got {schema!r}")
        self.schema = schema
        self._parse = pa_json.ParseOptions(explicit_schema=nullable(schema),
                                           unexpected_field_behavior="ignore")
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
        batch = check_required(batch, self.schema, msg_index if msg_index is not None else range(rows), failures)
        if len(failures) != before:
            dropped = {f.index for f in failures[before:]}
            all_index = msg_index if msg_index is not None else np.arange(rows, dtype=np.int64)
            msg_index = np.asarray([i for i in all_index if i not in dropped], dtype=np.int64)
        failures.sort(key=lambda f: f.index)
        return Decoded(batch, failures, msg_index)

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
                                 f"a JSON {type(doc).__name__}, not an object: {_short(doc)}")
        for f in self.schema:
            v = doc.get(f.name)
            if v is None:
                if not f.nullable:
                    what = "absent" if f.name not in doc else "null"
                    return DecodeFailure(index, MISSING_FIELD, f.name,
                                         f"required field is {what} (non-nullable, type {f.type})")
                continue
            options = pa_json.ParseOptions(explicit_schema=pa.schema([f.with_nullable(True)]),
                                           unexpected_field_behavior="ignore")
            try:
                pa_json.read_json(io.BytesIO(orjson.dumps({f.name: v})), parse_options=options)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return DecodeFailure(index, WRONG_TYPE, f.name, f"value {_short(v)} is not a {f.type}")
        return DecodeFailure(index, MALFORMED, None, f"cannot be read as one JSON object: {_short(value)}")

    # -- encode ----------------------------------------------------------------------------------
    def encode(self, batch: pa.RecordBatch) -> List[bytes]:
        import orjson

        names = batch.schema.names
        cols = python_columns(batch, iso_timestamps=True)
        dumps = orjson.dumps
        opt = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
        return [dumps(dict(zip(names, row)), option=opt, default=_default) for row in zip(*cols)]

    def describe(self) -> str:
        return f"json ({len(self.schema)} fields)"


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
