"""``min(col)``: the smallest non-null value (reads the column's
:class:`~heliosdb.aggregates.numeric.NumericStats`)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat

from .base import AggSpec, GroupsAccumulator, Selection
from .numeric import NumericStats


class Min(AggSpec):
    """See :func:`min`."""

    kind = "min"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        return pa.float64() if pat.is_floating(self.numeric_input(schema, step)) else pa.int64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return NumericStats(schema, self.column, counts_only=False)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.extreme(sel, "min")


def min(column: str) -> Min:  # noqa: A001 - the user guide's name
    """Smallest non-null value (NaN only if every value is NaN).

    >>> min("v2")
    min('v2')
    """
    return Min(column)
