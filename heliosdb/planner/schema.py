"""The schema pass: the output schema of every step, from the source's down.

Typing a step checks it: a missing column, a wrong type or a bad function is an error that
names the step, raised when the plan is built (``Stream.schema``, ``explain()``, ``execute()``),
before anything runs.  A cache (node id -> schema) lets one planning pass type each step once,
so a ``map_batches`` function is called on an empty batch once, not once per later step.

Examples
--------
>>> import heliosdb as hdb
>>> s = hdb.StreamEnvironment().from_iterable([{"v": 1.0}]).with_columns(w=hdb.col("v") * 2)
>>> output_schema(s._node).names
['v', 'w']
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Type

import pyarrow as pa

from ..errors import PlanError
from ..kernels.program import FusedProgram
from ..logical import (Batch, Filter, FilterFunction, Inspect, Join, LateOutput, LookupJoin, MapBatches,
                       MapFunction, Node, ProcessFunction, RunningAggregate, Select, Sink, Source, Step, Unbatch,
                       Watermark, WindowAggregate, WithColumns)
from ..operators.watermark import WatermarkAssigner
from ..pyfunc import plan_function
from .fusion import apply
from .join import LATE_TAGS, join_schema
from .keyed import running_operator, window_operator
from .lookup import lookup_schema

#: The schema a step outputs: f(node, input schema, the upstream watermark's time column).
StepSchema = Callable[[Node, Optional[pa.Schema], Optional[str]], pa.Schema]

_UNBOUNDED = 2**62      # typing builds the operator; its state is never used


def output_schema(node: Node, cache: Optional[Dict[int, pa.Schema]] = None) -> pa.Schema:
    """The schema of ``node``'s output, typing every step on the way (raises on errors).

    ``cache`` (node id -> schema) lets one planning pass type each step once.
    """
    cache = {} if cache is None else cache
    if id(node) in cache:
        return cache[id(node)]
    # Parents before children (a join has two), without recursion: plans can be long.
    order: List[Node] = []
    stack: List[Tuple[Node, bool]] = [(node, False)]
    seen = set()
    while stack:
        n, ready = stack.pop()
        if ready:
            order.append(n)
            continue
        if id(n) in cache or id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((p, False) for p in reversed(n.inputs))
    for n in order:
        if isinstance(n.step, Join):
            cache[id(n)] = join_schema(n, cache[id(n.parent)], cache[id(n.right)], event_time(n.parent),
                                       event_time(n.right))
        else:
            parent = n.parent
            cache[id(n)] = SCHEMA[type(n.step)](n, None if parent is None else cache[id(parent)],
                                                None if parent is None else event_time(parent))
    return cache[id(node)]


def event_time(node: Node) -> Optional[str]:
    """The time column of the watermark ``node``'s output carries (None: none): the last
    ``with_watermark`` before it, through the left input of a join.

    >>> import heliosdb as hdb
    >>> s = hdb.StreamEnvironment().from_iterable([{"ts": 1}]).with_watermark("ts").filter(hdb.col("ts") > 0)
    >>> event_time(s._node), event_time(s._node.parent.parent)
    ('ts', None)
    """
    n: Optional[Node] = node
    while n is not None:
        if isinstance(n.step, Watermark):
            return n.step.strategy.time
        n = n.parent
    return None


def _same(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    return schema


def _source(n: Node, schema: None, wm_time: Optional[str]) -> pa.Schema:
    return n.step.source.schema


def _function(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    return plan_function(n, schema).output_schema


def _expression(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    p = FusedProgram.identity(schema)
    apply(p, n)
    return p.output_schema()


def _map_batches(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    if n.step.schema is not None:
        return n.step.schema
    try:
        out = n.step.fn(pa.RecordBatch.from_pylist([], schema=schema))
    except Exception as exc:
        raise PlanError(
            f"step {n.name!r}: map_batches could not infer its output schema by calling the "
            f"function on an empty batch ({type(exc).__name__}: {exc}); pass schema="
        ) from exc
    if not isinstance(out, (pa.RecordBatch, pa.Table)):
        raise PlanError(
            f"step {n.name!r}: the map_batches function must return a pyarrow RecordBatch or "
            f"Table, got {type(out).__name__}"
        )
    return out.schema


def _window(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    return window_operator(n, schema, wm_time, _UNBOUNDED).output_schema


def _running(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    return running_operator(n, schema, _UNBOUNDED, None).output_schema


def _late_output(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    step = n.parent
    if isinstance(step.step, Join):            # one side of a join
        return output_schema(step.parent if n.step.tag == LATE_TAGS["left"] else step.right, {})
    return output_schema(step.parent, {})      # the window's input


def _join(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    return output_schema(n)                    # typed with both inputs by output_schema()


def _watermark(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    WatermarkAssigner(n.name, schema, n.step.strategy.time, 0)      # checks the time column
    return schema


#: The output schema of each kind of step.
SCHEMA: Dict[Type[Step], StepSchema] = {
    Source: _source,
    Filter: _expression, Select: _expression, WithColumns: _expression,
    FilterFunction: _function, MapFunction: _function, ProcessFunction: _function,
    MapBatches: _map_batches,
    WindowAggregate: _window, RunningAggregate: _running, LateOutput: _late_output,
    Watermark: _watermark, Join: _join,
    LookupJoin: lookup_schema,
    Batch: _same, Unbatch: _same, Inspect: _same, Sink: _same,
}
