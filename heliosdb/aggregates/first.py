"""``first(col)``: the first non-null value in arrival order, any column type.

:class:`Pick` keeps per group the arrival number (``seq``) and code of the value picked so
far; ``last`` uses it too.  Snapshot columns: ``{col}.first_seq`` and ``{col}.first`` (the
value itself, decoded).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pyarrow as pa

from ..kernels import _accum
from .base import AggSpec, GroupsAccumulator, Inputs, Selection
from .codecs import CodedColumn, ValueCodec
from .columns import grow, load_column


class Pick(CodedColumn):
    """The first (``which="first"``) or last value of one column by arrival number.

    >>> acc = Pick(pa.schema([("s", pa.string())]), "s", "last", "agg").empty(1)
    >>> acc.update(np.zeros(3, np.int64), acc.prepare(pa.record_batch({"s": ["a", "b", None]})),
    ...            np.arange(3, dtype=np.int64))
    >>> acc.evaluate(Selection(1)).to_pylist()
    ['b']
    """

    needs_seq = True

    def __init__(self, schema: pa.Schema, column: str, which: str, step: str):
        self.column, self.which = column, which
        self.index = schema.get_field_index(column)
        self.order = 30 if which == "first" else 40
        self.codec = ValueCodec(schema.field(column).type, True, f"{which}({column!r})", step)
        super().__init__((which, column), f"{column}.{which}_", {"seq": (np.int64, -1), "val": (np.int64, 0)})

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        codes, ok = inputs
        kernel = _accum.update_first if self.which == "first" else _accum.update_last
        kernel(gids, seqs, codes, ok, self.a["seq"], self.a["val"])

    def merge(self, src: GroupsAccumulator, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        a, b = self.a, src.a
        _accum.merge_pick(src_ids, dst_ids, b["seq"], b["val"], a["seq"], a["val"], self.which == "first")

    def shift_seqs(self, base: int, n: int) -> None:
        seq = self.a["seq"][:n]
        seq[seq >= 0] += base

    def evaluate(self, sel: Selection) -> pa.Array:
        seq = sel(self.a["seq"])
        return self.codec.decode(np.ascontiguousarray(sel(self.a["val"])), seq >= 0)

    def state(self, sel: Selection):
        seq = sel(self.a["seq"])
        name = f"{self.column}.{self.which}"
        values = self.codec.decode(np.ascontiguousarray(sel(self.a["val"])), seq >= 0)
        return {f"{name}_seq": pa.array(seq), name: values}, {}

    def restore(self, table: pa.Table, extra: Dict[str, pa.Table], capacity: int, owned: bool) -> None:
        name = f"{self.column}.{self.which}"
        self.a["seq"] = load_column(table, f"{name}_seq", np.int64, -1, capacity, owned)
        self.capacity = len(self.a["seq"])
        self.a["val"] = val = grow(self.a["val"], self.capacity, 0)
        val[: table.num_rows] = self.codec.encode(table.column(name).combine_chunks())


class First(AggSpec):
    """See :func:`first`."""

    kind = "first"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        return self.input_type(schema, step)

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return Pick(schema, self.column, "first", step)


def first(column: str) -> First:
    """The first non-null value in arrival order (per key, arrival order is kept across
    parallel subtasks); any column type.

    >>> first("category")
    first('category')
    """
    return First(column)
