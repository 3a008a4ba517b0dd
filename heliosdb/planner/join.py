"""Joins: a step of two inputs, typed, checked and lowered into a stage that reads both.

- **Typing** (:func:`join_schema`): the key columns must exist on their side and have
  compatible types (``int32`` and ``int64``, ``int64`` and ``float64``, ``string`` and
  ``large_string``, timestamps of two units: pyarrow's permissive promotion gives the type
  both are compared and hashed as); a window, interval or as-of join needs event time on both
  sides.  The output is Polars' rule (:func:`join_columns`): a window join's
  ``window_start``, ``window_end``, then the left columns, then the right ones, the right keys
  left out when they were named alike (``on=``: kept once, as the common type), clashes
  suffixed.
- **Lowering** (:func:`lower_join`): the planner walks the plan from each source in turn, so
  a join is reached once from each input; the first arrival is remembered, the second builds
  the join.  Each input's rows leave from a stage of their own (``origin`` 0 left, 1 right)
  into the join's stage, whose gate takes both (``PhysicalStage.sides``) and whose watermark
  is the minimum of the two.  With parallelism ``n`` both inputs are hash-exchanged on their
  keys, cast to the common types first so equal keys meet, to ``n`` subtasks placed by the
  left key names; a merge stage follows.  ``late_output("left" | "right")`` are side stages
  reading the join's ``late_left`` / ``late_right`` rows.

Examples
--------
>>> import pyarrow as pa
>>> from heliosdb.logical import Join
>>> left = pa.schema([("k", pa.int32()), ("v", pa.float64())])
>>> right = pa.schema([("k", pa.int64()), ("v", pa.float64()), ("w", pa.string())])
>>> step = Join("regular", ("k",), ("k",), ttl_ns=10**9, coalesce_keys=True)
>>> [f"{name} {t}" for name, t, _, _ in join_columns(step, left, right, [pa.int64()])]
['k int64', 'v double', 'v_right double', 'w string']
"""
from __future__ import annotations

from typing import List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.types as pat

from ..errors import PlanError
from ..logical import Join, LateOutput, Node
from ..operators.base import Operator, Placement
from ..operators.exchange import HashPartitioner
from .context import At, Lowering
from .parallelism import keyed_parallelism
from .stages import merge_stage, new_stage, side_stage

#: The columns a window join puts first, as window aggregates do.
WINDOW_COLUMNS = ("window_start", "window_end")
_WINDOW_TYPE = pa.timestamp("ns", tz="UTC")

#: One output column: (name, type, side it comes from (None: the window's), input column).
Column = Tuple[str, pa.DataType, Optional[int], Optional[str]]

#: Which side's late rows a ``late_output(side)`` reads: its side-output tag.
LATE_TAGS = {"left": "late_left", "right": "late_right"}


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pat.is_dictionary(t) else t


def common_key_type(left: pa.DataType, right: pa.DataType) -> Optional[pa.DataType]:
    """The type keys of types ``left`` and ``right`` are compared and hashed as (pyarrow's
    permissive promotion, dictionaries as their values), or None when they cannot be.

    >>> common_key_type(pa.int32(), pa.int64()), common_key_type(pa.int64(), pa.float64())
    (DataType(int64), DataType(double))
    >>> common_key_type(pa.int64(), pa.string()) is None
    True
    """
    lt, rt = _value_type(left), _value_type(right)
    if lt == rt:
        return lt
    try:
        unified = pa.unify_schemas([pa.schema([("k", lt)]), pa.schema([("k", rt)])],
                                   promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return unified.field("k").type


def key_types(node: Node, left: pa.Schema, right: pa.Schema) -> List[pa.DataType]:
    """The common type of each pair of key columns; PlanError naming the step, the column
    and its side when one is missing, or both columns when their types do not match."""
    step = node.step
    for side, keys, schema in (("left", step.left_on, left), ("right", step.right_on, right)):
        for k in keys:
            if k not in schema.names:
                hint = ""
                if step.coalesce_keys:
                    hint = " (on= names columns of both sides; use left_on=/right_on= when they differ)"
                raise PlanError(f"step {node.name!r}: join key {k!r} is not a column of the {side} input; "
                                f"it has {schema.names}{hint}")
    out = []
    for lk, rk in zip(step.left_on, step.right_on):
        lt, rt = left.field(lk).type, right.field(rk).type
        t = common_key_type(lt, rt)
        if t is None:
            raise PlanError(f"step {node.name!r}: join keys left {lk!r} ({lt}) and right {rk!r} ({rt}) have "
                            "types that cannot be compared; cast one of them (with_columns) first")
        out.append(t)
    return out


def join_columns(step: Join, left: pa.Schema, right: pa.Schema, types: List[pa.DataType]) -> List[Column]:
    """The output columns of join ``step`` (see the module docstring), each with where it
    comes from; PlanError when a suffixed name still clashes."""
    cols: List[Column] = []
    if step.join_kind == "window":
        cols += [(c, _WINDOW_TYPE, None, None) for c in WINDOW_COLUMNS]
    keys = dict(zip(step.left_on, types)) if step.coalesce_keys else {}
    for f in left:
        cols.append((f.name, keys.get(f.name, f.type), 0, f.name))
    names = {c[0] for c in cols}
    dropped = set(step.right_on) if step.coalesce_keys else set()
    for f in right:
        if f.name in dropped:
            continue
        name = f.name if f.name not in names else f.name + step.suffix
        if name in names:
            raise PlanError(f"join(): the right column {f.name!r} clashes with the output column {name!r} "
                            f"even with suffix {step.suffix!r}; rename it, or pass another suffix=")
        names.add(name)
        cols.append((name, f.type, 1, f.name))
    return cols


def check_time(node: Node, left_time: Optional[str], right_time: Optional[str]) -> None:
    """Window, interval and as-of joins need event time on both inputs."""
    if node.step.join_kind == "regular":
        return
    for side, t in (("left", left_time), ("right", right_time)):
        if t is None:
            raise PlanError(
                f"step {node.name!r}: a {node.step.join_kind} join needs event time on both inputs, and the "
                f"{side} input has none; call .with_watermark(time=..., max_out_of_orderness=...) on it "
                "before the join")


def join_schema(node: Node, left: pa.Schema, right: pa.Schema, left_time: Optional[str],
                right_time: Optional[str]) -> pa.Schema:
    """The output schema of join ``node`` over its inputs' schemas (checks it first)."""
    types = key_types(node, left, right)
    check_time(node, left_time, right_time)
    return pa.schema([pa.field(n, t) for n, t, _, _ in join_columns(node.step, left, right, types)])


def side_inputs(node: Node, left: pa.Schema, right: pa.Schema, side: int,
                needed: Optional[Set[str]], time: Optional[str]) -> Optional[Set[str]]:
    """The columns of input ``side`` the join and the steps after it read (``needed``: of
    its output, None: all): the keys, the event time, and what becomes a needed column."""
    step = node.step
    schema = left if side == 0 else right
    if needed is None:
        return None
    types = key_types(node, left, right)
    cols = set(step.left_on if side == 0 else step.right_on)
    if time is not None:
        cols.add(time)
    for name, _, s, c in join_columns(step, left, right, types):
        if s == side and name in needed:
            cols.add(c)
    return {c for c in cols if c in schema.names}


def build_operator(node: Node, left: pa.Schema, right: pa.Schema, left_time: Optional[str],
                   right_time: Optional[str], types: List[pa.DataType], max_bytes: int,
                   backend=None) -> Operator:
    """The join operator of step ``node`` (``heliosdb.operators.join``)."""
    raise PlanError(f"step {node.name!r}: {node.step.join_kind} joins have no operator in this build of "
                    "heliosdb (heliosdb.operators.join is missing)")


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

    def operator() -> Operator:
        op = build_operator(node, left.schema, right.schema, left.wm_time, right.wm_time, types, max_bytes,
                            None if low.explain else backend)
        op.late_output_read = any(isinstance(k.step, LateOutput) for k in low.plan.children(node))
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
            op.placement = Placement(i, parallel, tuple(step.left_on), tuple(types))
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
