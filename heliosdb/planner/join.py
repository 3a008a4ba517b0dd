"""Joins: a step of two inputs, typed, checked and lowered into a stage that reads both.

- **Typing** (:func:`join_schema`): the key columns must exist on their side and be
  comparable (:func:`comparable`: ``int32`` with ``int64``, ``string`` with ``large_string``,
  ...); a window, interval or as-of join needs event time on both sides.  The output is
  Polars' rule (:func:`join_columns`, as ``heliosdb.operators.join.output_schema``): a
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
>>> step = Join("regular", ("k",), ("k",), ttl_ns=10**9, coalesce_keys=True)
>>> [f"{f.name} {f.type}" for f, _, _ in join_columns(step, left, right, [pa.int64()])]
['k int64', 'v double', 'v_right double', 'w string']
"""
from __future__ import annotations

from typing import List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.types as pat

from ..aggregates.codecs import value_kind
from ..errors import PlanError
from ..logical import Join, LateOutput, Node
from ..operators.base import Operator
from ..operators.exchange import HashPartitioner
from .context import At, Lowering
from .parallelism import keyed_parallelism, placement
from .stages import merge_stage, new_stage, side_stage

#: The columns a window join puts first, as window aggregates do.
WINDOW_COLUMNS = ("window_start", "window_end")
_WINDOW_TYPE = pa.timestamp("ns", tz="UTC")

#: One output column: (its field, the side it comes from (None: the window's), input column).
Column = Tuple[pa.Field, Optional[int], Optional[str]]

#: Which side's late rows a ``late_output(side)`` reads: its side-output tag.
LATE_TAGS = {"left": "late_left", "right": "late_right"}


def comparable(left: pa.DataType, right: pa.DataType) -> bool:
    """Whether join keys of types ``left`` and ``right`` can be compared: integers of any
    width with integers (booleans with booleans), floats with floats, ``string`` with
    ``large_string``, timestamps of the same unit, other types with the same type.  The
    keys are coded as int64 alike (``aggregates.codecs``), so equal keys hash alike.

    >>> comparable(pa.int32(), pa.int64()), comparable(pa.int64(), pa.float64())
    (True, False)
    """
    kind = value_kind(left)
    if kind is None or kind != value_kind(right):
        return False
    if kind == "int":
        return pat.is_boolean(left) == pat.is_boolean(right)
    if kind == "time":
        if pat.is_timestamp(left) and pat.is_timestamp(right):
            return left.unit == right.unit
        return left == right
    return True


_INTS = {(8, True): pa.int8(), (16, True): pa.int16(), (32, True): pa.int32(), (64, True): pa.int64(),
         (8, False): pa.uint8(), (16, False): pa.uint16(), (32, False): pa.uint32(), (64, False): pa.uint64()}


def common_type(left: pa.DataType, right: pa.DataType) -> pa.DataType:
    """The type both sides' values of a pair of comparable keys fit in (as the join operators
    keep a coalesced key and their snapshots' keys): the wider integer or float,
    ``large_string`` if either is, else the left type.

    >>> common_type(pa.int32(), pa.int64()), common_type(pa.uint8(), pa.int16())
    (DataType(int64), DataType(int64))
    """
    if left == right:
        return left
    if pat.is_integer(left) and pat.is_integer(right):
        signed = pat.is_signed_integer(left)
        if signed != pat.is_signed_integer(right):
            return pa.int64()
        return _INTS[(max(left.bit_width, right.bit_width), signed)]
    if pat.is_floating(left) and pat.is_floating(right):
        return pa.float64() if max(left.bit_width, right.bit_width) == 64 else left
    if pat.is_large_string(right):
        return right
    return left


def key_types(node: Node, left: pa.Schema, right: pa.Schema) -> List[pa.DataType]:
    """The type each pair of key columns is compared and hashed as (:func:`common_type`);
    PlanError naming the step, the column and its side when one is missing, or both columns
    when they cannot be compared."""
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
        if not comparable(lt, rt):
            raise PlanError(f"step {node.name!r}: join keys left {lk!r} ({lt}) and right {rk!r} ({rt}) cannot be "
                            f"compared; cast one of them first, e.g. with_columns({rk}=col({rk!r}).cast(...))")
        out.append(common_type(lt, rt))
    return out


def join_columns(step: Join, left: pa.Schema, right: pa.Schema, types: List[pa.DataType]) -> List[Column]:
    """The output columns of join ``step`` (see the module docstring), each with where it
    comes from; the columns of a side an outer join pads with nulls are nullable.  PlanError
    when a name clashes."""
    pad_left = step.how in ("right", "full")
    pad_right = step.how in ("left", "full") or step.join_kind == "asof"
    cols: List[Column] = []
    if step.join_kind == "window":
        cols += [(pa.field(c, _WINDOW_TYPE, False), None, None) for c in WINDOW_COLUMNS]
    taken = {c[0].name for c in cols}
    right_key = dict(zip(step.left_on, step.right_on)) if step.coalesce_keys else {}
    key_type = dict(zip(step.left_on, types))
    for f in left:
        if f.name in taken:
            raise PlanError(f"join(): the left input's column {f.name!r} clashes with the window join's own "
                            "window_start/window_end; rename it first")
        nullable = f.nullable or pad_left
        if f.name in right_key:
            nullable = f.nullable or (pad_left and right.field(right_key[f.name]).nullable)
            f = f.with_type(key_type[f.name])        # a right row's key must fit it too
        cols.append((f.with_nullable(nullable), 0, f.name))
        taken.add(f.name)
    dropped = set(right_key.values())
    for f in right:
        if f.name in dropped:
            continue
        name = f.name if f.name not in taken else f.name + step.suffix
        if name in taken:
            raise PlanError(f"join(): the right column {f.name!r} clashes with the output column {name!r} "
                            f"even with suffix {step.suffix!r}; rename it, or pass another suffix=")
        taken.add(name)
        cols.append((pa.field(name, f.type, f.nullable or pad_right, f.metadata), 1, f.name))
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
    return pa.schema([f for f, _, _ in join_columns(node.step, left, right, types)])


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
    for f, s, c in join_columns(step, left, right, types):
        if s == side and f.name in needed:
            cols.add(c)
    return {c for c in cols if c in schema.names}


def build_operator(node: Node, left: pa.Schema, right: pa.Schema, left_time: Optional[str],
                   right_time: Optional[str], ttl_ns: Optional[int], max_bytes: int,
                   backend=None) -> Operator:
    """The join operator of step ``node`` over its inputs' schemas (``heliosdb.operators.join``):
    event time ``left_time`` / ``right_time`` (a regular join runs on event time when both
    sides have it, else its TTL ``ttl_ns`` runs on the wall clock), state on ``backend``."""
    from ..operators.join import JoinSpec, make_join

    s = node.step
    if s.join_kind == "regular" and (left_time is None or right_time is None):
        left_time = right_time = None
    spec = JoinSpec(s.join_kind, s.left_on, s.right_on, how=s.how, suffix=s.suffix,
                    coalesce_keys=s.coalesce_keys, left_time=left_time, right_time=right_time,
                    window=s.window, between=s.between, tolerance_ns=s.tolerance_ns, ttl_ns=ttl_ns)
    return make_join(spec, left, right, name=node.name, max_state_bytes=max_bytes, backend=backend)


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
