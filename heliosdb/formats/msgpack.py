"""MessagePack: one map per message.

Each message is unpacked with msgpack's C extension; the maps become Arrow columns a column at
a time (see :func:`~heliosdb.formats.records_to_batch`).  Timestamps travel as MessagePack's
timestamp extension type.

Examples
--------
>>> import pyarrow as pa
>>> fmt = MsgpackFormat(pa.schema([("k", pa.string()), ("n", pa.int64())]))
>>> payloads = fmt.encode(pa.record_batch({"k": ["a", "b"], "n": [1, 2]}))
>>> fmt.decode(payloads + [b"\\xc1"]).batch.to_pydict()
{'k': ['a', 'b'], 'n': [1, 2]}
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import pyarrow as pa

from .._optional import require
from ..errors import ConfigError
from . import (MALFORMED, Decoded, Format, Reject, decode_each, extra_failure, extra_option,
               python_columns)
from .values import short


class MsgpackFormat(Format):
    """MessagePack maps with the fields of ``schema`` (absent ones null).

    A key the schema lacks is ignored (``extra="ignore"``, the default: the schema selects
    the fields a job reads) or fails the message as ``extra_field`` (``extra="error"``).
    Values are kept exactly or the message fails as ``wrong_type`` naming the field (2.7 is
    not an int64; see :mod:`heliosdb.formats.values` for the rules).
    """

    name = "msgpack"

    def __init__(self, schema: pa.Schema, extra: str = "ignore"):
        if not isinstance(schema, pa.Schema):
            raise ConfigError(f"MessagePack format: schema must be a pyarrow.Schema, got {schema!r}")
        require("msgpack", "kafka", "the MessagePack format")

        self.schema = schema
        self.extra = extra_option(extra, "MessagePack")

    def decode(self, values: Sequence[Optional[bytes]]) -> Decoded:
        import msgpack

        unpackb = msgpack.unpackb
        check_extra = self.extra == "error"
        names = self.schema.names

        def one(v: bytes) -> dict:
            try:
                rec = unpackb(v, raw=False, timestamp=3, strict_map_key=False)
            except Exception as exc:  # noqa: BLE001 - msgpack raises several types
                raise Reject(MALFORMED, f"not valid MessagePack: {type(exc).__name__} {exc}".rstrip()) from None
            if not isinstance(rec, dict):
                raise Reject(MALFORMED, f"a MessagePack {type(rec).__name__}, not a map: {short(rec)}")
            if check_extra and (bad := extra_failure(names, rec)) is not None:
                raise bad
            return rec

        return decode_each(values, one, self.schema)

    def encode(self, batch: pa.RecordBatch) -> List[bytes]:
        import msgpack

        packer = msgpack.Packer(datetime=True)
        names = batch.schema.names
        cols = python_columns(batch)
        pack = packer.pack
        return [pack(dict(zip(names, row))) for row in zip(*cols)]

    def describe(self) -> str:
        return f"msgpack ({len(self.schema)} fields)"
