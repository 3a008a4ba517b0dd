"""``mean(col)``: the mean of a numeric column's non-null values (reads the column's
:class:`~heliosdb.aggregates.numeric.NumericStats`: sum / count)."""
from __future__ import annotations

import pyarrow as pa

from .base import AggSpec, GroupsAccumulator, Selection
from .numeric import NumericStats


class Mean(AggSpec):
    """See :func:`mean`."""

    kind = "mean"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        self.numeric_input(schema, step)
        return pa.float64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return NumericStats(schema, self.column, counts_only=False)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.mean(sel)


def mean(column: str) -> Mean:
    """Mean of the non-null values, float64.

    >>> mean("v2")
    mean('v2')
    """
    return Mean(column)
