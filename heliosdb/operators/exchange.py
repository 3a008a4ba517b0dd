"""The hash exchange: splits each batch by a stable hash of its key columns into ``n`` parts,
one per parallel subtask of the keyed operator downstream.  Watermarks go to every subtask."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import SchemaError
from ..kernels.partition import hash_int64, hash_strings
from .keys import int64_codes, string_buffers

_NO_NULLS = np.empty(0, np.uint8)


class HashPartitioner:
    """Routes rows to ``n`` partitions by the hash of ``keys`` (same key -> same partition).
    ``types``: the type each key is cast to before hashing (a join's two inputs hash keys of
    compatible types, int32 and int64 or int and float, as one type); None: their own."""

    def __init__(self, schema: pa.Schema, keys: List[str], n: int, step: str,
                 types: Optional[Sequence[pa.DataType]] = None):
        self.keys = keys
        self.n = n
        self.idx = []
        self.casts: List[Optional[pa.DataType]] = []
        for j, k in enumerate(keys):
            i = schema.get_field_index(k)
            if i < 0:
                raise SchemaError(f"step {step!r}: key_by column {k!r} is not in the input; it has {schema.names}")
            self.idx.append(i)
            t = None if not types else types[j]
            self.casts.append(None if t is None or t == schema.field(i).type else t)

    def _fold(self, arr: pa.Array, h: np.ndarray, cast: Optional[pa.DataType] = None) -> None:
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if cast is not None:
            arr = arr.cast(cast)
        valid = _NO_NULLS
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
        if pat.is_string(arr.type) or pat.is_large_string(arr.type):
            offsets, data = string_buffers(arr)
            hash_strings(offsets, data, valid, h)
        else:
            hash_int64(int64_codes(arr), valid, h)

    def partitions(self, batch: pa.RecordBatch) -> np.ndarray:
        """The partition of every row (used by tests and by split)."""
        h = np.zeros(batch.num_rows, np.uint64)
        for i, cast in zip(self.idx, self.casts):
            self._fold(batch.column(i), h, cast)
        return (h % np.uint64(self.n)).astype(np.int64)

    def assign(self, batch: pa.RecordBatch) -> Tuple[np.ndarray, np.ndarray]:
        """(partition of every row as uint8/int64, rows per partition): the producer's share of
        the exchange; each subtask then picks its rows itself (``Partitioned.resolve``), so
        the gather runs in parallel on the subtasks' threads, not on the producer's."""
        h = np.zeros(batch.num_rows, np.uint64)
        for i, cast in zip(self.idx, self.casts):
            self._fold(batch.column(i), h, cast)
        parts = (h % np.uint64(self.n)).astype(np.uint8 if self.n < 256 else np.int64)
        return parts, np.bincount(parts, minlength=self.n)


class Partitioned:
    """A batch on its way to subtask ``index`` of a hash exchange, with every row's partition:
    the subtask's thread takes its rows out (in order) with ``resolve()``."""

    __slots__ = ("batch", "parts", "index")

    def __init__(self, batch: pa.RecordBatch, parts: np.ndarray, index: int):
        self.batch, self.parts, self.index = batch, parts, index

    def resolve(self) -> pa.RecordBatch:
        """This subtask's rows, in order: one ``take`` of their positions (measured 1.3 to 3x
        faster than ``filter`` with a mask, on 64K-row batches split in two); the batch
        itself when they are all its rows."""
        idx = np.flatnonzero(self.parts == self.index)
        if len(idx) == self.batch.num_rows:
            return self.batch
        return self.batch.take(pa.array(idx))
