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

from ..aggregates.codecs import decode_codes, int64_codes, string_buffers, string_codes, table_strings
from ..aggregates.codecs import value_kind as _kind
from ..errors import SchemaError
from ..kernels._hashagg import StringTable

__all__ = ["KeyEncoder", "int64_codes", "string_buffers"]


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
        if self.kinds[j] == "str":
            return string_codes(self._tables[j], arr)
        return int64_codes(arr)

    def decode(self, codes: np.ndarray, nullword: Optional[np.ndarray]) -> List[pa.Array]:
        """Arrow arrays of the key columns from an int64[rows, width] code matrix."""
        out = []
        for j, t in enumerate(self.types):
            c = np.ascontiguousarray(codes[:, j])
            mask = None if nullword is None else ((nullword >> j) & 1).astype(bool)
            strings = self._string_values(j) if self.kinds[j] == "str" else None
            out.append(decode_codes(self.kinds[j], t, c, mask, strings))
        return out

    def _string_values(self, j: int) -> pa.Array:
        """Every string key column ``j`` has seen, in id order (rebuilt only after growth)."""
        table = self._tables[j]
        cached = self._decoded[j]
        if cached is None or len(cached) != len(table):
            cached = self._decoded[j] = table_strings(table)
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
