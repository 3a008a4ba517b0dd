"""explain(): the physical plan as text, and the user guide's state memory estimate.

Each stage is one entry: its threads and parallelism, what it feeds (and how: by hash of the
keys, round-robin to replicas), then its operators; the parallel subtasks of a keyed step are
shown once, with their count.  Each stateful step gets the estimate ``events/s x window
seconds x event bytes x parallelism``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import pyarrow as pa

from ..config import DEFAULT_VARIABLE_WIDTH_BYTES, StreamingConfig, fusion_enabled
from ..logical import Join, LogicalPlan, Node, RunningAggregate, WindowAggregate
from ..operators.fused import FusedOperator
from ..runtime.physical import PhysicalPlan, PhysicalStage
from .parallelism import keyed_parallelism
from .pruning import keyed_inputs
from .schema import event_time, output_schema


@dataclass
class StateEstimate:
    """The user guide's state memory estimate for one stateful step:
    ``events_per_second x window_s x event_bytes x parallelism`` bytes.

    ``rate_from`` says where events/s came from (an ``explain()`` argument or the source's
    declared rate); ``bytes`` is None when events/s is unknown or the state is unbounded.

    >>> StateEstimate("w", 1000.0, "given", 60.0, "window size", 24, [], 2).bytes
    2880000.0
    """

    step: str
    events_per_second: Optional[float]
    rate_from: str
    window_s: Optional[float]
    window_from: str
    event_bytes: int
    columns: List[Tuple[str, str, int]]
    parallelism: int
    #: The step keeps input rows themselves (a join), not per-key aggregates.
    keeps_rows: bool = False

    @property
    def bytes(self) -> Optional[float]:
        if self.events_per_second is None or self.window_s is None:
            return None
        return self.events_per_second * self.window_s * self.event_bytes * self.parallelism

    def describe(self) -> str:
        cols = ", ".join(f"{n} {t} {b}" for n, t, b in self.columns)
        rate = ("? events/s (pass explain(events_per_second=))" if self.events_per_second is None
                else f"{self.events_per_second:,.0f} events/s ({self.rate_from})")
        window = (f"unbounded ({self.window_from})" if self.window_s is None
                  else f"{self.window_s:g} s ({self.window_from})")
        total = "?" if self.bytes is None else _human_bytes(self.bytes)
        return (f"{self.step}: {rate} x {window} x {self.event_bytes} B/event ({cols}) x parallelism "
                f"{self.parallelism} = {total}")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.0f} B"  # pragma: no cover


@dataclass
class Plan:
    """The physical plan of a job, for reading: ``print(plan)`` or a notebook's HTML view.

    ``estimates`` holds the state memory estimate of each stateful step (the user guide's
    formula); ``state_bytes`` is their total (None if any is unknown).
    """

    lines: List[str]
    estimates: List[StateEstimate] = field(default_factory=list)

    @property
    def state_bytes(self) -> Optional[float]:
        sizes = [e.bytes for e in self.estimates]
        return None if any(b is None for b in sizes) else float(sum(sizes))

    def __str__(self) -> str:
        return "\n".join(self.lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        out = "<pre>" + html.escape(str(self)) + "</pre>"
        if self.estimates:
            rows = "".join(
                f"<tr><td>{html.escape(e.step)}</td>"
                f"<td>{'?' if e.events_per_second is None else f'{e.events_per_second:,.0f}'}"
                f" <i>({html.escape(e.rate_from)})</i></td>"
                f"<td>{'unbounded' if e.window_s is None else f'{e.window_s:g}'}</td>"
                f"<td>{e.event_bytes}</td><td>{e.parallelism}</td>"
                f"<td><b>{'?' if e.bytes is None else html.escape(_human_bytes(e.bytes))}</b></td></tr>"
                for e in self.estimates)
            out += ("<table><tr><th>stateful step</th><th>events/s</th><th>window s</th>"
                    "<th>bytes/event</th><th>parallelism</th><th>state estimate</th></tr>"
                    f"{rows}</table>")
        return out


def describe_stages(stages: List[PhysicalStage]) -> List[str]:
    """One entry per stage: its threads and parallelism, what it feeds, its operators (the
    parallel subtasks of a keyed step are shown once, with their count)."""
    producers: Dict[int, List[int]] = {}
    for i, st in enumerate(stages):
        for c in st.children:
            producers.setdefault(c, []).append(i)
    group: Dict[int, List[int]] = {}          # first subtask -> all of them
    hidden: Set[int] = set()
    for m, st in enumerate(stages):
        subs = producers.get(m, [])
        if st.n_inputs > 1 and len(subs) == st.n_inputs and not st.sides:
            group[subs[0]] = subs
            hidden.update(subs[1:])

    def name(i: int) -> str:
        subs = group.get(i)
        return f"{stages[i].name}..{stages[subs[-1]].name}" if subs else stages[i].name

    lines = []
    for i, st in enumerate(stages):
        if i in hidden:
            continue
        subs = group.get(i, [i])
        kids = [c for c in st.children if c not in hidden]
        kids += [c for cs in st.side_children.values() for c in cs]
        down = ", ".join(name(c) for c in kids) or "-"
        how = (" by hash of " + ", ".join(st.partitioner.keys) if st.partitioner else
               " round-robin" if st.dispatch else "")
        merge = f", merges {st.n_inputs} inputs" if st.n_inputs > 1 else ""
        if st.sides:
            ins = {side: [name(p) for p in producers.get(i, []) if st.sides[stages[p].origin] == side]
                   for side in (0, 1)}
            merge = f", joins left from {', '.join(ins[0])} and right from {', '.join(ins[1])}"
        if st.resequence:
            merge += " in order"
        threads = (f"threads {subs[0] + 2}-{subs[-1] + 2}" if len(subs) > 1 else f"thread {i + 2}")
        lines.append(f"{name(i)} ({threads}, parallelism {len(subs)}{merge}) -> {down}{how}")
        for op in st.operators:
            lines.append(f"  {op.describe()}")
            if isinstance(op, FusedOperator):
                steps = len(op.program.steps)
                fused = f"{steps} steps fused into one kernel; " if steps > 1 else ""
                lines.append(f"    {fused}out: {', '.join(op.output_schema.names)}")
    return lines


def describe_source(plan: PhysicalPlan, described: List[str], names: List[str]) -> List[str]:
    """The source's lines: its name, ``described`` (what each input reads), its thread and
    replicas; a source of several inputs (the sources of a join) lists each input, its
    batching and the stages it feeds."""
    if len(described) == 1:
        line = f"source [{plan.source_name}] {described[0]} (thread 1)"
        if plan.source_dispatch is not None:
            line += f" -> round-robin to {plan.source_dispatch.n} replicas"
        return [line]
    lines = [f"source [{plan.source_name}] {len(described)} inputs read in turn (thread 1)"]
    for i, (n, d) in enumerate(zip(names, described)):
        kids = [plan.stages[c].name for c, k in zip(plan.source_children, plan.source_inputs) if k == i]
        size, timeout = plan.input_batching[i]
        lines.append(f"  input {i} [{n}] {d}, batch_size={size:,} batch_timeout={timeout / 1e6:g} ms "
                     f"-> {', '.join(kids)}")
    return lines


def _value_bytes(t: pa.DataType, payload: int) -> int:
    """Bytes one value of type ``t`` takes: exact for fixed-width types; offsets plus an assumed
    ``payload`` for strings and binaries; the index for dictionaries.

    >>> _value_bytes(pa.float64(), 16), _value_bytes(pa.string(), 16)
    (8, 20)
    """
    if pa.types.is_dictionary(t):
        return _value_bytes(t.index_type, payload)
    if pa.types.is_boolean(t):
        return 1
    try:
        return max(t.bit_width // 8, 1)
    except ValueError:
        pass
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return 8 + payload
    return 4 + payload


def state_estimates(config: StreamingConfig, sinks: List[Node],
                    events_per_second: Optional[float]) -> List[StateEstimate]:
    """The user guide's estimate for every stateful step of these sinks' pipelines."""
    sources = [src.step.source for src in LogicalPlan(sinks).sources]
    rates = [s.declared_rate for s in sources]
    declared = None if any(r is None for r in rates) else sum(rates)
    if events_per_second is not None:
        rate, rate_from = float(events_per_second), "explain(events_per_second=)"
    elif declared:
        rate, rate_from = float(declared), "the source's declared rate"
    else:
        rate, rate_from = None, "unknown"
    payload = DEFAULT_VARIABLE_WIDTH_BYTES
    out, seen, cache = [], set(), {}
    for sink in sinks:
        for n in _upstream(sink):
            if not isinstance(n.step, (WindowAggregate, RunningAggregate, Join)) or id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n.step, Join):
                out.append(_join_estimate(config, n, rate, rate_from, cache, payload))
                continue
            wm_time = event_time(n.parent)
            schema = output_schema(n.parent, cache)
            cols = [c for c in schema.names if c in (keyed_inputs(n, wm_time) or set(schema.names))]
            sized = [(c, str(schema.field(c).type), _value_bytes(schema.field(c).type, payload))
                     for c in cols]
            if isinstance(n.step, WindowAggregate):
                size, what = n.step.spec.state_span()
            else:
                size, what = (n.step.ttl or (None, None))[0], "state TTL"
                if size is None and config.state is not None:
                    size = config.state.ttl_ns
                if size is None:
                    what = "running aggregate without a TTL"
            out.append(StateEstimate(n.name, rate, rate_from, None if size is None else size / 1e9,
                                     what, sum(b for _, _, b in sized), sized,
                                     keyed_parallelism(n, config)))
    return out


def _upstream(node: Node) -> List[Node]:
    """``node`` and every node before it, inputs before the nodes reading them (a join's left
    input before its right): for one pipeline, its chain from the source."""
    out: List[Node] = []
    seen: Set[int] = set()
    stack: List[Tuple[Node, bool]] = [(node, False)]
    while stack:
        n, ready = stack.pop()
        if ready:
            out.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((p, False) for p in reversed(n.inputs))
    return out


def _join_estimate(config: StreamingConfig, n: Node, rate: Optional[float], rate_from: str,
                   cache: dict, payload: int) -> StateEstimate:
    """A join keeps whole rows of both inputs: for its window, its interval, its TTL (a regular
    join), or, as-of, the latest right row of each key and the rows waiting for the watermark."""
    step = n.step
    sized = []
    for side, parent in (("left", n.parent), ("right", n.right)):
        schema = output_schema(parent, cache)
        sized.append([(f"{side}.{f.name}", str(f.type), _value_bytes(f.type, payload)) for f in schema])
    if step.join_kind == "window":
        size, what = step.window.state_span()
    elif step.join_kind == "interval":
        size, what = step.between[1] - step.between[0], "interval width"
    elif step.join_kind == "regular":
        size, what = step.ttl_ns or config.state.ttl_ns, "state TTL"
        if size is None:
            what = "regular join without a TTL"
    else:
        size, what = None, "as-of join: a right row per key and the rows waiting for the watermark"
    widest = max(sized, key=lambda cols: sum(b for _, _, b in cols))
    return StateEstimate(n.name, rate, rate_from, None if size is None else size / 1e9, what,
                         sum(b for _, _, b in widest), sized[0] + sized[1], keyed_parallelism(n, config),
                         keeps_rows=True)


def report(config: StreamingConfig, plan: PhysicalPlan, lines: List[str],
           estimates: List[StateEstimate]) -> Plan:
    """The :class:`Plan` of ``plan``: a header with the batching settings, the stages
    (``lines``) and the state estimates with their total."""
    header = [f"batch_size={plan.batch_size:,}  batch_timeout={plan.batch_timeout_ns / 1e6:g} ms  "
              f"buffer_size={config.buffer_size:,}  fusion={'on' if fusion_enabled() else 'off'}"]
    tail = []
    if estimates:
        tail.append("state memory estimate (user guide: events/s x window seconds x event bytes x "
                    "parallelism; an upper bound, the engine keeps per-key aggregates, not events):")
        if any(e.keeps_rows for e in estimates):
            tail.append("  (a join keeps the rows of both inputs themselves, for its window, interval or TTL)")
        tail += [f"  {e.describe()}" for e in estimates]
        total = sum(e.bytes for e in estimates if e.bytes is not None)
        known = all(e.bytes is not None for e in estimates)
        tail.append(f"  total: {_human_bytes(total) if known else '?'} (memory backend bound "
                    f"{_human_bytes(config.state_backend.max_size_bytes)})")
    return Plan(header + lines + tail, estimates)
