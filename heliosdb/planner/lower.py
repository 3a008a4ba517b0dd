"""Lowering: each step of the logical plan -> operators in stages, one function per kind of
step (:data:`LOWERING`).

A lowering function takes the step's node and where the stream is (:class:`At`: the stage,
the schema, the watermark's time column, the node it comes from), adds operators (and
stages), and returns the last node it lowered (a fused run takes several) and where the stream
goes on, or None where it stops for now (a join reached from its first input: the second
builds it, :mod:`heliosdb.planner.join`).  :func:`walk` lowers the plan from a node down: one
child continues in the same stage, several children (a branch) each start a stage of their
own.

Examples
--------
>>> LOWERING[Filter].__name__, LOWERING[WindowAggregate].__name__, LOWERING[Sink].__name__
('lower_fused', 'lower_keyed', '_sink')
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, Optional, Tuple, Type

import pyarrow as pa

from ..config import StreamingConfig, fusion_enabled
from ..logical import (Batch, Filter, FilterFunction, Inspect, Join, LateOutput, LogicalPlan, LookupJoin,
                       MapBatches, MapFunction, Node, ProcessFunction, RunningAggregate, Select, Sink, Step, Unbatch,
                       Watermark, WindowAggregate, WithColumns, splits_before)
from ..operators.base import Operator
from ..operators.fused import InspectOperator, MapBatchesOperator
from ..operators.pyfunc import PythonFunctionOperator
from ..operators.rebatch import RebatchOperator
from ..operators.watermark import WatermarkAssigner
from ..pyfunc import plan_function
from .context import At, Lowering
from .fusion import fusable, lower_fused
from .join import lower_join
from .keyed import lower_keyed, watermark_grid
from .lookup import lower_lookup
from .pruning import Pruning
from .schema import output_schema
from .stages import new_stage

#: Lowers one node: f(lowering, node, where the stream is) -> (last node lowered, where next),
#: or None: the walk stops there.
Lower = Callable[[Lowering, Node, At], Optional[Tuple[Node, At]]]


def lowering(config: StreamingConfig, plan: LogicalPlan, explain: bool = False) -> Lowering:
    """A :class:`Lowering` of ``plan`` with ``config``, its schema cache shared with the
    pruning pass.  With ``explain`` nothing is bound or compiled."""
    schemas: Dict[int, pa.Schema] = {}
    pruning = Pruning(plan, schemas)
    return Lowering(config, plan, explain, fusion_enabled(), schemas, pruning.needed_after, walk)


def walk(low: Lowering, node: Node, at: At) -> None:
    """Lower ``node`` and every node after it that leads to a sink, from ``at`` on."""
    while True:
        lowered = LOWERING[type(node.step)](low, node, at)
        if lowered is None:
            return
        node, at = lowered
        kids = [k for k in low.plan.children(node) if not isinstance(k.step, LateOutput)]
        if not kids:
            return
        at = replace(at, via=node)
        if len(kids) == 1:
            node = kids[0]
            continue
        for k in kids:
            walk(low, k, replace(at, stage=new_stage(low.stages, after=at.stage)))
        return


class _PlannedSink(Operator):
    """Stands in for a sink in explain(): binding the real one would create folders or reset
    a memory sink's results."""

    kind = "sink"

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = f"{kind} sink"


def _unbatch(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    return node, at                 # ends a batch(n) regrouping; nothing to run


def _batch(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    low.add(at, RebatchOperator(node.step.size, node.name))
    return node, at


def _function(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    if fusable(node, at.schema):
        return lower_fused(low, node, at)
    f = plan_function(node, at.schema)                      # record by record, in Python
    op = PythonFunctionOperator(f.kind, f.fn, f.name, f.input_schema, f.output_schema, f.where, f.reason)
    low.add(at, op)
    return node, replace(at, schema=op.output_schema)


def _watermark(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    st = node.step.strategy
    low.add(at, WatermarkAssigner(node.name, at.schema, st.time, st.max_out_of_orderness_ns,
                                  st.idle_timeout_ns, watermark_grid(low.plan, node), splits_before(node),
                                  st.max_drift_ns, on_null=st.on_null))
    return node, replace(at, wm_time=st.time)


def _map_batches(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    out_schema = output_schema(node, low.schemas)
    low.add(at, MapBatchesOperator(node.step.fn, node.name, out_schema))
    return node, replace(at, schema=out_schema)


def _inspect(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    low.add(at, InspectOperator(node.step.fn, node.name))
    return node, at


def _sink(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    spec = node.step.spec
    op = _PlannedSink(node.name, spec.kind) if low.explain else spec.bind(at.schema, node.name)
    low.add(at, op)
    low.sink_ops.append(op)
    return node, at


#: The lowering of each kind of step (a source is the plan's start, a late output is lowered
#: with its window).
LOWERING: Dict[Type[Step], Lower] = {
    Filter: lower_fused, Select: lower_fused, WithColumns: lower_fused,
    FilterFunction: _function, MapFunction: _function, ProcessFunction: _function,
    Batch: _batch, Unbatch: _unbatch,
    Watermark: _watermark,
    WindowAggregate: lower_keyed, RunningAggregate: lower_keyed,
    Join: lower_join,
    MapBatches: _map_batches, Inspect: _inspect,
    LookupJoin: lower_lookup,
    Sink: _sink,
}
