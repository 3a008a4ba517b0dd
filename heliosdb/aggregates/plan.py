"""The aggregates of one operator over its input schema: which accumulators its groups hold
(one per distinct key: aggregates that can share one do), the output fields, and each
batch's inputs prepared once (:class:`Prepared`) for every group state it updates.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa

from .base import AggSpec, GroupsAccumulator
from .count import RowCount


class AggregatePlan:
    """What each group holds for ``aggs`` (``(output name, AggSpec)``) over ``schema``.

    ``accumulators`` are the empty accumulators that group states copy, in snapshot column
    order; ``readers`` pairs each aggregate with the index of the accumulator it reads.

    Examples
    --------
    >>> from heliosdb.aggregates.base import AggSpec
    >>> schema = pa.schema([("v", pa.float64())])
    >>> plan = AggregatePlan(schema, [("n", AggSpec("count")), ("s", AggSpec("sum", "v")),
    ...                               ("hi", AggSpec("max", "v"))], "agg")
    >>> [type(a).__name__ for a in plan.accumulators], [i for _, i in plan.readers]
    (['RowCount', 'NumericStats'], [0, 1, 1])
    """

    def __init__(self, schema: pa.Schema, aggs: List[Tuple[str, AggSpec]], step: str):
        self.aggs = aggs
        self.step = step
        self.output_fields: List[pa.Field] = []
        found: List[GroupsAccumulator] = []
        used: List[int] = []
        for out_name, agg in aggs:
            self.output_fields.append(pa.field(out_name, agg.output_type(schema, step)))
            acc = agg.accumulator(schema, step)
            same = None if acc.key is None else next((i for i, a in enumerate(found) if a.key == acc.key), None)
            if same is None:
                used.append(len(found))
                found.append(acc)
            else:
                found[same] = found[same].combine(acc)
                used.append(same)
        # Snapshot columns by accumulator order (rows, stats, var, first, last, distinct,
        # sketch, then any other), each in order of first use.
        order = sorted(range(len(found)), key=lambda i: (found[i].order, i))
        where = {old: new for new, old in enumerate(order)}
        self.accumulators: List[GroupsAccumulator] = [found[i] for i in order]
        self.readers: List[Tuple[AggSpec, int]] = [(agg, where[i]) for (_, agg), i in zip(aggs, used)]
        rows = [i for i, a in enumerate(self.accumulators) if isinstance(a, RowCount)]
        #: index of the ``count()`` accumulator (None: no aggregate counts rows)
        self.rows: Optional[int] = rows[0] if rows else None
        self.count_rows = self.rows is not None
        #: the row counter of group states that must count rows anyway
        self.row_counter = self.accumulators[self.rows] if rows else RowCount()
        self.needs_seq = any(a.needs_seq for a in self.accumulators)

    def prepare(self, batch: pa.RecordBatch, seqs: Optional[np.ndarray]) -> "Prepared":
        """Turn a batch's aggregate inputs into numpy arrays, once per batch (``seqs``: the
        rows' arrival numbers, when ``needs_seq``)."""
        return Prepared(batch.num_rows, seqs, [a.prepare(batch) for a in self.accumulators])

    def frozen(self) -> "AggregatePlan":
        """A copy whose codecs decode with the values known now (for snapshots built on the
        checkpoint writer's thread)."""
        out = copy.copy(self)
        out.accumulators = [a.frozen() for a in self.accumulators]
        if self.rows is None:
            out.row_counter = self.row_counter
        else:
            out.row_counter = out.accumulators[self.rows]
        return out

    def values_portable(self) -> bool:
        """Whether aggregate inputs are coded alike in every instance (no string values in
        ``first``/``last``/``count_distinct``: their codes come from a per-instance table)."""
        return all(a.portable for a in self.accumulators)

    def codec_bytes(self) -> int:
        """Bytes of what every group state shares (string tables of value codecs)."""
        return sum(a.config_bytes() for a in self.accumulators)


class Prepared:
    """One batch's aggregate inputs as numpy arrays: one tuple per accumulator of the plan
    (values or codes, validity, ...), and the rows' arrival numbers (``seqs``) if needed."""

    __slots__ = ("n", "seqs", "inputs")

    def __init__(self, n: int, seqs: Optional[np.ndarray], inputs: List[tuple]):
        self.n = n
        self.seqs = seqs
        self.inputs = inputs

    def slice(self, b0: int, b1: int) -> "Prepared":
        """Rows ``b0:b1`` (views)."""
        if b0 == 0 and b1 == self.n:
            return self
        inputs = [tuple(None if a is None else a[b0:b1] for a in t) for t in self.inputs]
        return Prepared(b1 - b0, None if self.seqs is None else self.seqs[b0:b1], inputs)

    def take(self, idx: np.ndarray) -> "Prepared":
        """The rows ``idx`` (e.g. the non-late rows, or rows reordered by window)."""
        inputs = [tuple(None if a is None else a[idx] for a in t) for t in self.inputs]
        return Prepared(len(idx), None if self.seqs is None else self.seqs[idx], inputs)
