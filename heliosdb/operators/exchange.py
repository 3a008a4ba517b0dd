"""The hash exchange: splits each batch by a stable hash of its key columns into ``n`` parts,
one per parallel subtask of the keyed operator downstream.  Watermarks go to every subtask."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import SchemaError
from ..kernels.partition import hash_int64, hash_strings, partition_order

_NO_NULLS = np.empty(0, np.uint8)


class HashPartitioner:
    """Routes rows to ``n`` partitions by the hash of ``keys`` (same key -> same partition)."""

    def __init__(self, schema: pa.Schema, keys: List[str], n: int, step: str):
        self.keys = keys
        self.n = n
        self.idx = []
        for k in keys:
            i = schema.get_field_index(k)
            if i < 0:
                raise SchemaError(f"step {step!r}: key_by column {k!r} is not in the input; it has {schema.names}")
            self.idx.append(i)

    def _fold(self, arr: pa.Array, h: np.ndarray) -> None:
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        valid = _NO_NULLS
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
        t = arr.type
        if pat.is_string(t) or pat.is_large_string(t):
            off_t = np.int32 if pat.is_string(t) else np.int64
            bufs = arr.buffers()
            offsets = np.frombuffer(bufs[1], dtype=off_t)[arr.offset: arr.offset + len(arr) + 1]
            data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
            hash_strings(offsets, data, valid, h)
            return
        if pat.is_floating(t):
            v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0
            v = np.where(np.isnan(v), np.nan, v).view(np.int64)
        else:
            if pat.is_timestamp(t) or pat.is_date(t) or pat.is_duration(t):
                arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
            if pat.is_boolean(arr.type):
                arr = arr.cast(pa.int8())
            if arr.null_count:
                arr = arr.fill_null(0)
            v = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
        hash_int64(v, valid, h)

    def partitions(self, batch: pa.RecordBatch) -> np.ndarray:
        """The partition of every row (used by tests and by split)."""
        h = np.zeros(batch.num_rows, np.uint64)
        for i in self.idx:
            self._fold(batch.column(i), h)
        return (h % np.uint64(self.n)).astype(np.int64)

    def split(self, batch: pa.RecordBatch) -> List[Tuple[int, pa.RecordBatch]]:
        """(partition, rows of that partition) for every non-empty partition, rows in order."""
        h = np.zeros(batch.num_rows, np.uint64)
        for i in self.idx:
            self._fold(batch.column(i), h)
        order, offsets = partition_order(h, self.n)
        taken = batch.take(pa.array(order))
        out = []
        for p in range(self.n):
            a, b = int(offsets[p]), int(offsets[p + 1])
            if b > a:
                out.append((p, taken.slice(a, b - a)))
        return out
