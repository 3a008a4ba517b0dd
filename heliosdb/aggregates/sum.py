"""``sum(col)``: the sum of a numeric column's non-null values (reads the column's
:class:`~heliosdb.aggregates.numeric.NumericStats`)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat

from .base import AggSpec, GroupsAccumulator, Selection
from .numeric import NumericStats


class Sum(AggSpec):
    """See :func:`sum`."""

    kind = "sum"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        return pa.float64() if pat.is_floating(self.numeric_input(schema, step)) else pa.int64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return NumericStats(schema, self.column, counts_only=False)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.sum(sel)


def sum(column: str) -> Sum:  # noqa: A001 - the user guide's name
    """Sum of the non-null values: int64 for integer columns (wrapping on overflow, as C and
    numpy do), float64 for floats (NaN if any value is NaN).

    >>> sum("v2")
    sum('v2')
    """
    return Sum(column)
