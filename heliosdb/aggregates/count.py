"""``count()``: rows per group; ``count(col)``: rows where ``col`` is not null.

``count()`` reads :class:`RowCount` (snapshot column ``rows``), which window operators also
keep when they need to know which groups hold anything; ``count(col)`` reads the column's
:class:`~heliosdb.aggregates.numeric.NumericStats`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ..kernels import _accum, _hashagg
from .base import AggSpec, GroupsAccumulator, Inputs, Selection
from .numeric import NumericStats


class RowCount(GroupsAccumulator):
    """Rows per group.

    >>> acc = RowCount().empty(3)
    >>> acc.update(np.array([2, 0, 2]), (), None)
    >>> acc.evaluate(Selection(3)).to_pylist()
    [1, 0, 2]
    """

    order = 0

    def __init__(self):
        super().__init__(("rows",), "", {"rows": (np.int64, 0)})

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        _hashagg.count_rows(gids, self.a["rows"])

    def merge(self, src: GroupsAccumulator, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        _accum.merge_add_i64(src_ids, dst_ids, src.a["rows"], self.a["rows"])

    def merge_aligned(self, src: GroupsAccumulator, m: int) -> None:
        self.a["rows"][:m] += src.a["rows"][:m]

    def evaluate(self, sel: Selection) -> pa.Array:
        return pa.array(sel(self.a["rows"]), pa.int64())


class Count(AggSpec):
    """See :func:`count`."""

    kind = "count"
    needs_column = False

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        if self.column is not None:
            self.input_type(schema, step)
        return pa.int64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        if self.column is None:
            return RowCount()
        return NumericStats(schema, self.column, counts_only=True)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.evaluate(sel) if self.column is None else acc.count(sel)


def count(column: Optional[str] = None) -> Count:
    """Rows in the group; ``count("x")`` counts the rows where ``x`` is not null.

    Examples
    --------
    >>> count(), count("value")
    (count(), count('value'))
    """
    return Count(column)
