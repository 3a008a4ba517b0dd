"""``stddev(col)``: the sample standard deviation (reads ``var``'s :class:`Welford`)."""
from __future__ import annotations

import pyarrow as pa

from .base import AggSpec, GroupsAccumulator, Selection
from .var import Welford


class Stddev(AggSpec):
    """See :func:`stddev`."""

    kind = "stddev"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        self.numeric_input(schema, step)
        return pa.float64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return Welford(schema, self.column)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.variance(sel, sqrt=True)


def stddev(column: str) -> Stddev:
    """Sample standard deviation: the square root of :func:`~heliosdb.aggregates.var.var`.

    >>> stddev("v2")
    stddev('v2')
    """
    return Stddev(column)
