"""The logical plan: the steps a pipeline's fluent calls recorded, before any planning.

Each step is a frozen dataclass saying what it does (:class:`Filter`, :class:`WithColumns`,
:class:`WindowAggregate`, ...).  A :class:`Node` places a step in the pipeline: its parent, and
what the fluent API may still change after the step is made, its name (``.name()``) and
parallelism (``.set_parallelism()``).  A pipeline is a tree of nodes from a source to its
sinks, where a :class:`Join` node has two parents (its left and right inputs), so a job may
start from several sources; :class:`LogicalPlan` walks the part of it a job's sinks reach.

Nothing here executes or types anything: :mod:`heliosdb.planner` turns a logical plan into
stages of operators.

Examples
--------
>>> src = Node(Source(source=None), None, "src-1")
>>> f = Node(Batch(size=4), src, "batch-2")
>>> f.kind, f.source() is src, [n.name for n in f.chain()]
('batch', True, ['src-1', 'batch-2'])
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type

import pyarrow as pa

from .errors import ConfigError, PlanError

# The plan layer does not import the API's vocabulary (heliosdb.expr, heliosdb.windows): a step
# holds its expressions, aggregates and specs as given, and the planner asks them what it needs.
Expr = Any          # a heliosdb.expr.Expr
AggSpec = Any       # a heliosdb.expr.AggSpec
WindowSpec = Any    # a heliosdb.windows.WindowSpec: build(), pre_aggregate(), grid(), two_phase
WatermarkStrategy = Any     # a heliosdb.windows.WatermarkStrategy

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_name(name: str, what: str = "step name") -> str:
    """Names become path segments of checkpoints and metric labels: keep them plain.

    >>> validate_name("sum-by-user")
    'sum-by-user'
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{what} {name!r} is not valid: use 1-128 letters, digits, '_', '-' or '.' (never '..'), "
            "starting with a letter or digit"
        )
    return name


# -- steps -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Step:
    """What one node of the plan does.  ``kind`` names it in messages (``"window"``) and in
    default step names (``window-3``)."""

    kind: ClassVar[str] = "step"
    #: Whether ``set_parallelism()`` applies: keyed aggregates, and stateless steps that fuse.
    parallel: ClassVar[bool] = False


@dataclass(frozen=True, eq=False)
class Source(Step):
    """Where the rows come from (a ``connectors.base.SourceSpec``), and its micro-batching:
    ``batch_size`` rows, ``batch_timeout_ns`` (None: the config's)."""

    kind: ClassVar[str] = "source"
    source: Any
    batch_size: Optional[int] = None
    batch_timeout_ns: Optional[int] = None

    def __post_init__(self) -> None:
        n = self.batch_size
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
            raise ConfigError(f"with_batch_size() takes a positive integer, got {n!r}")


@dataclass(frozen=True, eq=False)
class Filter(Step):
    """Keep the rows where the expression ``predicate`` is true."""

    kind: ClassVar[str] = "filter"
    parallel: ClassVar[bool] = True
    predicate: Expr


@dataclass(frozen=True, eq=False)
class PyFunction(Step):
    """A per-record Python function (``heliosdb.pyfunc``): compiled into the fused kernel when
    it translates (and ``compile``), else run record by record.  ``schema``: the declared
    output schema (None: worked out)."""

    parallel: ClassVar[bool] = True
    fn: Callable
    schema: Optional[pa.Schema] = None
    compile: bool = True

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise PlanError(f"{self.kind}() takes a function of one record, e.g. lambda e: e.value * 2, "
                            f"got {self.fn!r}")
        if self.schema is not None and not isinstance(self.schema, pa.Schema):
            raise PlanError(f"{self.kind}(schema=) takes a pyarrow.Schema, got {self.schema!r}")


@dataclass(frozen=True, eq=False)
class FilterFunction(PyFunction):
    """``filter(fn)``: keep the records for which ``fn(e)`` is true."""

    kind: ClassVar[str] = "filter"


@dataclass(frozen=True, eq=False)
class MapFunction(PyFunction):
    """``map(fn)``: each record becomes ``fn(e)``."""

    kind: ClassVar[str] = "map"


@dataclass(frozen=True, eq=False)
class ProcessFunction(PyFunction):
    """``process(fn)``: each record becomes ``fn(e)``, or is dropped when it returns None."""

    kind: ClassVar[str] = "process"


#: The function step of each kind.
FUNCTION_STEPS: Dict[str, Type[PyFunction]] = {
    "filter": FilterFunction, "map": MapFunction, "process": ProcessFunction}


@dataclass(frozen=True, eq=False)
class Select(Step):
    """Keep (and order) columns: ``(name, expression)`` pairs."""

    kind: ClassVar[str] = "select"
    parallel: ClassVar[bool] = True
    items: Tuple[Tuple[str, Expr], ...]


@dataclass(frozen=True, eq=False)
class WithColumns(Step):
    """Add or replace columns: ``(name, expression)`` pairs."""

    kind: ClassVar[str] = "with_columns"
    parallel: ClassVar[bool] = True
    exprs: Tuple[Tuple[str, Expr], ...]


@dataclass(frozen=True, eq=False)
class MapBatches(Step):
    """``fn(batch)`` -> a RecordBatch or Table of ``schema`` (None: inferred)."""

    kind: ClassVar[str] = "map_batches"
    fn: Callable
    schema: Optional[pa.Schema] = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise PlanError(f"map_batches() takes a function of a RecordBatch, got {self.fn!r}")


@dataclass(frozen=True, eq=False)
class Inspect(Step):
    """Call ``fn(batch)`` and pass the batch on unchanged."""

    kind: ClassVar[str] = "inspect"
    fn: Callable

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise PlanError(f"inspect() takes a function of a RecordBatch, got {self.fn!r}")


@dataclass(frozen=True, eq=False)
class Batch(Step):
    """Regroup the rows into batches of exactly ``size`` (until the matching :class:`Unbatch`)."""

    kind: ClassVar[str] = "batch"
    size: int

    def __post_init__(self) -> None:
        n = self.size
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"batch() takes a positive number of rows, got {n!r}")


@dataclass(frozen=True, eq=False)
class Unbatch(Step):
    """Ends a :class:`Batch` regrouping; computes nothing."""

    kind: ClassVar[str] = "unbatch"


@dataclass(frozen=True, eq=False)
class Watermark(Step):
    """Event time from here on: ``strategy`` (a ``windows.WatermarkStrategy``)."""

    kind: ClassVar[str] = "watermark"
    strategy: WatermarkStrategy


@dataclass(frozen=True, eq=False)
class RunningAggregate(Step):
    """Per-key aggregates without a window, emitted as updates.  ``ttl``: (ttl_ns,
    cleanup_interval_ns) of ``with_state_ttl()``, None: the config's."""

    kind: ClassVar[str] = "keyed_aggregate"
    parallel: ClassVar[bool] = True
    keys: Tuple[str, ...]
    aggs: Tuple[Tuple[str, AggSpec], ...]
    ttl: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        if self.ttl is not None and (self.ttl[0] <= 0 or self.ttl[1] <= 0):
            raise ConfigError("with_state_ttl(): ttl and cleanup_interval must be positive")


@dataclass(frozen=True, eq=False)
class WindowAggregate(Step):
    """Per-(window, key) aggregates of window ``spec`` on event-time column ``time`` (None:
    the upstream watermark's column, or processing time without one), keeping a window's
    state ``lateness`` ns after its end."""

    kind: ClassVar[str] = "window"
    parallel: ClassVar[bool] = True
    keys: Tuple[str, ...]
    spec: WindowSpec
    time: Optional[str]
    aggs: Tuple[Tuple[str, AggSpec], ...]
    lateness: int = 0


def join_keys(on: Any = None, left_on: Any = None, right_on: Any = None) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(left key columns, right key columns) of a join's ``on=`` (named alike on both sides)
    or ``left_on=`` and ``right_on=``; each a column name or a list of them.

    >>> join_keys(on="k"), join_keys(left_on=["a", "b"], right_on=["x", "y"])
    ((('k',), ('k',)), (('a', 'b'), ('x', 'y')))
    """
    def names(v: Any, what: str) -> Tuple[str, ...]:
        cols = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, (list, tuple)) else None
        if not cols or not all(isinstance(c, str) for c in cols):
            raise PlanError(f"join({what}=) takes a column name or a list of them, got {v!r}")
        return cols

    if on is not None and (left_on is not None or right_on is not None):
        raise PlanError("join() takes on= (key columns named alike on both sides) or left_on= and "
                        "right_on=, not both")
    if on is not None:
        return names(on, "on"), names(on, "on")
    if left_on is None or right_on is None:
        raise PlanError("join() needs on= (key columns named alike on both sides), or left_on= and "
                        "right_on= together")
    return names(left_on, "left_on"), names(right_on, "right_on")


@dataclass(frozen=True, eq=False)
class LookupJoin(Step):
    """Join each row with the rows of ``table`` (a ``connectors.table.TableSpec``) whose key
    columns ``right_on`` equal its ``left_on``: ``how`` is ``"inner"`` or ``"left"``; the
    table's columns named like the stream's get ``suffix``.

    >>> LookupJoin(None, ("k",), ("id",), how="full")
    Traceback (most recent call last):
    ...
    heliosdb.errors.PlanError: a lookup join takes how='inner' or 'left', got 'full': the table has no event time, so the stream never knows that a table row will not be matched later (a right or full join would have to emit the unmatched table rows at some point). Join two streams for that
    """

    kind: ClassVar[str] = "lookup_join"
    parallel: ClassVar[bool] = True
    table: Any
    left_on: Tuple[str, ...]
    right_on: Tuple[str, ...]
    how: str = "inner"
    suffix: str = "_right"

    def __post_init__(self) -> None:
        if self.how not in ("inner", "left"):
            raise PlanError(
                f"a lookup join takes how='inner' or 'left', got {self.how!r}: the table has no event "
                "time, so the stream never knows that a table row will not be matched later (a right "
                "or full join would have to emit the unmatched table rows at some point). Join two "
                "streams for that")
        if not isinstance(self.suffix, str) or not self.suffix:
            raise PlanError(f"join(suffix=) takes a non-empty string, got {self.suffix!r}")
        for what, keys in (("left_on", self.left_on), ("right_on", self.right_on)):
            if not keys or not all(isinstance(k, str) for k in keys):
                raise PlanError(f"join({what}=) takes a column name or a list of them, got {list(keys)!r}")
            if len(set(keys)) != len(keys):
                raise PlanError(f"join({what}=) names a column twice: {list(keys)!r}")
        if len(self.left_on) != len(self.right_on):
            raise PlanError(f"join(): left_on= names {len(self.left_on)} columns and right_on= "
                            f"{len(self.right_on)}; they are matched pairwise, so give as many of each")


@dataclass(frozen=True, eq=False)
class LateOutput(Step):
    """The rows its parent found too late, with the schema of the input they came in on:
    a window's (``tag`` ``"late"``), or one side of a join's (``"late_left"``,
    ``"late_right"``)."""

    kind: ClassVar[str] = "late_output"
    tag: str = "late"


#: How messages name each kind of join.
JOIN_NOUNS: Dict[str, str] = {"window": "a window join", "interval": "an interval join",
                              "asof": "an as-of join", "regular": "a regular join"}

#: The kinds of join, and the ``how`` each allows.
JOIN_HOWS: Dict[str, Tuple[str, ...]] = {
    "window": ("inner", "left", "right", "full"),
    "interval": ("inner", "left", "right", "full"),
    "asof": ("left", "inner"),
    "regular": ("inner", "left", "right", "full"),
}


@dataclass(frozen=True, eq=False)
class Join(Step):
    """Rows of two streams whose keys are equal: the node's ``parent`` is the left input,
    its ``right`` the right input.

    ``join_kind`` is ``"window"`` (both rows in the same ``window``), ``"interval"`` (the right
    row's event time in ``[left + between[0], left + between[1]]``, ns), ``"asof"`` (the
    latest right row at or before the left row, no older than ``tolerance_ns`` if given) or
    ``"regular"`` (any time, state kept ``ttl_ns``).  ``left_on``/``right_on`` are the key
    columns, as many on each side; ``coalesce_keys``: the keys were named alike (``on=``) and
    appear once in the output.  Name clashes of right columns get ``suffix``.

    >>> Join("interval", ("k",), ("id",), between=(-5, 5)).kind
    'join'
    >>> Join("asof", ("k",), ("k",), how="full")
    Traceback (most recent call last):
    ...
    heliosdb.errors.PlanError: an as-of join keeps every left row (how='left') or the matched ones (how='inner'); how='full' is not available for it
    """

    kind: ClassVar[str] = "join"
    parallel: ClassVar[bool] = True
    join_kind: str
    left_on: Tuple[str, ...]
    right_on: Tuple[str, ...]
    how: str = "inner"
    suffix: str = "_right"
    window: Optional[WindowSpec] = None
    between: Optional[Tuple[int, int]] = None
    tolerance_ns: Optional[int] = None
    ttl_ns: Optional[int] = None
    coalesce_keys: bool = False

    def __post_init__(self) -> None:
        what = "join_asof()" if self.join_kind == "asof" else "join()"
        if self.join_kind not in JOIN_HOWS:
            raise PlanError(f"unknown kind of join {self.join_kind!r}; one of {sorted(JOIN_HOWS)}")
        if self.how not in JOIN_HOWS[self.join_kind]:
            if self.join_kind == "asof":
                raise PlanError(f"an as-of join keeps every left row (how='left') or the matched ones "
                                f"(how='inner'); how={self.how!r} is not available for it")
            hint = {"outer": " (you probably meant how='full', Polars' name for it)",
                    "outer_coalesce": " (you probably meant how='full' with on=, which keeps the key once)",
                    "cross": " (a stream join pairs rows with equal keys; a cross join of streams would "
                             "pair every row with every row for ever)",
                    "semi": " (semi and anti joins are not available for streams)",
                    "anti": " (semi and anti joins are not available for streams)"}.get(str(self.how), "")
            raise PlanError(f"join(how={self.how!r}) is not a join type{hint}; {JOIN_NOUNS[self.join_kind]} "
                            f"takes how= {' | '.join(repr(h) for h in JOIN_HOWS[self.join_kind])}")
        if not self.left_on or len(self.left_on) != len(self.right_on):
            raise PlanError(f"{what} needs as many left keys as right keys, got left_on={list(self.left_on)} "
                            f"and right_on={list(self.right_on)}")
        for side, keys in (("left_on", self.left_on), ("right_on", self.right_on)):
            if len(set(keys)) != len(keys):
                raise PlanError(f"{what}: {side} names a column twice: {list(keys)}")
        if not isinstance(self.suffix, str) or not self.suffix:
            raise PlanError(f"{what}: suffix= must be a non-empty string, got {self.suffix!r}")
        if (self.window is not None) != (self.join_kind == "window"):
            raise PlanError(f"{JOIN_NOUNS[self.join_kind]} takes no window= (an engine bug)")
        if self.join_kind == "interval":
            if self.between is None or self.between[0] > self.between[1]:
                raise PlanError(f"join(between=(lower, upper)) needs lower <= upper, got {self.between!r}")
        if self.tolerance_ns is not None and self.tolerance_ns < 0:
            raise PlanError(f"join_asof(tolerance=) must not be negative, got {self.tolerance_ns} ns")
        if self.ttl_ns is not None and self.ttl_ns <= 0:
            raise PlanError(f"join(ttl=) must be positive, got {self.ttl_ns} ns")


@dataclass(frozen=True, eq=False)
class Sink(Step):
    """Where the rows go: ``spec`` (a ``connectors.sinks.SinkSpec``)."""

    kind: ClassVar[str] = "sink"
    spec: Any


# -- nodes ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Node:
    """A step in place: its ``parent`` (None for the source), its ``name`` and its
    ``parallelism`` (None: the config's), which ``.name()`` and ``.set_parallelism()`` set on
    the node later steps already point to.  ``memo`` keeps what planning learnt about the
    step across jobs (a function step's translation, whether its fallback warning was given).
    A :class:`Join` node has a second parent, ``right`` (``parent`` is its left input).
    """

    step: Step
    parent: Optional["Node"]
    name: str
    parallelism: Optional[int] = None
    memo: Dict[str, Any] = field(default_factory=dict, repr=False)
    right: Optional["Node"] = None

    @property
    def kind(self) -> str:
        return self.step.kind

    @property
    def inputs(self) -> List["Node"]:
        """The nodes this one reads: its parent, and a join's right input."""
        return [n for n in (self.parent, self.right) if n is not None]

    def source(self) -> "Node":
        """The node at the root of this one's pipeline (through the left input of a join)."""
        n = self
        while n.parent is not None:
            n = n.parent
        return n

    def sources(self) -> List["Node"]:
        """Every source node this one reads from, left inputs first (each once).

        >>> a, b = Node(Source(source=None), None, "a"), Node(Source(source=None), None, "b")
        >>> j = Node(Join("regular", ("k",), ("k",), ttl_ns=1), a, "j", right=b)
        >>> [n.name for n in j.sources()], j.source().name
        (['a', 'b'], 'a')
        """
        out: List[Node] = []
        seen = set()
        todo: List[Node] = [self]
        while todo:
            n = todo.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.parent is None:
                out.append(n)
            todo.extend(reversed(n.inputs))
        return out

    def chain(self) -> List["Node"]:
        """The nodes from the source down to this one (through the left input of a join)."""
        out = []
        n: Optional[Node] = self
        while n is not None:
            out.append(n)
            n = n.parent
        return out[::-1]


def splits_before(node: Node) -> Any:
    """The splits (``connectors.splits.Splits``) of the source right before ``node``, which a
    watermark step there keeps one watermark each for; None when ``node`` is not right after
    a source, or the source reads one ordered stream."""
    parent = node.parent
    if parent is None or not isinstance(parent.step, Source):
        return None
    return parent.step.source.splits


class LogicalPlan:
    """The nodes a job's ``sinks`` reach, walked down from their sources.

    A job reads one source, or several that joins bring together (``sources``, left inputs
    first; ``source`` is the first).

    >>> src = Node(Source(source=None), None, "src")
    >>> a, b = Node(Sink(spec=None), src, "a"), Node(Sink(spec=None), src, "b")
    >>> plan = LogicalPlan([a, b])
    >>> [n.name for n in plan.children(src)], [n.name for n in plan.nodes()]
    (['a', 'b'], ['src', 'b', 'a'])
    """

    def __init__(self, sinks: List[Node]):
        self.sinks = sinks
        self._children: Dict[int, List[Node]] = {}
        self.sources: List[Node] = []
        for s in sinks:
            for src in s.sources():
                if all(src is not t for t in self.sources):
                    self.sources.append(src)
            todo = [s]
            while todo:
                child = todo.pop()
                for parent in child.inputs:
                    kids = self._children.setdefault(id(parent), [])
                    if child not in kids:
                        kids.append(child)
                        todo.append(parent)
        self._check_connected()
        self.source: Node = self.sources[0]
        names = set()
        for n in self.nodes():
            if n.name in names and not isinstance(n.step, Source):
                raise PlanError(f"two steps are named {n.name!r}; step names must be unique in a job")
            names.add(n.name)

    def _check_connected(self) -> None:
        """Several sources must meet in joins: a job runs one connected pipeline."""
        if len(self.sources) < 2:
            return
        group = {id(s): i for i, s in enumerate(self.sources)}
        parent = list(range(len(self.sources)))

        def find(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for s in self.sinks:
            ids = [group[id(src)] for src in s.sources()]
            for i in ids[1:]:
                parent[find(i)] = find(ids[0])
        apart = len({find(i) for i in range(len(self.sources))})
        if apart > 1:
            raise PlanError(
                f"a job runs one pipeline; these sinks read {apart} groups of sources that no join "
                "connects. Run them as separate jobs (one execute() each), or join them"
            )

    def children(self, node: Node) -> List[Node]:
        """The nodes right after ``node`` that lead to a sink, in the order the sinks came."""
        return self._children.get(id(node), [])

    def nodes(self) -> List[Node]:
        """Every node once, depth first from each source in turn."""
        out, seen = [], set()
        for src in self.sources:
            stack = [src]
            while stack:
                n = stack.pop()
                if id(n) in seen:
                    continue
                seen.add(id(n))
                out.append(n)
                stack.extend(self.children(n))
        return out
