"""Column values <-> int64 codes, for hash tables (keys) and for accumulators that keep values
of any type (``first``, ``last``, ``count_distinct``).

Integers, booleans, timestamps and dates are their own int64 values; floats are their bit
pattern (with -0.0 folded into 0.0 and every NaN into one NaN, unless the codec is *exact*);
strings get dense ids from a Cython string table (each batch's distinct strings, found by
Arrow's ``dictionary_encode``, are looked up in C; no Python object per string).
``operators/keys.py`` builds key tuples from the same functions.
"""
from __future__ import annotations

import copy

from typing import Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from ..errors import SchemaError
from ..kernels._hashagg import StringTable
from .base import GroupsAccumulator, Inputs
from .columns import numbers, validity


def string_buffers(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of an Arrow string / large_string array as numpy views (no copy).

    >>> string_buffers(pa.array(["ab", "c"]))
    (array([0, 2, 3], dtype=int32), array([97, 98, 99], dtype=uint8))
    """
    bufs = arr.buffers()
    off_t = np.int32 if pat.is_string(arr.type) else np.int64
    offsets = np.frombuffer(bufs[1], dtype=off_t)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def int64_codes(arr: pa.Array) -> np.ndarray:
    """A non-string column as int64 codes: integers, booleans and times as themselves,
    floats as their bit pattern (-0.0 folded into 0.0, every NaN into one NaN); nulls as 0.

    >>> int64_codes(pa.array([3, None, -1]))
    array([ 3,  0, -1])
    """
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


def value_kind(t: pa.DataType) -> Optional[str]:
    """How a column type is coded: ``"int"``, ``"time"``, ``"float"``, ``"str"`` (None: it
    cannot be).

    >>> value_kind(pa.timestamp("ms")), value_kind(pa.list_(pa.int64()))
    ('time', None)
    """
    if pat.is_integer(t) or pat.is_boolean(t):
        return "int"
    if pat.is_timestamp(t) or pat.is_date(t) or pat.is_duration(t):
        return "time"
    if pat.is_floating(t):
        return "float"
    if pat.is_string(t) or pat.is_large_string(t):
        return "str"
    return None


def string_codes(table: StringTable, arr: pa.Array) -> np.ndarray:
    """Dense ids of a string column's values in ``table`` (added as they come); nulls as 0."""
    enc = pc.dictionary_encode(arr)
    d = enc.dictionary
    if not len(d):
        return np.zeros(len(arr), dtype=np.int64)
    ids = np.empty(len(d), dtype=np.int64)
    offsets, data = string_buffers(d)
    table.encode(offsets.astype(np.int64), data, ids)
    codes = ids[enc.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    if arr.null_count:
        # A null's code must not depend on the batch (a null word or validity marks it).
        codes[arr.is_null().to_numpy(zero_copy_only=False)] = 0
    return codes


def table_strings(table: StringTable) -> pa.Array:
    """Every string of ``table``, in id order."""
    offsets, data = table.values()
    values = pa.Array.from_buffers(pa.large_string(), len(table),
                                   [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return values.cast(pa.string())


def decode_codes(kind: str, t: pa.DataType, codes: np.ndarray, mask: Optional[np.ndarray],
                 strings: Optional[pa.Array] = None) -> pa.Array:
    """Codes of ``kind`` back to an Arrow array of type ``t`` (``mask``: True where null;
    ``strings``: the string table's values, for ``"str"``)."""
    if kind == "str":
        arr = strings.take(pa.array(codes)) if len(strings) else pa.nulls(len(codes), pa.string())
        if mask is not None:
            arr = pc.if_else(pa.array(mask), pa.nulls(len(codes), pa.string()), arr)
        return arr.cast(t)
    if kind == "float":
        return pa.array(codes.view(np.float64), mask=mask).cast(t)
    if kind == "time":
        base = pa.int64() if t.bit_width == 64 else pa.int32()
        return pa.array(codes.astype(base.to_pandas_dtype()), type=base, mask=mask).view(t)
    return pa.array(codes, type=pa.int64(), mask=mask).cast(t)


class ValueCodec:
    """The values of one column <-> int64 codes, for the accumulators of one operator (its
    panes, windows and sessions share it, so their codes agree).

    ``exact`` keeps float bits as they are (``first``/``last`` give back the very value);
    otherwise -0.0 and 0.0, and all NaNs, share a code (``count_distinct``).

    Examples
    --------
    >>> c = ValueCodec(pa.string(), exact=False, what="count_distinct('s')", step="agg")
    >>> codes = c.encode(pa.array(["b", "a", "b", None]))
    >>> codes
    array([0, 1, 0, 0])
    >>> c.decode(codes, np.array([True, True, True, False])).to_pylist()
    ['b', 'a', 'b', None]
    """

    def __init__(self, type: pa.DataType, exact: bool, what: str, step: str):
        self.type = type
        self.kind = value_kind(type)
        if self.kind is None:
            raise SchemaError(
                f"step {step!r}: {what} cannot take a column of type {type}; it takes integers, "
                "booleans, floats, strings, dates or timestamps (cast the column first)"
            )
        self.exact = exact and self.kind == "float"
        self._table: Optional[StringTable] = StringTable() if self.kind == "str" else None
        self._strings: Optional[pa.Array] = None      # the table's values, cached

    @property
    def portable(self) -> bool:
        """Whether codes mean the same in every instance (no per-instance string table)."""
        return self.kind != "str"

    def encode(self, arr: pa.Array) -> np.ndarray:
        """int64 codes of ``arr``'s values (nulls: 0)."""
        if self.exact:
            return np.ascontiguousarray(numbers(arr.cast(pa.float64()), True)).view(np.int64)
        if self._table is not None:
            return string_codes(self._table, arr)
        return int64_codes(arr)

    def decode(self, codes: np.ndarray, valid: np.ndarray) -> pa.Array:
        """The values of ``codes`` (null where ``valid`` is False)."""
        return decode_codes(self.kind, self.type, np.ascontiguousarray(codes), ~valid, self._values())

    def _values(self) -> Optional[pa.Array]:
        if self._table is None:
            return self._strings
        if self._strings is None or len(self._strings) != len(self._table):
            self._strings = table_strings(self._table)
        return self._strings

    def frozen(self) -> "ValueCodec":
        """A copy that decodes with the values known now, safe to use on another thread
        while this one keeps encoding (snapshots decode on the checkpoint writer's thread)."""
        import copy

        out = copy.copy(self)
        out._strings = self._values()
        out._table = None
        return out

    def nbytes(self) -> int:
        """Bytes held by the string table."""
        return self._table.nbytes if self._table is not None else 0


class CodedColumn(GroupsAccumulator):
    """An accumulator over one column's values as int64 codes (``self.codec``, a
    :class:`ValueCodec`, and ``self.index``, the column's position, set by the subclass):
    ``prepare`` encodes the column, and the codec decides portability and copying."""

    codec: ValueCodec
    index: int

    @property
    def portable(self) -> bool:
        return self.codec.portable

    def frozen(self) -> GroupsAccumulator:
        out = copy.copy(self)
        out.codec = self.codec.frozen()
        return out

    def config_bytes(self) -> int:
        return self.codec.nbytes()

    def prepare(self, batch: pa.RecordBatch) -> Inputs:
        arr = batch.column(self.index)
        return self.codec.encode(arr), validity(arr)
