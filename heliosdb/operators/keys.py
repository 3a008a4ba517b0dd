"""Key columns -> int64 codes for the hash table, and back.

Integers, booleans, timestamps and dates are their own int64 values; floats are their bit
pattern (with -0.0 folded into 0.0 and every NaN into one NaN); strings get dense ids from a
per-operator Cython string table (each batch's distinct strings, found by Arrow's
dictionary_encode, are looked up in C; no Python object per string).  Nulls are code 0 plus a bit in a null word, so a null key is a group
of its own, distinct from 0 or "".
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from ..errors import SchemaError
from ..kernels._hashagg import StringTable


def string_buffers(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of an Arrow string / large_string array as numpy views (no copy)."""
    bufs = arr.buffers()
    off_t = np.int32 if pat.is_string(arr.type) else np.int64
    offsets = np.frombuffer(bufs[1], dtype=off_t)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def int64_codes(arr: pa.Array) -> np.ndarray:
    """A non-string key column as int64 codes: integers, booleans and times as themselves,
    floats as their bit pattern (-0.0 folded into 0.0, every NaN into one NaN); nulls as 0."""
    t = arr.type
    if pat.is_floating(t):
        v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0
        v = np.where(np.isnan(v), np.nan, v)
        return np.ascontiguousarray(v).view(np.int64)
    if pat.is_timestamp(t) or pat.is_date(t) or pat.is_duration(t):
        arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
    if pat.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    if arr.null_count:
        arr = arr.fill_null(0)
    return np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _kind(t: pa.DataType) -> Optional[str]:
    if pat.is_integer(t) or pat.is_boolean(t):
        return "int"
    if pat.is_timestamp(t) or pat.is_date(t) or pat.is_duration(t):
        return "time"
    if pat.is_floating(t):
        return "float"
    if pat.is_string(t) or pat.is_large_string(t):
        return "str"
    return None


class KeyEncoder:
    """Encodes the key columns of batches of one schema; decodes codes back to Arrow arrays."""

    def __init__(self, schema: pa.Schema, key_columns: List[str], step: str):
        self.names = list(key_columns)
        self.types: List[pa.DataType] = []
        self.kinds: List[str] = []
        for name in self.names:
            idx = schema.get_field_index(name)
            if idx < 0:
                raise SchemaError(
                    f"step {step!r}: key_by column {name!r} is not in the input; it has {schema.names}"
                )
            t = schema.field(idx).type
            k = _kind(t)
            if k is None:
                raise SchemaError(
                    f"step {step!r}: key_by column {name!r} has type {t}; keys must be integers, "
                    "booleans, floats, strings, dates or timestamps"
                )
            self.types.append(t)
            self.kinds.append(k)
        self._tables: List[Optional[StringTable]] = [StringTable() if k == "str" else None for k in self.kinds]
        self._decoded: List[Optional[pa.Array]] = [None] * len(self.kinds)   # values, cached

    @property
    def width(self) -> int:
        return len(self.names)

    def encode(self, batch: pa.RecordBatch) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
        """int64 codes per key column, and the null word (None when no key is null)."""
        codes: List[np.ndarray] = []
        nullword: Optional[np.ndarray] = None
        for j, name in enumerate(self.names):
            arr = batch.column(batch.schema.get_field_index(name))
            if arr.null_count:
                isnull = arr.is_null().to_numpy(zero_copy_only=False)
                if nullword is None:
                    nullword = np.zeros(len(arr), dtype=np.int64)
                nullword |= isnull.astype(np.int64) << j
            codes.append(self._encode_column(j, arr))
        return codes, nullword

    def _encode_column(self, j: int, arr: pa.Array) -> np.ndarray:
        kind = self.kinds[j]
        if kind == "str":
            enc = pc.dictionary_encode(arr)
            d = enc.dictionary
            ids = np.empty(len(d), dtype=np.int64)
            if len(d):
                offsets, data = string_buffers(d)
                self._tables[j].encode(offsets.astype(np.int64), data, ids)
            else:
                return np.zeros(len(arr), dtype=np.int64)
            codes = ids[enc.indices.fill_null(0).to_numpy(zero_copy_only=False)]
            if arr.null_count:
                # A null's code must not depend on the batch (the null word marks it as null).
                codes[arr.is_null().to_numpy(zero_copy_only=False)] = 0
            return codes
        return int64_codes(arr)

    def decode(self, codes: np.ndarray, nullword: Optional[np.ndarray]) -> List[pa.Array]:
        """Arrow arrays of the key columns from an int64[rows, width] code matrix."""
        out = []
        for j, t in enumerate(self.types):
            c = np.ascontiguousarray(codes[:, j])
            mask = None if nullword is None else ((nullword >> j) & 1).astype(bool)
            kind = self.kinds[j]
            if kind == "str":
                values = self._string_values(j)
                arr = values.take(pa.array(c)) if len(values) else pa.nulls(len(c), pa.string())
                if mask is not None:
                    arr = pc.if_else(pa.array(mask), pa.nulls(len(c), pa.string()), arr)
                out.append(arr.cast(t))
            elif kind == "float":
                out.append(pa.array(c.view(np.float64), mask=mask).cast(t))
            elif kind == "time":
                base = pa.int64() if t.bit_width == 64 else pa.int32()
                out.append(pa.array(c.astype(base.to_pandas_dtype()), type=base, mask=mask).view(t))
            else:
                out.append(pa.array(c, type=pa.int64(), mask=mask).cast(t))
        return out

    def _string_values(self, j: int) -> pa.Array:
        """Every string key column ``j`` has seen, in id order (rebuilt only after growth)."""
        table = self._tables[j]
        cached = self._decoded[j]
        if cached is None or len(cached) != len(table):
            offsets, data = table.values()
            cached = pa.Array.from_buffers(pa.large_string(), len(table),
                                           [None, pa.py_buffer(offsets), pa.py_buffer(data)])
            cached = self._decoded[j] = cached.cast(pa.string())
        return cached

    def frozen(self) -> "KeyEncoder":
        """A copy that decodes with the strings known now, safe to use from another thread
        while this one keeps encoding (a snapshot decodes its keys on the writer thread)."""
        import copy

        out = copy.copy(self)
        out._decoded = [self._string_values(j) if k == "str" else None for j, k in enumerate(self.kinds)]
        out._tables = [None] * len(self.kinds)
        out._string_values = lambda j: out._decoded[j]      # type: ignore[method-assign]
        return out

    def nbytes(self) -> int:
        """Bytes held by the string tables."""
        return sum(t.nbytes for t in self._tables if t is not None)
