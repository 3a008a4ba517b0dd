"""``var(col)``: the sample variance, by Welford's method per group and Chan's formula to
merge (:class:`Welford`, shared with ``stddev``; snapshot columns ``{col}.var_cnt``,
``{col}.var_mean``, ``{col}.var_m2``)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ..kernels import _accum
from .base import AggSpec, GroupsAccumulator, Inputs, Selection
from .columns import numbers, validity


class Welford(GroupsAccumulator):
    """Count, mean and sum of squared deviations of one column, per group.

    >>> acc = Welford(pa.schema([("v", pa.float64())]), "v").empty(1)
    >>> acc.update(np.zeros(3, np.int64), acc.prepare(pa.record_batch({"v": [1.0, 2.0, 3.0]})), None)
    >>> acc.variance(Selection(1), sqrt=False).to_pylist()
    [1.0]
    """

    order = 20

    def __init__(self, schema: pa.Schema, column: str):
        self.column = column
        self.index = schema.get_field_index(column)
        super().__init__(("var", column), f"{column}.var_",
                         {"cnt": (np.int64, 0), "mean": (np.float64, 0.0), "m2": (np.float64, 0.0)})

    def prepare(self, batch: pa.RecordBatch) -> Inputs:
        arr = batch.column(self.index)
        return numbers(arr, True), validity(arr)

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        v, ok = inputs
        a = self.a
        _accum.update_var(gids, v, ok, a["cnt"], a["mean"], a["m2"])

    def merge(self, src: GroupsAccumulator, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        a, b = self.a, src.a
        _accum.merge_var(src_ids, dst_ids, b["cnt"], b["mean"], b["m2"], a["cnt"], a["mean"], a["m2"])

    def variance(self, sel: Selection, sqrt: bool) -> pa.Array:
        """Sample variance (``sqrt``: standard deviation); null below two values."""
        cnt = sel(self.a["cnt"])
        with np.errstate(invalid="ignore", divide="ignore"):
            v = sel(self.a["m2"]) / (cnt - 1)
        v = np.where(cnt >= 2, np.maximum(v, 0.0), 0.0)     # NaN stays NaN
        if sqrt:
            v = np.sqrt(v)
        small = cnt < 2
        return pa.array(v, pa.float64(), mask=small if small.any() else None)


class Var(AggSpec):
    """See :func:`var`."""

    kind = "var"

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        self.numeric_input(schema, step)
        return pa.float64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return Welford(schema, self.column)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.variance(sel, sqrt=False)


def var(column: str) -> Var:
    """Sample variance (n - 1 in the denominator) of the non-null values, float64; null for
    fewer than two values.  Computed with Welford's method, merged with Chan's formula.

    >>> var("v2")
    var('v2')
    """
    return Var(column)
