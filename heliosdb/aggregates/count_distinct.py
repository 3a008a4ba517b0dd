"""``count_distinct(col)``: the exact number of distinct non-null values per group.

:class:`DistinctValues` keeps each group's values as (group, code) pairs in a
:class:`~heliosdb.aggregates.valuesets.ValueSet`, and the count per group.  Snapshot: the table
``distinct.{col}`` (``row``, ``value``: decoded), one row per group and value.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pyarrow as pa

from ..kernels import _hashagg
from .base import AggSpec, GroupsAccumulator, Inputs, Selection
from .codecs import CodedColumn, ValueCodec
from .columns import grow
from .valuesets import keep_valid


class DistinctValues(CodedColumn):
    """Each group's distinct values of one column.

    >>> acc = DistinctValues(pa.schema([("f", pa.float64())]), "f", "agg").empty(1)
    >>> acc.update(np.zeros(4, np.int64), acc.prepare(pa.record_batch({"f": [0.0, -0.0, None, 1.0]})), None)
    >>> acc.evaluate(Selection(1)).to_pylist()
    [2]
    """

    order = 50

    def __init__(self, schema: pa.Schema, column: str, step: str):
        self.column = column
        self.index = schema.get_field_index(column)
        self.codec = ValueCodec(schema.field(column).type, False, f"count_distinct({column!r})", step)
        super().__init__(("distinct", column), f"{column}.", {"distinct": (np.int64, 0)}, sets=1)

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        codes, ok = inputs
        g, k = keep_valid(gids, codes, ok)
        _hashagg.count_rows(self.sets[0].add(g, k), self.a["distinct"])

    def merge(self, src: GroupsAccumulator, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        remap = np.full(src.capacity, -1, np.int64)
        remap[src_ids] = dst_ids
        g, k, _ = src.sets[0].items()
        g = remap[g]
        keep = g >= 0
        _hashagg.count_rows(self.sets[0].add(g[keep], k[keep]), self.a["distinct"])

    def evaluate(self, sel: Selection) -> pa.Array:
        return pa.array(sel(self.a["distinct"]), pa.int64())

    def state(self, sel: Selection):
        g, k, _ = self.sets[0].items()
        row_of = sel.row_of()
        keep = row_of[g] >= 0
        codes = np.ascontiguousarray(k[keep])
        values = self.codec.decode(codes, np.ones(len(codes), bool))
        return {}, {f"distinct.{self.column}": pa.table({"row": pa.array(row_of[g[keep]]), "value": values})}

    def restore(self, table: pa.Table, extra: Dict[str, pa.Table], capacity: int, owned: bool) -> None:
        self.capacity = max(capacity, table.num_rows)
        self.a["distinct"] = per = grow(self.a["distinct"], self.capacity, 0)
        t = extra.get(f"distinct.{self.column}")
        if t is not None and t.num_rows:
            rows = np.ascontiguousarray(t.column("row").to_numpy())
            codes = self.codec.encode(t.column("value").combine_chunks())
            _hashagg.count_rows(self.sets[0].add(rows, codes), per)


class CountDistinct(AggSpec):
    """See :func:`count_distinct`."""

    kind = "count_distinct"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        self.input_type(schema, step)
        return pa.int64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return DistinctValues(schema, self.column, step)


def count_distinct(column: str) -> CountDistinct:
    """Exact number of distinct non-null values (floats: -0.0 equals 0.0, NaN equals NaN).

    >>> count_distinct("category")
    count_distinct('category')
    """
    return CountDistinct(column)
