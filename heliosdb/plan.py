"""Logical plan -> physical plan: the planner's passes, in the order they run.

:func:`build` types every step (``planner.schema``), reads only the columns some step uses
(``planner.pruning``), lowers each step into operators placed in stages (``planner.lower``,
with ``planner.fusion``, ``planner.keyed``, ``planner.stages`` and ``planner.parallelism``),
cuts replicated operators into replica stages (``planner.replicas``) and describes the
result (``planner.explain``).  :func:`explain_nodes` is ``explain()``.

Examples
--------
>>> import heliosdb as hdb
>>> from heliosdb.logical import Node, Sink
>>> env = hdb.StreamEnvironment()
>>> s = env.from_iterable([{"x": 1, "y": 2}]).filter(hdb.col("x") > 0)
>>> plan, sinks, state, lines = build(env, [Node(Sink(hdb.sinks.memory()), s._node, "out")], explain=True)
>>> len(plan.stages), plan.source.schema.names, lines[-1]
(1, ['x', 'y'], '  memory sink[out]')
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Tuple

from .config import StreamingConfig
from .connectors.base import SourceSpec
from .connectors.composite import CompositeSource
from .errors import PlanError, SchemaError
from .logical import LogicalPlan, Node, Watermark
from .operators.base import Operator
from .operators.clock import time_factor
from .planner.context import At, Lowering
from .planner.explain import Plan, describe_source, describe_stages, report, state_estimates
from .planner.lower import lowering
from .planner.replicas import replicate
from .planner.schema import output_schema
from .planner.stages import new_stage
from .runtime.physical import PhysicalPlan

__all__ = ["Plan", "build", "explain_nodes", "output_schema"]


class Environment(Protocol):
    """What planning reads of a ``StreamEnvironment``: its config."""

    config: StreamingConfig


def build(env: Environment, sinks: List[Node], explain: bool = False
          ) -> Tuple[PhysicalPlan, List[Operator], List[Operator], List[str]]:
    """(PhysicalPlan, sink operators, state operators, explain lines) for these sinks.

    With ``explain`` nothing is bound or compiled: sinks are placeholders, so explaining a
    plan has no side effects.
    """
    from .kernels import warmup

    if not explain:
        warmup()      # once per process: no batch waits for the compiler
    low = lowering(env.config, LogicalPlan(sinks), explain)
    for sink in sinks:
        # Type every step against the full source schema first, so errors list real columns.
        output_schema(sink, low.schemas)
    cfg = env.config
    specs, batching, described = [], [], []
    source_children: List[int] = []
    source_inputs: List[int] = []
    for i, src_node in enumerate(low.plan.sources):
        src = _source_spec(low, src_node)
        specs.append(src)
        batching.append((src_node.step.batch_size or cfg.batch_size,
                         src_node.step.batch_timeout_ns or cfg.batch_timeout_ns))
        described.append(src.describe())
        for k in low.plan.children(src_node):
            idx = new_stage(low.stages)
            source_children.append(idx)
            source_inputs.append(i)
            low.lower(k, At(idx, src.schema, via=src_node))
    if len(specs) == 1:
        reader, source_inputs, name = specs[0].build(), [], low.plan.source.name
    else:
        # The sources of a join: one source task reads them all, one position per checkpoint.
        clocks = [_clock(low, n, s) for n, s in zip(low.plan.sources, specs)]
        reader = CompositeSource(specs, [b for b, _ in batching], [t for _, t in batching], clocks).build()
        name = "+".join(n.name for n in low.plan.sources)
    plan = replicate(PhysicalPlan(
        source=reader, source_children=source_children, stages=low.stages,
        batch_size=batching[0][0], batch_timeout_ns=min(t for _, t in batching),
        source_name=name, source_inputs=source_inputs,
        input_batching=batching if len(specs) > 1 else [],
    ))
    lines = describe_source(plan, described, [n.name for n in low.plan.sources]) + describe_stages(plan.stages)
    return plan, low.sink_ops, low.state_ops, lines


def _source_spec(low: Lowering, src_node: Node) -> SourceSpec:
    """The source of ``src_node`` as the job reads it: only the columns some step uses, and
    rows without an event time as its bad records when a watermark right after asks so."""
    src = src_node.step.source
    needed = low.needed_after(src_node, None)
    if needed is not None and set(needed) != set(src.schema.names):
        # Read only what some step uses (a copy: the stream may run again with other sinks).
        src = src.project([c for c in src.schema.names if c in needed])
    for k in low.plan.children(src_node):
        st = k.step.strategy if isinstance(k.step, Watermark) else None
        if st is not None and st.on_null == "source":
            # Rows without an event time are the source's bad records (its on_error).
            src = src.check_event_time(st.time)
    return src


def _clock(low: Lowering, src_node: Node, src: SourceSpec) -> Optional[Tuple[str, int, int]]:
    """The event time of a join's input as its reader can see it (its time column, ns per
    unit, the disorder bound), for reading the inputs aligned: when the source's one step
    after it is its watermark, on a column the source gives; else None."""
    kids = low.plan.children(src_node)
    if len(kids) != 1 or not isinstance(kids[0].step, Watermark):
        return None
    st = kids[0].step.strategy
    if st.time not in src.schema.names:
        return None
    try:
        factor = time_factor(src.schema, st.time, kids[0].name)
    except SchemaError:
        return None            # the watermark step reports it
    return st.time, factor, st.max_out_of_orderness_ns


def explain_nodes(env: Environment, sinks: List[Node],
                  events_per_second: Optional[float] = None) -> Plan:
    """The :class:`Plan` of these sinks: stages after fusion, parallelism, state estimates."""
    if events_per_second is not None and (isinstance(events_per_second, bool) or not
                                          isinstance(events_per_second, (int, float)) or events_per_second <= 0):
        raise PlanError(f"explain(events_per_second=) must be a positive number, got {events_per_second!r}")
    plan, _, _, lines = build(env, sinks, explain=True)
    return report(env.config, plan, lines, state_estimates(env.config, sinks, events_per_second))
