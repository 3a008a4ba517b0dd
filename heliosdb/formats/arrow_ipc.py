"""Arrow IPC: each message is an Arrow IPC stream holding record batches (any number of rows).

Decoding reads the messages' buffers without copying them and concatenates the batches;
encoding cuts a record batch into messages of at most ``max_message_bytes`` (Kafka's default
limit is about 1 MB per message).  This is the fastest format by far: no per-record work.

Examples
--------
>>> import pyarrow as pa
>>> fmt = ArrowIpcFormat(pa.schema([("x", pa.int64())]))
>>> payloads = fmt.encode(pa.record_batch({"x": [1, 2, 3]}))
>>> len(payloads), fmt.decode(payloads + [b"junk"]).batch.to_pydict()
(1, {'x': [1, 2, 3]})
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from . import EMPTY, MALFORMED, MISSING_FIELD, WRONG_TYPE, DecodeFailure, Decoded, Format, empty_batch

#: The default cut: well under Kafka's default message.max.bytes (1,000,000).
DEFAULT_MAX_MESSAGE_BYTES = 900_000


class ArrowIpcFormat(Format):
    """Arrow IPC streams.  ``schema`` is the expected schema (None: whatever the first message
    holds, read when the job is planned); a message with a different schema fails to decode
    (``wrong_type``, naming the first field that differs)."""

    name = "arrow"
    rows_per_message = 0

    def __init__(self, schema: Optional[pa.Schema] = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 compression: Optional[str] = None):
        if schema is not None and not isinstance(schema, pa.Schema):
            raise ConfigError(f"Arrow format: schema must be a pyarrow.Schema or None, got {schema!r}")
        if not isinstance(max_message_bytes, int) or max_message_bytes < 1024:
            raise ConfigError(f"Arrow format: max_message_bytes must be an int >= 1024, got {max_message_bytes!r}")
        if compression not in (None, "lz4", "zstd"):
            raise ConfigError(f"Arrow format: compression must be None, 'lz4' or 'zstd', got {compression!r}")
        self.schema = schema
        self.max_message_bytes = max_message_bytes
        self.compression = compression
        self._options = pa.ipc.IpcWriteOptions(compression=compression)

    def with_schema(self, schema: pa.Schema) -> "ArrowIpcFormat":
        return ArrowIpcFormat(schema, self.max_message_bytes, self.compression)

    def decode(self, values: Sequence[Optional[bytes]]) -> Decoded:
        if self.schema is None:
            raise ConfigError("Arrow format: the schema is not known yet (pass schema=)")
        schema = self.schema
        failures: List[DecodeFailure] = []
        batches: List[pa.RecordBatch] = []
        counts = np.zeros(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if not v:
                failures.append(DecodeFailure(i, EMPTY, None, "empty message"))
                continue
            try:
                reader = pa.ipc.open_stream(pa.py_buffer(v))
                got = reader.read_all()
            except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
                failures.append(DecodeFailure(i, MALFORMED, None, f"not an Arrow IPC stream: {exc}"))
                continue
            if not got.schema.equals(schema):
                if got.schema.names != schema.names or got.schema.types != schema.types:
                    failures.append(self._mismatch(i, got.schema))
                    continue
                # Same columns, other nullability or metadata: take it as the expected schema.
                missing = [f.name for f in schema if not f.nullable and got.column(f.name).null_count]
                if missing:
                    failures.append(DecodeFailure(i, MISSING_FIELD, missing[0],
                                                  "null values in a field that is non-nullable here"))
                    continue
                got = pa.Table.from_batches([pa.RecordBatch.from_arrays(b.columns, schema=schema)
                                             for b in got.to_batches()], schema)
            for b in got.to_batches():
                if b.num_rows:
                    batches.append(b)
                    counts[i] += b.num_rows
        if not batches:
            return Decoded(empty_batch(schema), failures, np.array([], dtype=np.int64))
        batch = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches, schema).combine_chunks().to_batches()[0]
        index = None
        if failures or len(values) != batch.num_rows:
            index = np.repeat(np.arange(len(values), dtype=np.int64), counts)
        return Decoded(batch, failures, index)

    def _mismatch(self, i: int, got: pa.Schema) -> DecodeFailure:
        for f in self.schema:
            j = got.get_field_index(f.name)
            if j < 0:
                return DecodeFailure(i, WRONG_TYPE, f.name, f"the message's schema has no field {f.name!r}")
            if got.field(j).type != f.type:
                return DecodeFailure(i, WRONG_TYPE, f.name,
                                     f"the message has {f.name!r} as {got.field(j).type}, expected {f.type}")
        extra = [n for n in got.names if n not in self.schema.names]
        return DecodeFailure(i, WRONG_TYPE, extra[0] if extra else None,
                             f"the message's schema {got.names} differs from {self.schema.names}")

    def encode(self, batch: pa.RecordBatch) -> List[bytes]:
        n = batch.num_rows
        if not n:
            return []
        per_row = max(batch.nbytes / n, 1.0)
        step = max(int(self.max_message_bytes * 0.9 / per_row), 1)
        out = []
        for start in range(0, n, step):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema, options=self._options) as w:
                w.write_batch(batch.slice(start, step))
            out.append(sink.getvalue().to_pybytes())
        return out

    def describe(self) -> str:
        return "arrow ipc" + (f" ({len(self.schema)} fields)" if self.schema is not None else "")
