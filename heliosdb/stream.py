"""The fluent builder: ``Stream``, ``KeyedStream``, ``WindowedStream`` (a stream's source
options and formats are in :mod:`heliosdb.stream_source`).

Building a stream records a logical plan (the steps of :mod:`heliosdb.logical`) and executes
nothing.  ``collect()``, ``sink()`` + ``env.execute()`` run it; ``explain()`` shows what would run.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Union

import pyarrow as pa

from .config import DEFAULT_MAX_DRIFT, Duration, StreamingConfig, to_nanos
from .errors import ConfigError, PlanError, SchemaError
from .aggregates import AggSpec
from .expr import Expr, as_expr, parse_projection
from .logical import (FUNCTION_STEPS, Batch, Filter, Inspect, Join, LateOutput, MapBatches, Node,
                      RunningAggregate, Select, Sink, Source, Step, Unbatch, Watermark, WindowAggregate,
                      WithColumns, join_keys, validate_name)
from .stream_join import JoinMethods
from .stream_source import SourceMethods
from .windows import WINDOW_SPECS, WatermarkStrategy, WindowSpec

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan

__all__ = ["Stream", "KeyedStream", "WindowedStream", "validate_name"]


class Environment(Protocol):
    """What a stream uses of its ``StreamEnvironment`` (which imports this module)."""

    config: StreamingConfig
    _sinks: List[Node]

    def _next_name(self, kind: str) -> str: ...

    def _run(self, sinks: List[Node], name: str) -> Any: ...


class Stream(SourceMethods, JoinMethods):
    """A stream of record batches.  Every method returns a new Stream (the plan is immutable).

    Examples
    --------
    >>> import heliosdb as hdb
    >>> from heliosdb import col
    >>> env = hdb.StreamEnvironment()
    >>> s = env.from_iterable([{"k": "a", "v": 1.0}, {"k": "b", "v": 3.0}])
    >>> s.filter(col("v") > 2).with_columns(v2=col("v") * 2).collect().to_pydict()
    {'k': ['b'], 'v': [3.0], 'v2': [6.0]}
    """

    def __init__(self, env: Environment, node: Node):
        self._env = env
        self._node = node

    # -- helpers -----------------------------------------------------------------------------
    def _then(self, step: Step) -> "Stream":
        return Stream(self._env, Node(step, self._node, self._env._next_name(step.kind)))

    @property
    def schema(self) -> pa.Schema:
        """The schema of this stream's records (computed from the plan; runs nothing)."""
        from .planner.schema import output_schema

        return output_schema(self._node)

    # -- stateless -----------------------------------------------------------------------------
    def filter(self, predicate: Union[Expr, Callable[[Any], Any]], *, compile: bool = True) -> "Stream":
        """Keep the rows where ``predicate`` is true.

        ``predicate`` is an expression (null counts as false) or a Python function of one
        record (``e.value``, ``e["value"]``) whose result is tested for truth, as Python's
        ``filter()`` does.  A function made of arithmetic, comparisons, ``and``/``or``/``not``,
        conditionals and ``math`` functions compiles into the stage's fused kernel with
        Python's semantics; anything else runs per record in Python, with one warning naming
        the reason.  ``compile=False`` always runs it in Python (same results, slower).

        Examples
        --------
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> env.from_iterable([{"x": 1}, {"x": None}, {"x": 3}]).filter(hdb.col("x") > 1).collect()["x"].to_pylist()
        [3]
        >>> env.from_iterable([{"x": 1}, {"x": None}, {"x": 3}]).filter(
        ...     lambda e: e.x is not None and e.x % 2 == 1 and e.x > 2).collect()["x"].to_pylist()
        [3]
        """
        if isinstance(predicate, Expr):
            return self._then(Filter(predicate))
        if callable(predicate):
            return self._then(FUNCTION_STEPS["filter"](predicate, compile=bool(compile)))
        raise PlanError(
            f"filter() takes an expression such as col('value') > 0.2 or a function of a record "
            f"such as lambda e: e.value > 0.2, got {predicate!r}"
        )

    def map(self, fn: Callable[[Any], Any], *, schema: Optional[pa.Schema] = None,
            compile: bool = True) -> "Stream":
        """Turn each record into a new one: ``fn(e)`` returns a dict (the new record's columns,
        in order) or a single value (a record of one column named ``value``).

        The record ``e`` has attribute and item access (``e.value``, ``e["value"]``, ``{**e}``).
        A function made of arithmetic, comparisons, ``and``/``or``/``not``, conditionals and
        ``math`` functions over fields and constants compiles into the stage's ONE fused kernel
        with Python's semantics (``//`` floors, ints are exact, where Python raises the job
        fails with a RecordError naming the step and the record); anything else runs per
        record in Python, with one PythonFallbackWarning naming the reason.  The output schema
        of such a function is ``schema`` if given, else inferred from its source.
        ``compile=False`` always runs it in Python (same results, slower).

        Examples
        --------
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> rows = [{"k": "a", "v": 7}, {"k": "b", "v": -2}]
        >>> env.from_iterable(rows).map(lambda e: {"k": e.k, "half": e.v // 2}).collect().to_pydict()
        {'k': ['a', 'b'], 'half': [3, -1]}
        >>> env.from_iterable(rows).map(lambda e: e.v * 2).collect().to_pydict()
        {'value': [14, -4]}
        """
        return self._then(FUNCTION_STEPS["map"](fn, schema, bool(compile)))

    def process(self, fn: Callable[[Any], Any], *, schema: Optional[pa.Schema] = None,
                compile: bool = True) -> "Stream":
        """Like :meth:`map`, but ``fn(e)`` may also return None to drop the record.

        Examples
        --------
        >>> import heliosdb as hdb
        >>> def keep_big(e):
        ...     if e.v < 0:
        ...         return None
        ...     return {"k": e.k, "v": e.v, "big": e.v > 5}
        >>> rows = [{"k": "a", "v": 7}, {"k": "b", "v": -2}]
        >>> hdb.StreamEnvironment().from_iterable(rows).process(keep_big).collect().to_pydict()
        {'k': ['a'], 'v': [7], 'big': [True]}
        """
        return self._then(FUNCTION_STEPS["process"](fn, schema, bool(compile)))

    def batch(self, n: int) -> "Stream":
        """Regroup the stream into record batches of exactly ``n`` rows (the last one, when
        the input ends, may be shorter), e.g. for a ``map_batches`` function that wants a fixed
        size.  Rows wait until ``n`` have arrived; a watermark never overtakes the rows it
        follows.  End the regrouping with :meth:`unbatch`.

        Examples
        --------
        >>> import heliosdb as hdb
        >>> sizes = []
        >>> _ = (hdb.StreamEnvironment().generate(count=10).batch(4)
        ...      .inspect(lambda b: sizes.append(b.num_rows)).unbatch().collect())
        >>> sizes
        [4, 4, 2]
        """
        return self._then(Batch(n))

    def unbatch(self) -> "Stream":
        """End a :meth:`batch` regrouping: later steps take batches of any size again (the
        rows are not regrouped back; nothing is copied).

        >>> import heliosdb as hdb
        >>> hdb.StreamEnvironment().generate(count=3).batch(2).unbatch().collect().num_rows
        3
        """
        depth = 0
        n: Optional[Node] = self._node
        while n is not None:
            if isinstance(n.step, Unbatch):
                depth += 1
            elif isinstance(n.step, Batch):
                if depth == 0:
                    return self._then(Unbatch())
                depth -= 1
            n = n.parent
        raise PlanError("unbatch() ends a batch(n) regrouping, but this stream has no batch() "
                        "before it")

    def select(self, *columns: Union[str, Expr]) -> "Stream":
        """Keep (and order) these columns; expressions need ``.alias(name)``.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> env.from_iterable([{"a": 1, "b": 2}]).select("b", (hdb.col("a") + 1).alias("a1")).collect().to_pydict()
        {'b': [2], 'a1': [2]}
        """
        if not columns:
            raise PlanError("select() needs at least one column")
        return self._then(Select(tuple(parse_projection(columns, "select"))))

    def with_columns(self, **exprs: Any) -> "Stream":
        """Add or replace columns computed from expressions.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> env.from_iterable([{"v": 2.0}]).with_columns(v2=hdb.col("v") * 2).collect().to_pydict()
        {'v': [2.0], 'v2': [4.0]}
        """
        if not exprs:
            raise PlanError("with_columns() needs at least one name=expression")
        return self._then(WithColumns(tuple((k, as_expr(v)) for k, v in exprs.items())))

    def map_batches(self, fn: Callable[[pa.RecordBatch], Any], schema: Optional[pa.Schema] = None) -> "Stream":
        """Apply ``fn`` to each record batch (Arrow in, Arrow RecordBatch or Table out).

        The output schema is ``schema`` if given, otherwise what ``fn`` returns for an empty
        batch of the input schema.

        >>> import heliosdb as hdb, pyarrow.compute as pc
        >>> env = hdb.StreamEnvironment()
        >>> s = env.from_iterable([{"w": "a"}]).map_batches(
        ...     lambda b: b.set_column(0, "w", pc.utf8_upper(b.column(0))))
        >>> s.collect().to_pydict()
        {'w': ['A']}
        """
        return self._then(MapBatches(fn, schema))

    def inspect(self, fn: Callable[[pa.RecordBatch], None]) -> "Stream":
        """Call ``fn(batch)`` for each batch (to log or debug) and pass the batch on unchanged.

        >>> import heliosdb as hdb
        >>> seen = []
        >>> _ = hdb.StreamEnvironment().from_iterable([{"x": 1}]).inspect(lambda b: seen.append(b.num_rows)).collect()
        >>> seen
        [1]
        """
        return self._then(Inspect(fn))

    def with_watermark(self, time: str, max_out_of_orderness: Duration = timedelta(0),
                       idle_timeout: Optional[Duration] = None,
                       max_drift: Optional[Duration] = DEFAULT_MAX_DRIFT,
                       on_null: Optional[str] = None) -> "Stream":
        """Declare event time: ``time`` column, and how late (out of order) events may arrive.

        The watermark is the largest event time seen minus ``max_out_of_orderness``; a window
        closes (and is emitted) when the watermark passes its end.  An event is late when its
        window has closed by the watermark its predecessors imply; this depends only on the
        order of events, never on how they were cut into micro-batches.

        With ``idle_timeout``, once the source has sent nothing for that long the watermark
        advances with the wall clock, so the windows of a quiet live stream still close (leave
        it unset when replaying history: a stall would make later events late).

        **Per split.** Directly after a source of several splits (``kafka_source``: its
        partitions; ``from_arrow(..., split_by=column)``: a replayed capture of partitions),
        each split has its own watermark (its largest event time minus the bound) and the
        stream's is their minimum, as Flink's ``WatermarkStrategy`` on a Kafka source: a
        partition read later or more slowly than the others is not late.  A split that has
        sent nothing yet holds the watermark back until it sends data, finishes (a bounded
        read at its end) or, with ``idle_timeout``, has been idle that long (it rejoins when
        data comes again).  ``max_drift`` (default 5 minutes of event time; None: off) is
        watermark alignment: a Kafka partition more than that ahead of the slowest partition
        that has data is paused until the others catch up, so window state stays bounded when
        one partition has a backlog.  ``kafka_source(event_time=)`` instead merges the
        partitions into one event-time order.

        **Rows without an event time** (a null in ``time``): ``on_null="fail"`` (the default)
        stops the job with an error naming the row; ``"skip"`` drops them, counts them in
        ``streaming_dead_letters_total{reason="null_event_time"}`` and logs once; directly
        after a Kafka source, the source's ``on_error`` decides (``"dead_letter"`` keeps the
        raw record with reason ``null_event_time``), unless ``on_null`` is given.

        >>> import heliosdb as hdb
        >>> from datetime import timedelta
        >>> rows = [{"ts": 1500, "k": 1}, {"ts": 900, "k": 1}]     # 900 is 0.6 s out of order
        >>> (hdb.StreamEnvironment().from_iterable(rows)
        ...  .with_watermark(time="ts", max_out_of_orderness=timedelta(seconds=1))
        ...  .key_by("k").window(hdb.TumblingWindow.of(1)).aggregate(n=hdb.count())
        ...  .collect()["n"].to_pylist())
        [1, 1]
        """
        idle = None if idle_timeout is None else to_nanos(idle_timeout, "with_watermark(idle_timeout=)")
        drift = None if max_drift is None else to_nanos(max_drift, "with_watermark(max_drift=)")
        strategy = WatermarkStrategy(time, to_nanos(max_out_of_orderness, "max_out_of_orderness"), idle,
                                     drift, "source" if on_null is None else on_null)
        return self._then(Watermark(strategy))

    def set_parallelism(self, n: int) -> "Stream":
        """Run the last step as ``n`` parallel subtasks (or replicas).

        - A stateless step (``filter``, ``select``, ``with_columns``, and ``map`` / ``filter`` /
          ``process`` functions that compile): the fused kernel it belongs to runs as ``n``
          replicas; batches go to them in turn and their output is put back in order, so the
          result (and every watermark and checkpoint) is the same as with ``n = 1``.  A function
          that cannot be compiled runs record by record, once (Python holds the GIL).
        - A tumbling or sliding event-time window: ``n`` replicas pre-aggregate their share of
          the batches; the small partial aggregates are merged, in order, by one final step.
        - A session window, a processing-time window, or a running keyed aggregate: rows reach
          ``n`` subtasks through a hash exchange on the key columns, so each key lives in
          exactly one subtask (and keeps its arrival order).
        - A join: both inputs reach ``n`` subtasks through a hash exchange on their keys.

        In every case the result is the same as with ``n = 1`` (float sums and means of a
        pre-aggregated window can differ in the last bits: the additions are grouped
        differently).  The default is ``StreamingConfig(parallelism=)``.  On a
        ``kafka_source``, ``n`` readers (consumers) share the topic's partitions.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> s = env.generate(count=1000).key_by("key").aggregate(n=hdb.count()).set_parallelism(2)
        >>> "merges 2 inputs" in str(s.explain())
        True
        >>> f = env.generate(count=1000).filter(hdb.col("value") > 0.5).set_parallelism(2)
        >>> "round-robin" in str(f.sink(hdb.sinks.memory()).explain())
        True
        """
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"set_parallelism() takes a positive integer, got {n!r}")
        if isinstance(self._node.step, Source) and self._node.step.source.parallel_readers:
            # A partitioned source (Kafka): n readers, each reading its share of the partitions.
            return self._with_source("set_parallelism", lambda s: s.with_readers(n))
        if not self._node.step.parallel:
            raise PlanError(
                f"set_parallelism() applies to a keyed aggregate or a stateless step (filter, "
                f"select, with_columns, map, process); step {self._node.name!r} is a "
                f"{self._node.kind} step, which runs once, in order"
            )
        self._node.parallelism = n
        return self

    def with_state_ttl(self, ttl: Duration, cleanup_interval: Optional[Duration] = None) -> "Stream":
        """Evict keys of the last step (a running keyed aggregate) untouched for ``ttl``
        (processing time), checked every ``cleanup_interval`` (default ``ttl``).

        >>> import heliosdb as hdb
        >>> from datetime import timedelta
        >>> s = (hdb.StreamEnvironment().from_iterable([{"k": 1}]).key_by("k")
        ...      .aggregate(n=hdb.count()).with_state_ttl(timedelta(hours=1)))
        >>> "ttl 3600s" in str(s.explain())
        True
        """
        if not isinstance(self._node.step, RunningAggregate):
            raise PlanError(
                f"with_state_ttl() applies to a running keyed aggregate (key_by(...).aggregate(...)); "
                f"step {self._node.name!r} is a {self._node.kind} step (window state is dropped by "
                "the watermark)"
            )
        ttl_ns = to_nanos(ttl, "with_state_ttl(ttl)")
        every = ttl_ns if cleanup_interval is None else to_nanos(cleanup_interval, "with_state_ttl(cleanup_interval)")
        self._node.step = replace(self._node.step, ttl=(ttl_ns, every))
        return self

    def late_output(self, side: Optional[str] = None) -> "Stream":
        """The events the last step (a window aggregate) found too late: later than the
        allowed lateness after their windows' end.  A stream of its own with the input's
        schema, which can be transformed and sunk like any other; the events are also counted in
        ``streaming_late_events_total``.  After a join, ``side`` (``"left"`` or ``"right"``)
        says which input's late rows, with that input's schema.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> rows = [{"ts": 5000, "k": 1}, {"ts": 100, "k": 1}]          # 100 is 4.9 s late
        >>> w = env.from_iterable(rows).with_watermark("ts").key_by("k").window(hdb.TumblingWindow.of(1)).aggregate(n=hdb.count())
        >>> late, out = hdb.sinks.memory(), hdb.sinks.memory()
        >>> _ = w.sink(out); _ = w.late_output().sink(late)
        >>> _ = env.execute(name="doc-late")
        >>> late.to_table().to_pydict(), out.to_table()["n"].to_pylist()
        ({'ts': [100], 'k': [1]}, [1])
        >>> a = env.from_iterable([{"ts": 0, "k": 1, "v": 2.0}]).with_watermark("ts")
        >>> b = env.from_iterable([{"ts": 0, "k": 1}]).with_watermark("ts")
        >>> a.join(b, on="k", between=(0, 1)).late_output("left").schema.names
        ['ts', 'k', 'v']
        """
        if isinstance(self._node.step, Join):
            if side not in ("left", "right"):
                raise PlanError(f"late_output(side) after a join takes side='left' or 'right', got {side!r}")
            if self._node.step.join_kind == "regular":
                raise PlanError(f"late_output({side!r}): step {self._node.name!r} is a regular join, which has no "
                                "late rows (every row waits its ttl, whatever its time); window, interval and "
                                "as-of joins have them")
            return Stream(self._env, Node(LateOutput(f"late_{side}"), self._node, self._env._next_name("late")))
        if not isinstance(self._node.step, WindowAggregate):
            raise PlanError(
                f"late_output() applies to a window aggregate or a join; step {self._node.name!r} is a "
                f"{self._node.kind} step"
            )
        if side is not None:
            raise PlanError(f"late_output(side={side!r}): a window aggregate has one input; side= applies "
                            "after a join")
        return Stream(self._env, Node(LateOutput(), self._node, self._env._next_name("late")))

    def name(self, name: str) -> "Stream":
        """Name the last step (shown in explain(), metrics and errors).

        >>> import heliosdb as hdb
        >>> s = hdb.StreamEnvironment().from_iterable([{"x": 1}]).filter(hdb.col("x") > 0).name("positive")
        >>> "positive" in str(s.explain())
        True
        """
        self._node.name = validate_name(name)
        return self

    # -- keyed -------------------------------------------------------------------------------
    def key_by(self, *columns: str) -> "KeyedStream":
        """Partition the stream by the values of ``columns`` (ints, strings, floats, times).

        >>> import heliosdb as hdb
        >>> hdb.StreamEnvironment().from_iterable([{"user": "a", "ts": 0}]).key_by("user").keys
        ['user']
        """
        if not columns or not all(isinstance(c, str) for c in columns):
            raise PlanError(f"key_by() takes one or more column names, got {columns!r}")
        if len(set(columns)) != len(columns):
            raise PlanError(f"key_by() names a column twice: {columns!r}")
        return KeyedStream(self, list(columns))

    # -- sinks and running ---------------------------------------------------------------------
    def sink(self, spec) -> "Stream":
        """Send this stream to a sink (``hdb.sinks.*``); run it with ``env.execute()``.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> out = hdb.sinks.memory()
        >>> _ = env.from_iterable([{"x": 1}]).sink(out)
        >>> env.execute(name="doc-sink").metrics["events_out"] >= 0, out.to_table().num_rows
        (True, 1)
        """
        from .connectors.sinks import SinkSpec

        if not isinstance(spec, SinkSpec):
            raise PlanError(f"sink() takes a sink such as hdb.sinks.parquet(url), got {spec!r}")
        node = Node(Sink(spec), self._node, self._env._next_name(f"sink-{spec.kind}"))
        self._env._sinks.append(node)
        return Stream(self._env, node)

    def collect(self) -> pa.Table:
        """Run the pipeline over a bounded source and return the result as a pyarrow Table.

        >>> import heliosdb as hdb
        >>> hdb.StreamEnvironment().generate(count=10).collect().num_rows
        10
        """
        from .connectors.sinks import MemorySink

        out = MemorySink()
        node = Node(Sink(out), self._node, self._env._next_name("collect"))
        self._env._run([node], name="collect")
        return out.to_table()

    def to_pandas(self):
        """``collect()`` as a pandas DataFrame.

        >>> import heliosdb as hdb
        >>> hdb.StreamEnvironment().from_iterable([{"x": 1}]).to_pandas().shape
        (1, 1)
        """
        return self.collect().to_pandas()

    def to_polars(self):
        """``collect()`` as a polars DataFrame.

        >>> import heliosdb as hdb
        >>> hdb.StreamEnvironment().from_iterable([{"x": 1}]).to_polars().shape
        (1, 1)
        """
        import polars as pl

        return pl.from_arrow(self.collect())

    def explain(self, events_per_second: Optional[float] = None) -> "Plan":
        """The physical plan this stream would run: stages after fusion, parallelism, operators,
        and each window's state memory estimate (the user guide's formula, events/s x window
        seconds x event bytes x parallelism; events/s is ``events_per_second`` if given, else
        the source's declared rate).

        >>> import heliosdb as hdb
        >>> from heliosdb import col
        >>> s = (hdb.StreamEnvironment().from_iterable([{"v": 1.0}])
        ...      .filter(col("v") > 0).with_columns(w=col("v") * 2))
        >>> str(s.explain()).count("fused kernel")
        1
        >>> w = (hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=2))
        ...      .from_iterable([{"ts": 0, "k": 1, "v": 1.0}]).key_by("k")
        ...      .window(hdb.TumblingWindow.of(60), time="ts").aggregate(total=hdb.sum("v")))
        >>> w.explain(events_per_second=10_000).estimates[0].bytes    # 10k/s x 60 s x 24 B x 2
        28800000.0
        """
        from .connectors.sinks import MemorySink
        from .plan import explain_nodes

        return explain_nodes(self._env, [Node(Sink(MemorySink()), self._node, "collect")], events_per_second)

    def __repr__(self) -> str:
        return f"<Stream {self._node.kind}[{self._node.name}]>"

    def _repr_html_(self) -> str:
        """A notebook shows a stream as the plan it would run (its ``explain()``).

        >>> import heliosdb as hdb
        >>> s = hdb.StreamEnvironment().from_iterable([{"x": 1}]).filter(hdb.col("x") > 0)
        >>> "fused kernel" in s._repr_html_()
        True
        """
        import html

        from .errors import HeliosError

        head = f"<div><b>{html.escape(repr(self))}</b></div>"
        try:
            return head + self.explain()._repr_html_()
        except HeliosError as exc:           # a stream that cannot be planned yet says why
            return head + f"<pre>{html.escape(f'{type(exc).__name__}: {exc}')}</pre>"


class KeyedStream:
    """A stream partitioned by key; follow with ``.window(...)``."""

    def __init__(self, stream: Stream, keys: List[str]):
        self._stream = stream
        self.keys = keys

    def window(self, spec: WindowSpec, time: Optional[str] = None,
               allowed_lateness: Duration = timedelta(0)) -> "WindowedStream":
        """Group each key's events into windows of ``spec``.

        ``spec`` is ``TumblingWindow.of(size)``, ``SlidingWindow.of(size, slide)`` or
        ``SessionWindow.with_gap(gap)``.  ``time`` is the event-time column; it defaults to
        the column of an upstream ``with_watermark()``, and without either the windows run on
        processing time (an event's time is its arrival at the window operator; windows close
        by the wall clock, also while no data arrives).

        A window is emitted when the watermark passes its end, and its state is kept until the
        watermark passes ``end + allowed_lateness``.  An event arriving in that interval updates
        the window and emits an *update*: a new row for the same window and key that supersedes
        the earlier one.  Events later than that go to ``late_output()``.

        >>> import heliosdb as hdb
        >>> w = hdb.StreamEnvironment().from_iterable([{"k": 1, "ts": 0}]).key_by("k").window(hdb.TumblingWindow.of(60), time="ts")
        >>> w.spec.size_ns
        60000000000
        """
        if not isinstance(spec, WINDOW_SPECS):
            raise PlanError(
                "window() takes a window spec such as TumblingWindow.of(timedelta(seconds=1)), "
                f"SlidingWindow.of(size, slide) or SessionWindow.with_gap(gap); got {spec!r}"
            )
        if time is not None and not isinstance(time, str):
            raise PlanError(f"window(time=) takes a column name, got {time!r}")
        lateness = to_nanos(allowed_lateness, "window(allowed_lateness=)")
        if lateness < 0:
            raise ConfigError(f"window(allowed_lateness=) must not be negative, got {allowed_lateness!r}")
        return WindowedStream(self, spec, time, lateness)

    def aggregate(self, **aggs: AggSpec) -> Stream:
        """Running per-key aggregates (no window): after each batch, one row per key the batch
        touched with that key's aggregates so far: the keys, then ``aggs``.  A later row for a
        key supersedes the earlier one.  Bound the state with ``.with_state_ttl(td)`` or
        ``StreamingConfig(state=StateConfig(ttl=))``.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> rows = [{"k": "a", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 5}]
        >>> out = env.from_iterable(rows).with_batch_size(2).key_by("k").aggregate(total=hdb.sum("v")).collect()
        >>> out.to_pydict()
        {'k': ['a', 'b'], 'total': [3, 5]}
        """
        _check_aggs(aggs, set(self.keys))
        return self._stream._then(RunningAggregate(tuple(self.keys), tuple(aggs.items())))


def _check_aggs(aggs: Dict[str, Any], reserved: set) -> None:
    if not aggs:
        raise PlanError("aggregate() needs at least one name=aggregate, e.g. count=hdb.count()")
    for n, a in aggs.items():
        if not isinstance(a, AggSpec):
            raise PlanError(f"aggregate({n}=...) takes hdb.count(), hdb.sum(col), ...; got {a!r}")
    clash = reserved & set(aggs)
    if clash:
        raise SchemaError(f"aggregate(): output names {sorted(clash)} clash with the window or key columns")


class WindowedStream:
    """Keyed windows; ``.aggregate(name=hdb.count(), ...)`` turns them into a result stream."""

    def __init__(self, keyed: KeyedStream, spec: WindowSpec, time: Optional[str], allowed_lateness_ns: int = 0):
        self._keyed = keyed
        self.spec = spec
        self.time = time
        self.allowed_lateness_ns = allowed_lateness_ns

    def aggregate(self, **aggs: AggSpec) -> Stream:
        """One row per (window, key): ``window_start``, ``window_end``, the keys, then ``aggs``.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> rows = [{"ts": 0, "k": 1, "v": 1.0}, {"ts": 500, "k": 1, "v": 3.0}, {"ts": 1500, "k": 1, "v": 5.0}]
        >>> out = (env.from_iterable(rows).key_by("k").window(hdb.TumblingWindow.of(1), time="ts")
        ...        .aggregate(n=hdb.count(), total=hdb.sum("v")).collect())
        >>> out.select(["k", "n", "total"]).to_pydict()
        {'k': [1, 1], 'n': [2, 1], 'total': [4.0, 5.0]}
        """
        _check_aggs(aggs, {"window_start", "window_end"} | set(self._keyed.keys))
        return self._keyed._stream._then(WindowAggregate(tuple(self._keyed.keys), self.spec, self.time,
                                                         tuple(aggs.items()), self.allowed_lateness_ns))
