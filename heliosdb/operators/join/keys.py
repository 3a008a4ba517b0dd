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
        self.types: List[pa.DataType] = []          # the left side's types
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
            self.types.append(lt)

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

    def as_left(self, side: int, batch) -> List[pa.Array]:
        """The key columns of ``side``'s rows with the left key's types (for snapshots: a
        selector keyed by the left names then picks both sides' rows alike)."""
        cols = self.arrays(side, batch)
        return cols if side == 0 else [c.cast(t) for c, t in zip(cols, self.types)]


class KeyIndex:
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
        self.keys = keys
        self.with_nulls = with_nulls
        self._strings: List[Optional[StringTable]] = [StringTable() if k == "str" else None for k in keys.kinds]
        self.table = GroupTable(keys.width + (1 if with_nulls else 0), capacity)

    @property
    def n_keys(self) -> int:
        return self.table.n_groups

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
