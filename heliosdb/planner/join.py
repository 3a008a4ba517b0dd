"""Joins: a step of two inputs, typed, checked and lowered into a stage that reads both.

- **Typing** (:func:`join_schema`): the key columns must exist on their side and be
  comparable as the join operators compare them (``int32`` with ``int64``, ``string`` with
  ``large_string``, ...); a window, interval or as-of join needs event time on both sides.
  The output is the operators' (``heliosdb.operators.join.output_schema``, Polars' rule): a
  window join's ``window_start``, ``window_end``, then the left columns, then the right
  ones, the right keys left out when they were named alike (``on=``: kept once, under the
  left name, in the type both sides' keys fit), clashes suffixed.
- **Lowering** (:func:`lower_join`): the planner walks the plan from each source in turn, so
  a join is reached once from each input; the first arrival is remembered, the second builds
  the join.  Each input's rows leave from a stage of their own (``origin`` 0 left, 1 right)
  into the join's stage, whose gate takes both (``PhysicalStage.sides``) and whose watermark
  is the minimum of the two.  With parallelism ``n`` both inputs are hash-exchanged on their
  keys (cast to the type both sides fit first, so equal keys meet) to ``n`` subtasks placed by
  the left key names; a merge stage follows.  ``late_output("left" | "right")`` are side stages
  reading the join's ``late_left`` / ``late_right`` rows.

Examples
--------
>>> import pyarrow as pa
>>> from heliosdb.logical import Join
>>> left = pa.schema([("k", pa.int32()), ("v", pa.float64())])
>>> right = pa.schema([("k", pa.int64()), ("v", pa.float64()), ("w", pa.string())])
>>> node = Node(Join("regular", ("k",), ("k",), ttl_ns=10**9, coalesce_keys=True), None, "j")
>>> [f"{f.name} {f.type}" for f in join_schema(node, left, right, None, None)]
['k int64', 'v double', 'v_right double', 'w string']
"""
from __future__ import annotations

from typing import List, Optional, Set, Tuple

import pyarrow as pa

from ..errors import PlanError, SchemaError
from ..logical import JOIN_NOUNS, LateOutput, Node
from ..operators.base import Operator
from ..operators.exchange import HashPartitioner
from ..operators.join import LATE_TAGS as LATE_SIDE_TAGS
from ..operators.join import JoinSpec, make_join, output_schema
from ..operators.join.keys import JoinKeys, common_type
from ..operators.join.spec import output_columns
from .context import At, Lowering
from .parallelism import keyed_parallelism, placement
from .stages import merge_stage, new_stage, side_stage

#: One output column: (its field, the side it comes from (None: the window's), input column).
Column = Tuple[pa.Field, Optional[int], Optional[str]]

#: Which side's late rows a ``late_output(side)`` reads: its side-output tag.
LATE_TAGS = {"left": LATE_SIDE_TAGS[0], "right": LATE_SIDE_TAGS[1]}


def join_spec(node: Node, left_time: Optional[str], right_time: Optional[str],
              ttl_ns: Optional[int] = None) -> JoinSpec:
    """The operators' spec of join step ``node``: event time ``left_time`` / ``right_time``
    (a regular join runs on event time when both sides have it, else on the wall clock)."""
    s = node.step
    if s.join_kind == "regular" and (left_time is None or right_time is None):
        left_time = right_time = None
    return JoinSpec(s.join_kind, s.left_on, s.right_on, how=s.how, suffix=s.suffix,
                    coalesce_keys=s.coalesce_keys, left_time=left_time, right_time=right_time,
                    window=s.window, between=s.between, tolerance_ns=s.tolerance_ns,
                    ttl_ns=ttl_ns if ttl_ns is not None else s.ttl_ns)


def key_types(node: Node, left: pa.Schema, right: pa.Schema) -> List[pa.DataType]:
    """The type each pair of key columns is compared and hashed as (the type both sides'
    values fit, ``operators.join.keys.common_type``); PlanError naming the step, the column
    and its side when one is missing, or both columns when they cannot be compared."""
    step = node.step
    for side, keys, schema in (("left", step.left_on, left), ("right", step.right_on, right)):
        for k in keys:
            if k not in schema.names:
                hint = ""
                if step.coalesce_keys:
                    hint = " (on= names columns of both sides; use left_on=/right_on= when they differ)"
                raise PlanError(f"step {node.name!r}: join key {k!r} is not a column of the {side} input; "
                                f"it has {schema.names}{hint}")
    try:
        JoinKeys(left, right, step.left_on, step.right_on, node.name)
    except SchemaError as exc:
        raise PlanError(str(exc)) from exc
    return [common_type(left.field(a).type, right.field(b).type) for a, b in zip(step.left_on, step.right_on)]


def check_time(node: Node, left_time: Optional[str], right_time: Optional[str]) -> None:
    """Window, interval and as-of joins need event time on both inputs."""
    if node.step.join_kind == "regular":
        return
    for side, t in (("left", left_time), ("right", right_time)):
        if t is None:
            raise PlanError(
                f"step {node.name!r}: {JOIN_NOUNS[node.step.join_kind]} needs event time on both inputs, and the "
                f"{side} input has none; call .with_watermark(time=..., max_out_of_orderness=...) on it "
                "before the join")


def join_columns(node: Node, left: pa.Schema, right: pa.Schema, left_time: Optional[str],
                 right_time: Optional[str]) -> List[Column]:
    """The output columns of join ``node`` (``operators.join.output_schema``'s, with where each
    comes from), after checking its keys and event time."""
    key_types(node, left, right)
    check_time(node, left_time, right_time)
    spec = join_spec(node, left_time, right_time)
    cols: List[Column] = [(f, None, None) for f in output_schema(left, right, spec)][:2] \
        if spec.kind == "window" else []
    for c in output_columns(left, right, spec):
        cols.append((c.field, c.side, (left if c.side == 0 else right).field(c.index).name))
    return cols


def join_schema(node: Node, left: pa.Schema, right: pa.Schema, left_time: Optional[str],
                right_time: Optional[str]) -> pa.Schema:
    """The output schema of join ``node`` over its inputs' schemas (checks it first)."""
    return pa.schema([f for f, _, _ in join_columns(node, left, right, left_time, right_time)])


def side_inputs(node: Node, left: pa.Schema, right: pa.Schema, side: int, needed: Optional[Set[str]],
                left_time: Optional[str], right_time: Optional[str]) -> Optional[Set[str]]:
    """The columns of input ``side`` the join and the steps after it read (``needed``: of
    its output, None: all): the keys, the event time, and what becomes a needed column."""
    if needed is None:
        return None
    step = node.step
    schema = left if side == 0 else right
    cols = set(step.left_on if side == 0 else step.right_on)
    time = left_time if side == 0 else right_time
    if time is not None:
        cols.add(time)
    for f, s, c in join_columns(node, left, right, left_time, right_time):
        if s == side and f.name in needed:
            cols.add(c)
    return {c for c in cols if c in schema.names}


def build_operator(node: Node, left: pa.Schema, right: pa.Schema, left_time: Optional[str],
                   right_time: Optional[str], ttl_ns: Optional[int], max_bytes: int,
                   backend=None) -> Operator:
    """The join operator of step ``node`` over its inputs' schemas (``operators.join.make_join``),
    its state on ``backend``."""
    return make_join(join_spec(node, left_time, right_time, ttl_ns), left, right, name=node.name,
                     max_state_bytes=max_bytes, backend=backend)


def _feeder(low: Lowering, at: At, origin: int) -> int:
    """The stage an input's rows leave from into the join: the stage the stream is at, or a
    new stage after it when that one already feeds other stages at another position."""
    st = low.stages[at.stage]
    if st.children or st.partitioner is not None or st.dispatch is not None or (
            st.side_children and st.origin != origin):
        idx = new_stage(low.stages, after=at.stage)
        low.stages[idx].origin = origin
        return idx
    st.origin = origin
    return at.stage


def lower_join(low: Lowering, node: Node, at: At) -> Optional[Tuple[Node, At]]:
    """Remember the first input that arrives; at the second, build the join (see the module
    docstring) and return where its output goes on."""
    if at.via is node.parent:
        side = 0
    elif at.via is node.right:
        side = 1
    else:  # pragma: no cover - the walk always says where it comes from
        raise PlanError(f"step {node.name!r}: a join was reached from a step that is not one of its inputs "
                        "(an engine bug)")
    pending = low.joins.setdefault(id(node), {})
    pending[side] = at
    if len(pending) < 2:
        return None
    left, right = pending[0], pending[1]
    del low.joins[id(node)]
    step = node.step
    types = key_types(node, left.schema, right.schema)
    check_time(node, left.wm_time, right.wm_time)
    backend = low.config.state_backend
    max_bytes = backend.max_size_bytes
    ttl_ns = step.ttl_ns
    if ttl_ns is None and step.join_kind == "regular" and low.config.state is not None:
        ttl_ns = low.config.state.ttl_ns

    def operator() -> Operator:
        op = build_operator(node, left.schema, right.schema, left.wm_time, right.wm_time, ttl_ns, max_bytes,
                            None if low.explain else backend)
        read = {k.step.tag for k in low.plan.children(node) if isinstance(k.step, LateOutput)}
        op.late_sides_read = (LATE_TAGS["left"] in read, LATE_TAGS["right"] in read)
        return op

    feeders = [_feeder(low, left, 0), _feeder(low, right, 1)]
    parallel = keyed_parallelism(node, low.config)
    op_stages = []
    if parallel <= 1:
        stage = new_stage(low.stages)
        op = operator()
        low.stages[stage].operators.append(op)
        low.state_ops.append(op)
        op_stages.append(stage)
    else:
        for f, at_side, keys in ((feeders[0], left, step.left_on), (feeders[1], right, step.right_on)):
            low.stages[f].partitioner = HashPartitioner(at_side.schema, list(keys), parallel, node.name, types)
        for i in range(parallel):
            idx = new_stage(low.stages, name=f"{node.name}#{i}")
            op = operator()
            op.name = f"{node.name}#{i}"
            # Restore picks a subtask's rows by the left key names (snapshots keep the keys
            # of both sides under them) hashed as the common types, as the exchange does.
            op.placement = placement(step.left_on, parallel, i, types)
            low.stages[idx].operators.append(op)
            low.stages[idx].origin = i
            low.state_ops.append(op)
            op_stages.append(idx)
        stage = merge_stage(low.stages, op_stages, f"{node.name}.merge")
    for s in op_stages:
        low.stages[s].n_inputs = 2
        low.stages[s].sides = [0, 1]
        for f in feeders:
            low.stages[f].children.append(s)
    for late in [k for k in low.plan.children(node) if isinstance(k.step, LateOutput)]:
        src = left if late.step.tag == LATE_TAGS["left"] else right
        idx = side_stage(low.stages, op_stages, late.step.tag, late.name)
        for k in low.plan.children(late):
            low.lower(k, At(idx, src.schema, src.wm_time, via=late))
    out_schema = join_schema(node, left.schema, right.schema, left.wm_time, right.wm_time)
    return node, At(stage, out_schema, left.wm_time, via=node)
