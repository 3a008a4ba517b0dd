"""``quantile(col, q)``: an approximate quantile from a mergeable log-bucket sketch (in the
style of DDSketch).

:class:`QuantileSketch` keeps each group's bucket counts as (group, bucket) pairs in a
:class:`~heliosdb.aggregates.valuesets.ValueSet`, and the total per group; quantiles of one
column with the same ``relative_accuracy`` share it.  Snapshot: the table
``sketch.{col}.{relative_accuracy!r}`` (``row``, ``bucket``, ``count``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import pyarrow as pa

from ..errors import SchemaError
from ..kernels import _accum, _hashagg
from .base import AggSpec, GroupsAccumulator, Inputs, Selection
from .columns import grow, numbers, validity
from .valuesets import keep_valid


class LogBuckets:
    """Log-bucketed sketch parameters: value -> bucket code, code -> value.

    Bucket ``k`` of positive values holds ``(gamma^(k-1), gamma^k]`` and answers
    ``2 gamma^k / (gamma + 1)``, within ``alpha`` relative error of every value in it.  Codes
    sort like the values: negatives mirror positives, 0 is code 0, infinities sit outside.

    >>> b = LogBuckets(0.01)
    >>> v = np.array([-3.0, 0.0, 1e-9, 250.0])
    >>> bool(np.all(np.abs(b.decode(b.encode(v)) - v) <= 0.01 * np.abs(v)))
    True
    """

    OFFSET = 1 << 20
    INF = 1 << 40

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self.log_gamma = math.log(self.gamma)

    def encode(self, v: np.ndarray) -> np.ndarray:
        a = np.abs(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.ceil(np.log(a) / self.log_gamma)
        k = np.where(np.isfinite(k), k, 0).astype(np.int64) + self.OFFSET
        k = np.where(np.isinf(a), self.INF, k)
        k = np.where(a == 0, 0, k)
        return np.where(v < 0, -k, k)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        a = np.abs(codes)
        with np.errstate(over="ignore"):
            mag = 2.0 * np.power(self.gamma, (a - self.OFFSET).astype(np.float64)) / (self.gamma + 1)
        mag = np.where(a == self.INF, np.inf, mag)
        mag = np.where(a == 0, 0.0, mag)
        return np.where(codes < 0, -mag, mag)


class QuantileSketch(GroupsAccumulator):
    """Each group's sketch of one column's non-null, non-NaN values.

    >>> acc = QuantileSketch(pa.schema([("v", pa.float64())]), "v", 0.01).empty(1)
    >>> acc.update(np.zeros(3, np.int64), acc.prepare(pa.record_batch({"v": [1.0, 2.0, 100.0]})), None)
    >>> round(acc.quantile(0.5, Selection(1))[0].as_py(), 1)
    2.0
    """

    order = 60

    def __init__(self, schema: pa.Schema, column: str, alpha: float):
        self.column, self.alpha = column, alpha
        self.index = schema.get_field_index(column)
        self.buckets = LogBuckets(alpha)
        super().__init__(("sketch", column, alpha), f"sketch.{column}.{alpha!r}.", {"total": (np.int64, 0)}, sets=1)

    def prepare(self, batch: pa.RecordBatch) -> Inputs:
        arr = batch.column(self.index)
        v = numbers(arr, True)
        ok = ~np.isnan(v)
        valid = validity(arr)
        if valid is not None:
            ok &= valid.astype(bool)
        return self.buckets.encode(v), (ok.view(np.uint8) if not ok.all() else None)

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        codes, ok = inputs
        g, k = keep_valid(gids, codes, ok)
        self.sets[0].add(g, k)
        _hashagg.count_rows(np.ascontiguousarray(g), self.a["total"])

    def merge(self, src: GroupsAccumulator, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        remap = np.full(src.capacity, -1, np.int64)
        remap[src_ids] = dst_ids
        g, k, w = src.sets[0].items()
        g = remap[g]
        keep = g >= 0
        self.sets[0].add(g[keep], k[keep], np.ascontiguousarray(w[keep]))
        _accum.merge_add_i64(src_ids, dst_ids, src.a["total"], self.a["total"])

    def quantile(self, q: float, sel: Selection) -> pa.Array:
        """The ``q``-quantile of groups ``sel`` (null where a group has no value)."""
        g, k, w = self.sets[0].items()
        want = sel.group_ids()
        if not len(k):                             # no value in any group: all null
            return pa.nulls(len(want), pa.float64())
        order = np.lexsort((k, g))
        g, k, w = g[order], k[order], w[order]
        cum = np.cumsum(w)
        tot = self.a["total"][: sel.n][want]
        starts = np.searchsorted(g, want)
        base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0)
        rank = np.floor(q * np.maximum(tot - 1, 0)).astype(np.int64)
        pos = np.searchsorted(cum, base + rank, side="right")
        ok = tot > 0
        pos = np.where(ok, np.minimum(pos, max(len(k) - 1, 0)), 0)
        values = self.buckets.decode(k[pos])
        return pa.array(values, pa.float64(), mask=~ok if not ok.all() else None)

    def state(self, sel: Selection):
        g, k, w = self.sets[0].items()
        row_of = sel.row_of()
        keep = row_of[g] >= 0
        table = pa.table({"row": pa.array(row_of[g[keep]]), "bucket": pa.array(k[keep]), "count": pa.array(w[keep])})
        return {}, {f"sketch.{self.column}.{self.alpha!r}": table}

    def restore(self, table: pa.Table, extra: Dict[str, pa.Table], capacity: int, owned: bool) -> None:
        self.capacity = max(capacity, table.num_rows)
        self.a["total"] = total = grow(self.a["total"], self.capacity, 0)
        t = extra.get(f"sketch.{self.column}.{self.alpha!r}")
        if t is not None and t.num_rows:
            rows = np.ascontiguousarray(t.column("row").to_numpy())
            w = np.ascontiguousarray(t.column("count").to_numpy())
            self.sets[0].add(rows, np.ascontiguousarray(t.column("bucket").to_numpy()), w)
            _accum.merge_add_i64(np.arange(len(rows), dtype=np.int64), rows, w, total)


@dataclass(frozen=True, repr=False)
class Quantile(AggSpec):
    """See :func:`quantile`."""

    kind = "quantile"
    q: Optional[float] = None
    relative_accuracy: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.q, (int, float)) or not 0.0 <= self.q <= 1.0:
            raise SchemaError(f"quantile({self.column!r}, q) needs 0 <= q <= 1, got {self.q!r}")
        if not 0.0 < self.relative_accuracy < 1.0:
            raise SchemaError(
                f"quantile(relative_accuracy=) must be between 0 and 1, got {self.relative_accuracy!r}"
            )

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        self.numeric_input(schema, step)
        return pa.float64()

    def accumulator(self, schema: pa.Schema, step: str) -> GroupsAccumulator:
        return QuantileSketch(schema, self.column, self.relative_accuracy)

    def evaluate(self, acc: GroupsAccumulator, sel: Selection) -> pa.Array:
        return acc.quantile(self.q, sel)

    def __repr__(self) -> str:
        return f"quantile({self.column!r}, {self.q!r})"


def quantile(column: str, q: float, relative_accuracy: float = 0.01) -> Quantile:
    """Approximate ``q``-quantile (0 <= q <= 1) of the non-null, non-NaN values, float64.

    A mergeable log-bucket sketch (in the style of DDSketch): the result is within
    ``relative_accuracy`` (relative error) of the exact value at rank ``floor(q * (n - 1))``
    of the sorted values, and memory per group grows with the log of the value range, not
    with n.

    >>> quantile("latency", 0.99)
    quantile('latency', 0.99)
    """
    return Quantile(column, float(q), relative_accuracy)
