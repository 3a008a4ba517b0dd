"""Keyed steps: window aggregates and running aggregates, lowered to operators and stages.

Every window operator is made by :func:`window_operator` (its spec builds it) and every
running aggregate by :func:`running_operator`; :func:`lower_keyed` places them:

- A window on a time column no upstream ``with_watermark`` declares gets its own watermark
  assigner, before the stage cut (and before an exchange, so every subtask sees the same
  event time; in the two-phase layout, after the replicas).
- With parallelism (``parallelism.layout``): ``"two_phase"``, pre-aggregating replicas in the
  stage before and a final stage that merges their partials in order; ``"by_key"``, a hash
  exchange to subtasks and a merge stage after them; else one operator in a stage of its own.
- Each ``late_output()`` of a window is a side stage reading the window's late rows.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import pyarrow as pa

from ..kernels.window import window_grid
from ..logical import Join, LateOutput, LogicalPlan, Node, Watermark, WindowAggregate
from ..operators.base import Operator
from ..operators.exchange import HashPartitioner
from ..operators.keyed import KeyedAggregate
from ..operators.watermark import WatermarkAssigner
from .context import At, Lowering
from .parallelism import keyed_parallelism, layout, placement
from .stages import cut_before_keyed, merge_stage, new_stage, side_stage


def window_time(node: Node, wm_time: Optional[str]) -> Optional[str]:
    """Window step ``node``'s event-time column (its own, else the upstream watermark's);
    None means processing time."""
    return node.step.time or wm_time


def window_operator(node: Node, schema: pa.Schema, wm_time: Optional[str], max_bytes: int,
                    backend=None) -> Operator:
    """The operator of window step ``node`` over input ``schema`` (state on ``backend``, a
    ``config.StateBackend``; None: memory), as its spec builds it."""
    s = node.step
    return s.spec.build(node.name, schema, list(s.keys), window_time(node, wm_time), list(s.aggs),
                        max_bytes, s.lateness, backend)


def running_operator(node: Node, schema: pa.Schema, max_bytes: int, state,
                     backend=None) -> KeyedAggregate:
    """The operator of running-aggregate step ``node``: its TTL is ``with_state_ttl()``'s,
    else ``state``'s (a ``config.StateConfig``, None: none)."""
    s = node.step
    ttl, every = s.ttl or (None, None)
    if ttl is None and state is not None:
        ttl, every = state.ttl_ns, state.cleanup_interval_ns
    return KeyedAggregate(node.name, schema, list(s.keys), list(s.aggs), max_bytes, ttl, every, backend)


def out_of_orderness(node: Node, time_col: Optional[str]) -> Optional[int]:
    """``max_out_of_orderness`` (ns) of the watermark window ``node`` reads: its with_watermark
    step's when that is on the window's time column, else 0 (the window's own assigner);
    None for processing time."""
    if time_col is None:
        return None
    p = node.parent
    while p is not None and not isinstance(p.step, Watermark):
        p = p.parent
    strategy = p.step.strategy if p is not None else None
    return strategy.max_out_of_orderness_ns if strategy is not None and strategy.time == time_col else 0


def watermark_grid(plan: LogicalPlan, node: Node, itself: bool = False) -> tuple:
    """The watermark grid (kernels/window.py ``window_grid``) of the windows and joins that
    the watermark of ``node`` reaches: the ones after it (and ``node`` itself if ``itself``),
    through any step but another watermark step.

    >>> import heliosdb as hdb
    >>> from heliosdb.logical import Sink
    >>> w = (hdb.StreamEnvironment().from_iterable([{"ts": 0, "k": 1}]).with_watermark("ts")
    ...      .key_by("k").window(hdb.TumblingWindow.of(2)).aggregate(n=hdb.count()))
    >>> plan = LogicalPlan([Node(Sink(spec=None), w._node, "out")])
    >>> offsets, steps = watermark_grid(plan, w._node.parent)
    >>> offsets.tolist(), steps.tolist()
    ([2000000000, 2000000000], [2000000000, 2000000000])
    """
    specs = []
    todo = [node] if itself else list(plan.children(node))
    seen = set()
    while todo:
        n = todo.pop()
        if isinstance(n.step, Watermark) or id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n.step, WindowAggregate):
            specs.append(n.step.spec.grid(n.step.lateness))
        elif isinstance(n.step, Join) and n.step.join_kind != "regular":
            # A window join acts at its windows' ends; interval and as-of joins at any time.
            specs.append(n.step.window.grid(0) if n.step.window is not None else None)
        todo += plan.children(n)
    return window_grid(specs)


def keyed_operator(low: Lowering, node: Node, schema: pa.Schema, wm_time: Optional[str]) -> Operator:
    """The operator of keyed step ``node`` in the job (state on the config's backend)."""
    backend = low.config.state_backend
    max_bytes = backend.max_size_bytes
    if low.explain:
        backend = None           # explain() opens no database
    if isinstance(node.step, WindowAggregate):
        op = window_operator(node, schema, wm_time, max_bytes, backend)
        # Told at plan time, never looked up: whether a stage reads its late_output() (a
        # child here has a sink downstream), and the watermark bound it quotes if not.
        op.late_output_read = any(isinstance(k.step, LateOutput) for k in low.plan.children(node))
        op.out_of_orderness_ns = out_of_orderness(node, op.time)
        return op
    return running_operator(node, schema, max_bytes, low.config.state, backend)


def lower_keyed(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    """Lower a window or running aggregate (see the module docstring); returns ``node`` and
    where the stream goes on: the stage after the operator, its output schema, the watermark."""
    schema, wm_time = at.schema, at.wm_time
    time_col = window_time(node, wm_time) if isinstance(node.step, WindowAggregate) else None
    parallel = keyed_parallelism(node, low.config)
    assigner = None
    if time_col is not None and time_col != wm_time:
        # Before the stage cut (and, with parallelism, before the exchange, so every subtask
        # sees the same event time): the upstream thread has slack, the window's is the
        # critical path.  Two-phase: after the replicas.
        assigner = WatermarkAssigner(f"{node.name}.watermark", schema, time_col, 0,
                                     grid=watermark_grid(low.plan, node, itself=True))
        wm_time = time_col
    how = layout(node, time_col, parallel)
    if how == "two_phase":
        stage, out_schema, op_stages = _two_phase(low, node, at.stage, schema, wm_time, parallel, assigner)
    else:
        if assigner is not None:
            low.stages[at.stage].operators.append(assigner)
        if how == "by_key":
            stage, out_schema, op_stages = _by_key(low, node, at.stage, schema, wm_time, parallel)
        else:
            stage = at.stage
            if cut_before_keyed(low.stages[stage].operators):
                stage = new_stage(low.stages, after=stage)
            op = keyed_operator(low, node, schema, wm_time)
            low.stages[stage].operators.append(op)
            low.state_ops.append(op)
            out_schema, op_stages = op.output_schema, [stage]
    for late in [k for k in low.plan.children(node) if isinstance(k.step, LateOutput)]:
        idx = side_stage(low.stages, op_stages, "late", late.name)
        for k in low.plan.children(late):
            low.lower(k, At(idx, schema, wm_time, via=late))    # late rows: the window's input
    return node, At(stage, out_schema, wm_time)


def _two_phase(low: Lowering, node: Node, stage: int, schema: pa.Schema, wm_time: str,
               parallel: int, assigner: Optional[WatermarkAssigner]) -> Tuple[int, pa.Schema, List[int]]:
    """``parallel`` replicas pre-aggregate batches (with the stateless kernel before them
    when it has as many replicas) -> one final stage: the watermark assigner and the window,
    which merges their partials in order (operators/preagg.py).  Returns the final stage."""
    s = node.step
    pre = s.spec.pre_aggregate(f"{node.name}.pre", schema, list(s.keys), window_time(node, wm_time),
                               list(s.aggs), None if assigner is None else assigner.bound)
    pre.parallel = parallel
    low.stages[stage].operators.append(pre)
    final = new_stage(low.stages, after=stage)
    ops = low.stages[final].operators
    if assigner is not None:
        ops.append(assigner)
    op = keyed_operator(low, node, schema, wm_time)
    ops.append(op)
    low.state_ops.append(op)
    return final, op.output_schema, [final]


def _by_key(low: Lowering, node: Node, stage: int, schema: pa.Schema, wm_time: Optional[str],
            parallel: int) -> Tuple[int, pa.Schema, List[int]]:
    """Hash exchange -> ``parallel`` subtasks -> a merge stage; returns the merge."""
    keys = list(node.step.keys)
    up = low.stages[stage]
    up.partitioner = HashPartitioner(schema, keys, parallel, node.name)
    out_schema = schema
    subtasks = []
    for i in range(parallel):
        idx = new_stage(low.stages, after=stage, name=f"{node.name}#{i}")
        op = keyed_operator(low, node, schema, wm_time)
        op.name = f"{node.name}#{i}"
        op.placement = placement(keys, parallel, i)        # restore: the rows of key hash i
        low.stages[idx].operators.append(op)
        low.stages[idx].origin = i
        low.state_ops.append(op)
        subtasks.append(idx)
        out_schema = op.output_schema
    return merge_stage(low.stages, subtasks, f"{node.name}.merge"), out_schema, subtasks
