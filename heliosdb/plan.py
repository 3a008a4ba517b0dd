"""Logical plan -> physical stages: operator fusion, column pruning, stage cuts; explain().

- Consecutive ``filter``/``select``/``with_columns`` steps, and ``map``/``filter``/``process``
  Python functions that translate (``heliosdb.pyfunc``), become ONE fused kernel.
- Columns no later step reads are dropped as early as possible (at the source if it can).
- A stage (one thread) starts after the source and at each keyed operator, so the stateless
  kernel and the keyed aggregation run on different cores.
- Parallelism: a fused kernel is marked for replicas, a tumbling/sliding event-time window gets
  pre-aggregating replicas and a final merging stage (``_two_phase_window``), other keyed steps
  a hash exchange (``_parallel_window``); ``heliosdb.parallel.replicate`` then cuts the stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

import pyarrow as pa

from .config import DEFAULT_VARIABLE_WIDTH_BYTES, fusion_enabled
from .errors import PlanError
from .kernels.codegen import FusedProgram
from .kernels.window import window_grid
from .operators.base import Operator, Placement
from .operators.fused import FusedOperator, InspectOperator, MapBatchesOperator
from .operators.keyed import KeyedAggregate
from .operators.pyfunc import PythonFunctionOperator
from .operators.rebatch import RebatchOperator
from .operators.watermark import WatermarkAssigner
from .pyfunc import is_function_step, plan_function
from .parallel import replicate
from .runtime.executor import PhysicalPlan, PhysicalStage
from .stream import Node

if TYPE_CHECKING:  # pragma: no cover
    from .environment import StreamEnvironment

FUSABLE = ("filter", "select", "with_columns")


def _fusable(node: Node, schema: pa.Schema) -> bool:
    """Whether ``node`` runs in a fused kernel: expression steps always, ``map``/``filter``/
    ``process`` functions when they compile, and ``unbatch()`` (which computes nothing)."""
    if is_function_step(node):
        return plan_function(node, schema).compiled
    return node.kind in FUSABLE or node.kind == "unbatch"


def _apply(program: FusedProgram, node: Node) -> None:
    if is_function_step(node):
        plan_function(node, program.output_schema()).apply(program)
    elif node.kind == "unbatch":
        pass
    elif node.kind == "filter":
        program.add_filter(node.params["predicate"], node.name)
    elif node.kind == "with_columns":
        program.add_columns(node.params["exprs"], node.name)
    else:
        program.select(node.params["items"], node.name)


def _map_batches_schema(node: Node, schema: pa.Schema) -> pa.Schema:
    if node.params.get("schema") is not None:
        return node.params["schema"]
    try:
        out = node.params["fn"](pa.RecordBatch.from_pylist([], schema=schema))
    except Exception as exc:
        raise PlanError(
            f"step {node.name!r}: map_batches could not infer its output schema by calling the "
            f"function on an empty batch ({type(exc).__name__}: {exc}); pass schema="
        ) from exc
    if not isinstance(out, (pa.RecordBatch, pa.Table)):
        raise PlanError(
            f"step {node.name!r}: the map_batches function must return a pyarrow RecordBatch or "
            f"Table, got {type(out).__name__}"
        )
    return out.schema


def _chain(node: Node) -> List[Node]:
    out = []
    n: Optional[Node] = node
    while n is not None:
        out.append(n)
        n = n.parent
    return out[::-1]


def output_schema(node: Node, cache: Optional[Dict[int, pa.Schema]] = None) -> pa.Schema:
    """The schema of ``node``'s output, typing every step on the way (raises on errors).

    ``cache`` (node id -> schema) lets one planning pass type each step once, so a
    ``map_batches`` function is called on an empty batch once, not once per later step.
    """
    cache = {} if cache is None else cache
    schema: Optional[pa.Schema] = None
    wm_time: Optional[str] = None
    for n in _chain(node):
        if id(n) not in cache:
            cache[id(n)] = _node_schema(n, schema, wm_time)
        schema = cache[id(n)]
        if n.kind == "watermark":
            wm_time = n.params["strategy"].time
    return schema


def _node_schema(n: Node, schema: Optional[pa.Schema], wm_time: Optional[str]) -> pa.Schema:
    if n.kind == "source":
        return n.params["source"].schema
    if is_function_step(n):
        return plan_function(n, schema).output_schema
    if n.kind in FUSABLE:
        p = FusedProgram.identity(schema)
        _apply(p, n)
        return p.output_schema()
    if n.kind == "map_batches":
        return _map_batches_schema(n, schema)
    if n.kind == "window":
        return _window_op(n, schema, wm_time, 2**62).output_schema
    if n.kind == "keyed_aggregate":
        return _keyed_op(n, schema, 2**62, None).output_schema
    if n.kind == "late_output":
        return output_schema(n.parent.parent, {})      # the window's input
    if n.kind == "watermark":
        WatermarkAssigner(n.name, schema, n.params["strategy"].time, 0)
    return schema


def _window_time(n: Node, wm_time: Optional[str]) -> Optional[str]:
    """The window's event-time column; None means processing time."""
    return n.params["time"] or wm_time


def _window_op(n: Node, schema: pa.Schema, wm_time: Optional[str], max_bytes: int, backend=None):
    return n.params["spec"].build(n.name, schema, n.params["keys"], _window_time(n, wm_time),
                                  n.params["aggs"], max_bytes, n.params.get("lateness", 0), backend)


def _out_of_orderness(n: Node, time_col: Optional[str]) -> Optional[int]:
    """``max_out_of_orderness`` (ns) of the watermark window ``n`` reads: its with_watermark
    step's when that is on the window's time column, else 0 (the window's own assigner);
    None for processing time."""
    if time_col is None:
        return None
    p = n.parent
    while p is not None and p.kind != "watermark":
        p = p.parent
    strategy = p.params["strategy"] if p is not None else None
    return strategy.max_out_of_orderness_ns if strategy is not None and strategy.time == time_col else 0


def _two_phase(n: Node, time_col: Optional[str]) -> bool:
    """Whether window ``n`` runs as pre-aggregating replicas and a final merge: event-time
    windows whose spec says so (windows of panes; sessions merge per key across batches,
    processing time is the arrival at the window itself: both keep the hash exchange)."""
    return n.kind == "window" and time_col is not None and n.params["spec"].two_phase


def _keyed_op(n: Node, schema: pa.Schema, max_bytes: int, state, backend=None) -> KeyedAggregate:
    ttl, every = n.params.get("ttl") or (None, None)
    if ttl is None and state is not None:
        ttl, every = state.ttl_ns, state.cleanup_interval_ns
    return KeyedAggregate(n.name, schema, n.params["keys"], n.params["aggs"], max_bytes, ttl, every, backend)


def _required(n: Node, wm_time: Optional[str]) -> Optional[Set[str]]:
    """Input columns step ``n`` reads (None: all of them)."""
    if n.kind in ("window", "keyed_aggregate"):
        cols = set(n.params["keys"])
        if n.kind == "window" and _window_time(n, wm_time):
            cols.add(_window_time(n, wm_time))
        cols |= {a.column for _, a in n.params["aggs"] if a.column}
        return cols
    return None


@dataclass
class StateEstimate:
    """The user guide's state memory estimate for one stateful step:
    ``events_per_second x window_s x event_bytes x parallelism`` bytes.

    ``rate_from`` says where events/s came from (an ``explain()`` argument or the source's
    declared rate); ``bytes`` is None when events/s is unknown or the state is unbounded.
    """

    step: str
    events_per_second: Optional[float]
    rate_from: str
    window_s: Optional[float]
    window_from: str
    event_bytes: int
    columns: List[Tuple[str, str, int]]
    parallelism: int

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


class _PlannedSink(Operator):
    """Stands in for a sink in explain(): binding the real one would create folders or reset
    a memory sink's results."""

    kind = "sink"

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = f"{kind} sink"


class _Builder:
    def __init__(self, env: "StreamEnvironment", sinks: List[Node], explain: bool = False):
        self.env = env
        self.explain = explain
        self.config = env.config
        self.fuse = fusion_enabled()
        self.sinks = sinks
        sources = {id(s.source()): s.source() for s in sinks}
        if len(sources) != 1:
            raise PlanError(
                f"a job runs one source; these sinks read {len(sources)} different sources. Run "
                "them as separate jobs (one execute() each)"
            )
        self.source = next(iter(sources.values()))
        self.children: Dict[int, List[Node]] = {}
        for s in sinks:
            child = s
            while child.parent is not None:
                kids = self.children.setdefault(id(child.parent), [])
                if child not in kids:
                    kids.append(child)
                child = child.parent
        self.stages: List[PhysicalStage] = []
        self.sink_ops: List[Operator] = []
        self.state_ops: List[Operator] = []
        self.needed: Dict[int, Optional[Set[str]]] = {}
        self.schemas: Dict[int, pa.Schema] = {}     # node id -> output schema, typed once
        names = set()
        for n in self._all_nodes():
            if n.name in names and n.kind != "source":
                raise PlanError(f"two steps are named {n.name!r}; step names must be unique in a job")
            names.add(n.name)

    def _all_nodes(self) -> List[Node]:
        out, stack = [], [self.source]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(self.children.get(id(n), []))
        return out

    # -- column pruning (bottom-up) --------------------------------------------------------------
    def _needed_after(self, n: Node, wm_time: Optional[str]) -> Optional[Set[str]]:
        """Columns of ``n``'s output that some later step reads (None: all)."""
        key = id(n)
        if key in self.needed:
            return self.needed[key]
        result: Optional[Set[str]] = set()
        if n.kind == "watermark":
            wm_time = n.params["strategy"].time
        for c in self.children.get(key, []):
            req = self._needed_before(c, wm_time)
            if req is None or result is None:
                result = None
            else:
                result |= req
        self.needed[key] = result
        return result

    def _needed_before(self, n: Node, wm_time: Optional[str]) -> Optional[Set[str]]:
        if n.kind == "sink":
            return None
        if n.kind in ("map_batches", "inspect", "late_output"):
            return None
        if n.kind in ("window", "keyed_aggregate"):
            if any(k.kind == "late_output" for k in self.children.get(id(n), [])):
                return None            # late events leave with every input column
            return _required(n, wm_time)
        after = self._needed_after(n, wm_time)
        if n.kind == "watermark":
            splits = self._splits(n)
            own = {n.params["strategy"].time} | set(splits.columns if splits is not None else ())
            return None if after is None else after | own
        if n.kind in ("batch", "unbatch"):
            return after
        if after is None:
            return None
        # A fusable step: its input needs what its kept outputs, predicate and checks read.
        schema = self._schema_before(n)
        if not _fusable(n, schema):
            return None               # a Python function run per record sees every column
        p = FusedProgram.identity(schema)
        _apply(p, n)
        p.prune(after)
        cols: Set[str] = set()
        for _, e in p.outputs:
            cols |= e.columns()
        if p.predicate is not None:
            cols |= p.predicate.columns()
        for c in p.checks:
            cols |= c.cond.columns()
        return cols

    def _schema_before(self, n: Node) -> pa.Schema:
        return output_schema(n.parent, self.schemas)

    # -- lowering (top-down) ---------------------------------------------------------------------
    def build(self) -> Tuple[PhysicalPlan, List[str]]:
        src_node = self.source
        src = src_node.params["source"]
        for sink in self.sinks:
            # Type every step against the full source schema first, so errors list real columns.
            output_schema(sink, self.schemas)
        needed = self._needed_after(src_node, None)
        if needed is not None and set(needed) != set(src.schema.names):
            # Read only what some step uses (a copy: the stream may run again with other sinks).
            src = src.project([c for c in src.schema.names if c in needed])
        for k in self.children.get(id(src_node), []):
            st = k.params.get("strategy") if k.kind == "watermark" else None
            if st is not None and st.on_null == "source":
                # Rows without an event time are the source's bad records (its on_error).
                src = src.check_event_time(st.time)
        schema = src.schema
        lines = [f"source [{src_node.name}] {src.describe()} (thread 1)"]
        kids = self.children.get(id(src_node), [])
        source_children = []
        for k in kids:
            idx = self._new_stage()
            source_children.append(idx)
            self._lower(k, schema, idx, None)
        cfg = self.config
        plan = replicate(PhysicalPlan(
            source=src.build(), source_children=source_children, stages=self.stages,
            batch_size=src_node.batch_size or cfg.batch_size,
            batch_timeout_ns=src_node.batch_timeout_ns or cfg.batch_timeout_ns,
            source_name=src_node.name,
        ))
        if plan.source_dispatch is not None:
            lines[0] += f" -> round-robin to {plan.source_dispatch.n} replicas"
        return plan, lines + self._describe()

    def _new_stage(self) -> int:
        self.stages.append(PhysicalStage(f"stage-{len(self.stages)}", []))
        return len(self.stages) - 1

    def _lower(self, node: Node, schema: pa.Schema, stage: int, wm_time: Optional[str]) -> None:
        while True:
            ops = self.stages[stage].operators
            kind = node.kind
            if kind == "unbatch":
                pass                  # ends a batch(n) regrouping; nothing to run
            elif kind == "batch":
                ops.append(RebatchOperator(node.params["size"], node.name))
            elif is_function_step(node) and not _fusable(node, schema):
                f = plan_function(node, schema)
                op = PythonFunctionOperator(f.kind, f.fn, f.name, f.input_schema, f.output_schema,
                                            f.where, f.reason)
                ops.append(op)
                schema = op.output_schema
            elif _fusable(node, schema):
                program = FusedProgram.identity(schema)
                run = node
                fused = [node]
                while True:
                    _apply(program, run)
                    kids = self.children.get(id(run), [])
                    if not self.fuse or len(kids) != 1 or \
                            not _fusable(kids[0], program.output_schema()):
                        break
                    run = kids[0]
                    fused.append(run)
                program.prune(self._needed_after(run, wm_time))
                name = node.name if run is node else f"{node.name}..{run.name}"
                op = FusedOperator(program, name)
                if not self.explain:
                    op.warm()
                if not program.is_identity():       # replicas of a kernel that does nothing: no
                    # Opt-in (set_parallelism or an explicit StreamingConfig(parallelism=)):
                    # on 2 cores replicas measured slower than one kernel thread.
                    op.parallel = max(n.params.get("parallelism") or self.config.parallelism or 1
                                      for n in fused)
                ops.append(op)
                schema = op.output_schema
                node = run
            elif kind == "watermark":
                st = node.params["strategy"]
                splits = self._splits(node)
                ops.append(WatermarkAssigner(node.name, schema, st.time, st.max_out_of_orderness_ns,
                                             st.idle_timeout_ns, self._grid(node), splits,
                                             st.max_drift_ns, on_null=st.on_null))
                wm_time = st.time
            elif kind in ("window", "keyed_aggregate"):
                time_col = _window_time(node, wm_time) if kind == "window" else None
                parallel = node.params.get("parallelism") or self.config.effective_parallelism
                assigner = None
                if time_col is not None and time_col != wm_time:
                    # Before the stage cut (and, with parallelism, before the exchange, so every
                    # subtask sees the same event time): the upstream thread has slack, the
                    # window's is the critical path.  Two-phase: after the replicas.
                    assigner = WatermarkAssigner(f"{node.name}.watermark", schema, time_col, 0,
                                                 grid=self._grid(node, itself=True))
                    wm_time = time_col
                in_schema = schema
                if parallel > 1 and _two_phase(node, time_col):
                    stage, schema, op_stages = self._two_phase_window(node, schema, stage, wm_time,
                                                                      parallel, assigner)
                elif parallel > 1:
                    if assigner is not None:
                        ops.append(assigner)
                    stage, schema, op_stages = self._parallel_window(node, schema, stage, wm_time, parallel)
                else:
                    if assigner is not None:
                        ops.append(assigner)
                    if len(ops) > 1 or (ops and not isinstance(ops[0], WatermarkAssigner)):
                        new = self._new_stage()
                        self.stages[stage].children.append(new)
                        stage, ops = new, self.stages[new].operators
                    op = self._keyed_operator(node, schema, wm_time)
                    ops.append(op)
                    self.state_ops.append(op)
                    schema = op.output_schema
                    op_stages = [stage]
                for late in [k for k in self.children.get(id(node), []) if k.kind == "late_output"]:
                    idx = self._new_stage()
                    self.stages[idx].name = f"{late.name}"
                    self.stages[idx].n_inputs = len(op_stages)
                    for s_ in op_stages:
                        self.stages[s_].side_children.setdefault("late", []).append(idx)
                    for k in self.children.get(id(late), []):
                        self._lower(k, in_schema, idx, wm_time)
            elif kind == "map_batches":
                out_schema = output_schema(node, self.schemas)
                ops.append(MapBatchesOperator(node.params["fn"], node.name, out_schema))
                schema = out_schema
            elif kind == "inspect":
                ops.append(InspectOperator(node.params["fn"], node.name))
            elif kind == "sink":
                spec = node.params["spec"]
                op = _PlannedSink(node.name, spec.kind) if self.explain else spec.bind(schema, node.name)
                ops.append(op)
                self.sink_ops.append(op)
            else:  # pragma: no cover - every kind is handled above
                raise PlanError(f"unknown step kind {kind!r}")
            kids = [k for k in self.children.get(id(node), []) if k.kind != "late_output"]
            if not kids:
                return
            if len(kids) == 1:
                node = kids[0]
                continue
            for k in kids:
                idx = self._new_stage()
                self.stages[stage].children.append(idx)
                self._lower(k, schema, idx, wm_time)
            return

    def _splits(self, node: Node):
        """The splits of the source right before watermark step ``node`` (None: not right
        after a source of several splits): the watermark is kept per split."""
        parent = node.parent
        if parent is None or parent.kind != "source":
            return None
        return parent.params["source"].splits

    def _grid(self, node: Node, itself: bool = False) -> tuple:
        """The watermark grid (kernels/window.py ``window_grid``) of the windows that the
        watermark of ``node`` reaches: the windows after it (and ``node`` itself if
        ``itself``), through any step but another watermark step."""
        specs = []
        todo = [node] if itself else list(self.children.get(id(node), []))
        while todo:
            n = todo.pop()
            if n.kind == "watermark":
                continue
            if n.kind == "window":
                specs.append(n.params["spec"].grid(n.params.get("lateness", 0)))
            todo += self.children.get(id(n), [])
        return window_grid(specs)

    def _two_phase_window(self, node: Node, schema: pa.Schema, stage: int, wm_time: str,
                          parallel: int, assigner: Optional[WatermarkAssigner]
                          ) -> Tuple[int, pa.Schema, List[int]]:
        """``parallel`` replicas pre-aggregate batches (with the stateless kernel before them
        when it has as many replicas) -> one final stage: the watermark assigner and the window,
        which merges their partials in order (operators/preagg.py).  Returns the final stage."""
        pre = node.params["spec"].pre_aggregate(f"{node.name}.pre", schema, node.params["keys"],
                                                 _window_time(node, wm_time), node.params["aggs"],
                                                 None if assigner is None else assigner.bound)
        pre.parallel = parallel
        self.stages[stage].operators.append(pre)
        final = self._new_stage()
        self.stages[stage].children.append(final)
        ops = self.stages[final].operators
        if assigner is not None:
            ops.append(assigner)
        op = self._keyed_operator(node, schema, wm_time)
        ops.append(op)
        self.state_ops.append(op)
        return final, op.output_schema, [final]

    def _parallel_window(self, node: Node, schema: pa.Schema, stage: int, wm_time: str,
                         parallel: int) -> Tuple[int, pa.Schema, List[int]]:
        """Hash exchange -> ``parallel`` window subtasks -> a merge stage; returns the merge."""
        from .operators.exchange import HashPartitioner

        up = self.stages[stage]
        up.partitioner = HashPartitioner(schema, node.params["keys"], parallel, node.name)
        out_schema = schema
        subtasks = []
        for i in range(parallel):
            idx = self._new_stage()
            self.stages[idx].name = f"{node.name}#{i}"
            op = self._keyed_operator(node, schema, wm_time)
            op.name = f"{node.name}#{i}"
            op.placement = Placement(i, parallel, tuple(node.params["keys"]))   # restore: rows of key hash i
            self.stages[idx].operators.append(op)
            self.stages[idx].origin = i
            self.state_ops.append(op)
            up.children.append(idx)
            subtasks.append(idx)
            out_schema = op.output_schema
        merge = self._new_stage()
        self.stages[merge].name = f"{node.name}.merge"
        self.stages[merge].n_inputs = parallel
        for idx in subtasks:
            self.stages[idx].children.append(merge)
        return merge, out_schema, subtasks

    def _keyed_operator(self, node: Node, schema: pa.Schema, wm_time: Optional[str]):
        backend = self.config.state_backend
        max_bytes = backend.max_size_bytes
        if self.explain:
            backend = None           # explain() opens no database
        if node.kind == "window":
            op = _window_op(node, schema, wm_time, max_bytes, backend)
            # Told at plan time, never looked up: whether a stage reads its late_output() (a
            # child here has a sink downstream), and the watermark bound it quotes if not.
            op.late_output_read = any(k.kind == "late_output" for k in self.children.get(id(node), []))
            op.out_of_orderness_ns = _out_of_orderness(node, op.time)
            return op
        return _keyed_op(node, schema, max_bytes, self.config.state, backend)

    def _describe(self) -> List[str]:
        """One entry per stage: its threads and parallelism, what it feeds, its operators (the
        parallel subtasks of a keyed step are shown once, with their count)."""
        stages = self.stages
        producers: Dict[int, List[int]] = {}
        for i, st in enumerate(stages):
            for c in st.children:
                producers.setdefault(c, []).append(i)
        group: Dict[int, List[int]] = {}          # first subtask -> all of them
        hidden: Set[int] = set()
        for m, st in enumerate(stages):
            subs = producers.get(m, [])
            if st.n_inputs > 1 and len(subs) == st.n_inputs:
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


def build(env: "StreamEnvironment", sinks: List[Node], explain: bool = False):
    """(PhysicalPlan, sink operators, state operators, explain lines) for these sinks.

    With ``explain`` nothing is bound or compiled: sinks are placeholders, so explaining a
    plan has no side effects.
    """
    from .kernels import warmup

    if not explain:
        warmup()      # once per process: no batch waits for the compiler
    b = _Builder(env, sinks, explain)
    plan, lines = b.build()
    return plan, b.sink_ops, b.state_ops, lines


def _value_bytes(t: pa.DataType) -> int:
    """Bytes one value of type ``t`` takes: exact for fixed-width types; offsets plus an assumed
    payload (DEFAULT_VARIABLE_WIDTH_BYTES) for strings and binaries; the index for dictionaries."""
    if pa.types.is_dictionary(t):
        return _value_bytes(t.index_type)
    if pa.types.is_boolean(t):
        return 1
    try:
        return max(t.bit_width // 8, 1)
    except ValueError:
        pass
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return 8 + DEFAULT_VARIABLE_WIDTH_BYTES
    return 4 + DEFAULT_VARIABLE_WIDTH_BYTES


def _state_estimates(env: "StreamEnvironment", sinks: List[Node],
                     events_per_second: Optional[float]) -> List[StateEstimate]:
    """The user guide's estimate for every stateful step of these sinks' pipelines."""
    src_node = sinks[0].source()
    declared = src_node.params["source"].declared_rate
    if events_per_second is not None:
        rate, rate_from = float(events_per_second), "explain(events_per_second=)"
    elif declared:
        rate, rate_from = float(declared), "the source's declared rate"
    else:
        rate, rate_from = None, "unknown"
    out, seen, cache = [], set(), {}
    for sink in sinks:
        wm_time = None
        for n in _chain(sink):
            if n.kind == "watermark":
                wm_time = n.params["strategy"].time
            if n.kind not in ("window", "keyed_aggregate") or id(n) in seen:
                continue
            seen.add(id(n))
            schema = output_schema(n.parent, cache)
            cols = [c for c in schema.names if c in (_required(n, wm_time) or set(schema.names))]
            sized = [(c, str(schema.field(c).type), _value_bytes(schema.field(c).type)) for c in cols]
            if n.kind == "window":
                size, what = n.params["spec"].state_span()
            else:
                size, what = (n.params.get("ttl") or (None, None))[0], "state TTL"
                if size is None and env.config.state is not None:
                    size = env.config.state.ttl_ns
                if size is None:
                    what = "running aggregate without a TTL"
            parallel = n.params.get("parallelism") or env.config.effective_parallelism
            out.append(StateEstimate(n.name, rate, rate_from, None if size is None else size / 1e9,
                                     what, sum(b for _, _, b in sized), sized, parallel))
    return out


def explain_nodes(env: "StreamEnvironment", sinks: List[Node],
                  events_per_second: Optional[float] = None) -> Plan:
    """The :class:`Plan` of these sinks: stages after fusion, parallelism, state estimates."""
    if events_per_second is not None and (isinstance(events_per_second, bool) or not
                                          isinstance(events_per_second, (int, float)) or events_per_second <= 0):
        raise PlanError(f"explain(events_per_second=) must be a positive number, got {events_per_second!r}")
    plan, _, _, lines = build(env, sinks, explain=True)
    header = [f"batch_size={plan.batch_size:,}  batch_timeout={plan.batch_timeout_ns / 1e6:g} ms  "
              f"buffer_size={env.config.buffer_size:,}  fusion={'on' if fusion_enabled() else 'off'}"]
    estimates = _state_estimates(env, sinks, events_per_second)
    tail = []
    if estimates:
        tail.append("state memory estimate (user guide: events/s x window seconds x event bytes x "
                    "parallelism; an upper bound, the engine keeps per-key aggregates, not events):")
        tail += [f"  {e.describe()}" for e in estimates]
        total = sum(e.bytes for e in estimates if e.bytes is not None)
        known = all(e.bytes is not None for e in estimates)
        tail.append(f"  total: {_human_bytes(total) if known else '?'} (memory backend bound "
                    f"{_human_bytes(env.config.state_backend.max_size_bytes)})")
    return Plan(header + lines + tail, estimates)
