"""Column pruning: the columns some later step reads, worked out bottom-up.

The source reads only the columns some step uses (a Parquet source then reads fewer
columns), and a fused kernel drops outputs no later step reads.  Steps that see whole
records or batches (sinks, ``map_batches``, ``inspect``, Python functions run per record, a
window whose ``late_output()`` is read) need every column.

Examples
--------
>>> import heliosdb as hdb
>>> from heliosdb.logical import LogicalPlan, Node, Sink
>>> s = hdb.StreamEnvironment().from_iterable([{"k": 1, "v": 2.0, "x": "a"}])
>>> agg = s.key_by("k").aggregate(total=hdb.sum("v"))
>>> plan = LogicalPlan([Node(Sink(spec=None), agg._node, "out")])
>>> sorted(Pruning(plan, {}).needed_after(plan.source, None))
['k', 'v']
"""
from __future__ import annotations

from typing import Dict, Optional, Set

import pyarrow as pa

from ..kernels.program import FusedProgram
from ..logical import (Batch, Inspect, Join, LateOutput, LogicalPlan, LookupJoin, MapBatches, Node,
                       RunningAggregate, Sink, Unbatch, Watermark, WindowAggregate, splits_before)
from .fusion import apply, fusable
from .keyed import window_time
from .join import LATE_TAGS, side_inputs
from .lookup import lookup_inputs
from .schema import event_time, output_schema

Columns = Optional[Set[str]]        # None: every column


def keyed_inputs(node: Node, wm_time: Optional[str]) -> Set[str]:
    """The input columns keyed step ``node`` reads: keys, its time column, aggregated columns."""
    step = node.step
    cols = set(step.keys)
    if isinstance(step, WindowAggregate) and window_time(node, wm_time):
        cols.add(window_time(node, wm_time))
    cols |= {a.column for _, a in step.aggs if a.column}
    return cols


class Pruning:
    """What each step of ``plan`` must be given, typed against ``schemas`` (node id -> output
    schema, shared with the schema pass)."""

    def __init__(self, plan: LogicalPlan, schemas: Dict[int, pa.Schema]):
        self.plan = plan
        self.schemas = schemas
        self.needed: Dict[int, Columns] = {}

    def needed_after(self, n: Node, wm_time: Optional[str]) -> Columns:
        """Columns of ``n``'s output that some later step reads (None: all)."""
        key = id(n)
        if key in self.needed:
            return self.needed[key]
        result: Columns = set()
        if isinstance(n.step, Watermark):
            wm_time = n.step.strategy.time
        for c in self.plan.children(n):
            req = self._join_input(c, n) if isinstance(c.step, Join) else self.needed_before(c, wm_time)
            if req is None or result is None:
                result = None
            else:
                result |= req
        self.needed[key] = result
        return result

    def _join_input(self, join: Node, parent: Node) -> Columns:
        """Columns of ``parent``'s output that ``join`` (it is one of its inputs) and the steps
        after the join read."""
        side = 0 if parent is join.parent else 1
        tag = LATE_TAGS["left" if side == 0 else "right"]
        if any(isinstance(k.step, LateOutput) and k.step.tag == tag for k in self.plan.children(join)):
            return None                # late rows leave with every column of their input
        left, right = output_schema(join.parent, self.schemas), output_schema(join.right, self.schemas)
        after = self.needed_after(join, event_time(join.parent))
        return side_inputs(join, left, right, side, after, event_time(join.parent), event_time(join.right))

    def needed_before(self, n: Node, wm_time: Optional[str]) -> Columns:
        """Columns of ``n``'s input that it or a later step reads (None: all)."""
        step = n.step
        if isinstance(step, (Sink, MapBatches, Inspect, LateOutput)):
            return None
        if isinstance(step, (WindowAggregate, RunningAggregate)):
            if any(isinstance(k.step, LateOutput) for k in self.plan.children(n)):
                return None            # late events leave with every input column
            return keyed_inputs(n, wm_time)
        after = self.needed_after(n, wm_time)
        if isinstance(step, Watermark):
            splits = splits_before(n)
            own = {step.strategy.time} | set(splits.columns if splits is not None else ())
            return None if after is None else after | own
        if isinstance(step, (Batch, Unbatch)):
            return after
        if isinstance(step, LookupJoin):
            return lookup_inputs(n, output_schema(n.parent, self.schemas), after)
        if after is None:
            return None
        # A fusable step: its input needs what its kept outputs, predicate and checks read.
        schema = output_schema(n.parent, self.schemas)
        if not fusable(n, schema):
            return None               # a Python function run per record sees every column
        p = FusedProgram.identity(schema)
        apply(p, n)
        p.prune(after)
        cols: Set[str] = set()
        for _, e in p.outputs:
            cols |= e.columns()
        if p.predicate is not None:
            cols |= p.predicate.columns()
        for c in p.checks:
            cols |= c.cond.columns()
        return cols
