"""``last(col)``: the last non-null value in arrival order, any column type (a
:class:`~heliosdb.aggregates.first.Pick`; snapshot columns ``{col}.last_seq``, ``{col}.last``)."""
from __future__ import annotations

import pyarrow as pa

from .base import AggSpec, GroupsAccumulator
from .first import Pick


class Last(AggSpec):
    """See :func:`last`."""

    kind = "last"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        return self.input_type(schema, step)

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return Pick(schema, self.column, "last", step)


def last(column: str) -> Last:
    """The last non-null value in arrival order; any column type.

    >>> last("category")
    last('category')
    """
    return Last(column)
