"""The accumulator that ``count(col)``, ``sum``, ``min``, ``max`` and ``mean`` of one column
share: per group the non-null count, and for numbers the NaN count, sum, min and max, all
folded by one Cython call per batch (``_hashagg.update_f64`` / ``update_i64``).

Snapshot columns: ``{col}.nn``, and for numbers ``{col}.nan`` (floats), ``{col}.sum``,
``{col}.min``, ``{col}.max``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..kernels import _accum, _hashagg
from .base import GroupsAccumulator, Inputs, Selection
from .columns import numbers, validity

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


class NumericStats(GroupsAccumulator):
    """count / sum / min / max / NaN count of one column, per group.

    ``counts_only``: only ``count(col)`` reads it (any column type: just the non-null count).

    Examples
    --------
    >>> acc = NumericStats(pa.schema([("v", pa.float64())]), "v", counts_only=False).empty(2)
    >>> acc.update(np.array([0, 0, 1]), acc.prepare(pa.record_batch({"v": [1.5, None, 4.0]})), None)
    >>> acc.count(Selection(2)).to_pylist(), acc.mean(Selection(2)).to_pylist()
    ([1, 1], [1.5, 4.0])
    """

    order = 10

    def __init__(self, schema: pa.Schema, column: str, counts_only: bool):
        t = schema.field(column).type
        if counts_only:
            kind = "count"
        else:
            kind = "float" if pat.is_floating(t) else "int" if pat.is_integer(t) else "count"
        self.column, self.kind = column, kind
        self.index = schema.get_field_index(column)
        fields = {"nn": (np.int64, 0)}
        if kind == "float":
            fields.update(nan=(np.int64, 0), sum=(np.float64, 0), min=(np.float64, np.inf),
                          max=(np.float64, -np.inf))
        elif kind == "int":
            fields.update(sum=(np.int64, 0), min=(np.int64, _I64_MAX), max=(np.int64, _I64_MIN))
        super().__init__(("stats", column), f"{column}.", fields)

    def combine(self, other: GroupsAccumulator) -> GroupsAccumulator:
        return other if self.kind == "count" else self

    def prepare(self, batch: pa.RecordBatch) -> Inputs:
        arr = batch.column(self.index)
        return (None if self.kind == "count" else numbers(arr, self.kind == "float"), validity(arr))

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        v, ok = inputs
        a = self.a
        if self.kind == "count":
            if ok is None:
                _hashagg.count_rows(gids, a["nn"])
            else:
                _hashagg.count_valid(gids, ok, a["nn"])
        elif self.kind == "float":
            _hashagg.update_f64(gids, v, ok, a["nn"], a["nan"], a["sum"], a["min"], a["max"])
        else:
            _hashagg.update_i64(gids, v, ok, a["nn"], a["sum"], a["min"], a["max"])

    def merge(self, src: GroupsAccumulator, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        a, b, s, d = self.a, src.a, src_ids, dst_ids
        _accum.merge_add_i64(s, d, b["nn"], a["nn"])
        if self.kind == "float":
            _accum.merge_add_i64(s, d, b["nan"], a["nan"])
            _accum.merge_stats_f64(s, d, b["sum"], b["min"], b["max"], a["sum"], a["min"], a["max"])
        elif self.kind == "int":
            _accum.merge_stats_i64(s, d, b["sum"], b["min"], b["max"], a["sum"], a["min"], a["max"])

    def merge_aligned(self, src: GroupsAccumulator, m: int) -> None:
        a, b = self.a, src.a
        a["nn"][:m] += b["nn"][:m]
        if self.kind == "float":
            a["nan"][:m] += b["nan"][:m]
        if self.kind != "count":
            a["sum"][:m] += b["sum"][:m]            # int64 wraps, as the kernels do
            np.minimum(a["min"][:m], b["min"][:m], out=a["min"][:m])
            np.maximum(a["max"][:m], b["max"][:m], out=a["max"][:m])

    # -- results (each aggregate calls its own) ---------------------------------------------------
    def count(self, sel: Selection) -> pa.Array:
        return pa.array(sel(self.a["nn"]), pa.int64())

    def _empty(self, sel: Selection):
        nn = sel(self.a["nn"])
        empty = nn == 0
        return nn, (empty if empty.any() else None)

    def sum(self, sel: Selection) -> pa.Array:
        _, mask = self._empty(sel)
        return pa.array(sel(self.a["sum"]), mask=mask)

    def mean(self, sel: Selection) -> pa.Array:
        nn, mask = self._empty(sel)
        with np.errstate(invalid="ignore", divide="ignore"):
            return pa.array(sel(self.a["sum"]) / np.maximum(nn, 1), pa.float64(), mask=mask)

    def extreme(self, sel: Selection, which: str) -> pa.Array:
        """``min`` or ``max``: NaN for min only if every value is NaN, for max if any is."""
        nn, mask = self._empty(sel)
        v = sel(self.a[which])
        if self.kind == "float":
            nan = sel(self.a["nan"])
            if nan.any():
                v = np.where(nan == nn if which == "min" else nan > 0, np.nan, v)
        return pa.array(v, mask=mask)
