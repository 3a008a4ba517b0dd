"""``max(col)``: the largest non-null value (reads the column's
:class:`~heliosdb.aggregates.numeric.NumericStats`)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat

from .base import AggSpec, GroupsAccumulator, Selection
from .numeric import NumericStats


class Max(AggSpec):
    """See :func:`max`."""

    kind = "max"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        return pa.float64() if pat.is_floating(self.numeric_input(schema, step)) else pa.int64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return NumericStats(schema, self.column, counts_only=False)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.extreme(sel, "max")


def max(column: str) -> Max:  # noqa: A001 - the user guide's name
    """Largest non-null value (NaN sorts above every number, as in SQL).

    >>> max("v2")
    max('v2')
    """
    return Max(column)
