"""Join keys: the key columns of both sides as dense key ids that agree between the sides.

Each key column is coded as int64 the way the keyed operators code theirs
(``aggregates.codecs``: integers and times as themselves, floats by bit pattern, strings by a
Cython string table, here one table shared by both sides so equal strings get equal codes), and
a ``GroupTable`` gives every key tuple a dense id.  A row with a null in any key column gets id
``-1``, which never matches (SQL); sessions, which group null keys like any other, ask for ids
for them too (``with_nulls``) and learn which ids hold a null (:meth:`KeyIndex.null_ids`).

The sides' key types must agree: integers of any width with integers, floats with floats,
strings with strings (``string`` and ``large_string``), timestamps of the same unit, otherwise
equal types.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ...aggregates.codecs import int64_codes, string_codes, value_kind
from ...errors import SchemaError
from ...kernels._hashagg import GroupTable, StringTable


def _compatible(lt: pa.DataType, rt: pa.DataType) -> bool:
    kind = value_kind(lt)
    if kind is None or kind != value_kind(rt):
        return False
    if kind == "int":
        return pat.is_boolean(lt) == pat.is_boolean(rt)
    if kind == "time":
        if pat.is_timestamp(lt) and pat.is_timestamp(rt):
            return lt.unit == rt.unit
        return lt == rt
    return True


_INTS = {(8, True): pa.int8(), (16, True): pa.int16(), (32, True): pa.int32(), (64, True): pa.int64(),
         (8, False): pa.uint8(), (16, False): pa.uint16(), (32, False): pa.uint32(), (64, False): pa.uint64()}


def common_type(lt: pa.DataType, rt: pa.DataType) -> pa.DataType:
    """The type both sides' values of a key column fit in (comparable types, see
    :func:`_compatible`): the wider integer or float, ``large_string`` if either is, else the
    left type.

    >>> common_type(pa.int32(), pa.int64()), common_type(pa.uint8(), pa.int16()), common_type(pa.string(), pa.large_string())
    (DataType(int64), DataType(int64), DataType(large_string))
    """
    if lt == rt:
        return lt
    if pat.is_integer(lt) and pat.is_integer(rt):
        signed_l, signed_r = pat.is_signed_integer(lt), pat.is_signed_integer(rt)
        if signed_l != signed_r:
            return pa.int64()
        return _INTS[(max(lt.bit_width, rt.bit_width), signed_l)]
    if pat.is_floating(lt) and pat.is_floating(rt):
        return pa.float64() if max(lt.bit_width, rt.bit_width) == 64 else lt
    if pat.is_large_string(rt):
        return rt
    return lt


class JoinKeys:
    """The key columns of both sides (validated to be comparable).

    Examples
    --------
    >>> keys = JoinKeys(pa.schema([("a", pa.int32())]), pa.schema([("b", pa.string())]), ["a"], ["b"], "j")
    Traceback (most recent call last):
    ...
    heliosdb.errors.SchemaError: step 'j': join key left.a (int32) and right.b (string) cannot be compared; cast one of them (e.g. with_columns(b=col('b').cast(...)))
    """

    def __init__(self, left: pa.Schema, right: pa.Schema, left_on: Sequence[str], right_on: Sequence[str],
                 step: str):
        self.names = (list(left_on), list(right_on))
        self.index: Tuple[List[int], List[int]] = ([], [])
        self.kinds: List[str] = []
        self.types: List[pa.DataType] = []          # both sides' values fit (common_type)
        for a, b in zip(left_on, right_on):
            ia, ib = left.get_field_index(a), right.get_field_index(b)
            if ia < 0 or ib < 0:
                side, name, schema = ("left", a, left) if ia < 0 else ("right", b, right)
                raise SchemaError(f"step {step!r}: join key {name!r} is not in the {side} input; it has {schema.names}")
            lt, rt = left.field(ia).type, right.field(ib).type
            if not _compatible(lt, rt):
                raise SchemaError(
                    f"step {step!r}: join key left.{a} ({lt}) and right.{b} ({rt}) cannot be compared; cast "
                    f"one of them (e.g. with_columns({b}=col({b!r}).cast(...)))")
            self.index[0].append(ia)
            self.index[1].append(ib)
            self.kinds.append(value_kind(lt))
            self.types.append(common_type(lt, rt))

    @property
    def width(self) -> int:
        return len(self.kinds)

    def arrays(self, side: int, batch) -> List[pa.Array]:
        """The key columns of a batch (or table) of ``side``."""
        out = []
        for i in self.index[side]:
            col = batch.column(i)
            out.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        return out

    def common(self, side: int, batch) -> List[pa.Array]:
        """The key columns of ``side``'s rows in the type both sides fit (for snapshots: a
        selector keyed by the left names then hashes both sides' rows as the exchange
        routes them)."""
        return [c.cast(t) if c.type != t else c for c, t in zip(self.arrays(side, batch), self.types)]


class KeyCodes:
    """Key tuples of both sides -> int64 code columns that agree between the sides (one string
    table per string key column, shared by both sides).

    Examples
    --------
    >>> keys = JoinKeys(pa.schema([("s", pa.string())]), pa.schema([("t", pa.large_string())]), ["s"], ["t"], "j")
    >>> codes = KeyCodes(keys)
    >>> codes.codes(0, pa.record_batch({"s": ["x", None]}))[0][0].tolist()
    [0, 0]
    >>> cols, null = codes.codes(1, pa.record_batch({"t": pa.array(["y", "x"], pa.large_string())}))
    >>> cols[0].tolist(), null
    ([1, 0], None)
    """

    with_nulls = False

    def __init__(self, keys: JoinKeys):
        self.keys = keys
        self._strings: List[Optional[StringTable]] = [StringTable() if k == "str" else None for k in keys.kinds]

    def codes(self, side: int, batch) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
        """int64 codes of the key columns (then the null word, ``with_nulls``), and the rows
        with a null key (None: none)."""
        codes: List[np.ndarray] = []
        null: Optional[np.ndarray] = None
        word: Optional[np.ndarray] = None
        for j, arr in enumerate(self.keys.arrays(side, batch)):
            table = self._strings[j]
            c = string_codes(table, arr) if table is not None else int64_codes(arr)
            codes.append(np.ascontiguousarray(c, np.int64))
            if arr.null_count:
                isnull = arr.is_null().to_numpy(zero_copy_only=False)
                null = isnull if null is None else null | isnull
                if self.with_nulls:
                    bits = isnull.astype(np.int64) << j
                    word = bits if word is None else word | bits
        if self.with_nulls:
            codes.append(word if word is not None else np.zeros(batch.num_rows, np.int64))
        return codes, null


class KeyIndex(KeyCodes):
    """Key tuples of both sides -> dense ids (see the module docstring).

    Examples
    --------
    >>> keys = JoinKeys(pa.schema([("a", pa.int64()), ("s", pa.string())]),
    ...                 pa.schema([("b", pa.int32()), ("t", pa.large_string())]), ["a", "s"], ["b", "t"], "j")
    >>> index = KeyIndex(keys)
    >>> index.ids(0, pa.record_batch({"a": [1, 1, None], "s": ["x", "y", "x"]})).tolist()
    [0, 1, -1]
    >>> right = pa.record_batch({"b": pa.array([1, 2], pa.int32()), "t": pa.array(["y", "x"], pa.large_string())})
    >>> index.ids(1, right).tolist(), index.n_keys
    ([1, 2], 3)
    """

    def __init__(self, keys: JoinKeys, with_nulls: bool = False, capacity: int = 1024):
        super().__init__(keys)
        self.with_nulls = with_nulls
        self.table = GroupTable(keys.width + (1 if with_nulls else 0), capacity)

    @property
    def n_keys(self) -> int:
        return self.table.n_groups

    def ids(self, side: int, batch) -> np.ndarray:
        """The key id of every row of a batch of ``side`` (new keys get new ids); ``-1`` for
        a null key unless ``with_nulls``."""
        codes, null = self.codes(side, batch)
        kid = np.empty(batch.num_rows, np.int64)
        if null is not None and not self.with_nulls:
            ok = ~null
            part = np.empty(int(ok.sum()), np.int64)
            if len(part):
                self.table.insert([np.ascontiguousarray(c[ok]) for c in codes], part)
            kid[ok] = part
            kid[null] = -1
        elif batch.num_rows:
            self.table.insert(codes, kid)
        return kid

    def null_ids(self) -> np.ndarray:
        """Per key id: whether its tuple holds a null (only ``with_nulls`` hands such ids out)."""
        if not self.with_nulls:
            return np.zeros(self.n_keys, bool)
        return self.table.keys_view()[:, -1] != 0

    def nbytes(self) -> int:
        return self.table.nbytes + sum(t.nbytes for t in self._strings if t is not None)
