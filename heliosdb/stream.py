"""The fluent builder: ``Stream``, ``KeyedStream``, ``WindowedStream``.

Building a stream records a logical plan and executes nothing.  ``collect()``, ``sink()`` +
``env.execute()`` run it; ``explain()`` shows what would run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

import pyarrow as pa

from .config import DEFAULT_MAX_DRIFT, Duration, to_nanos
from .errors import ConfigError, PlanError, SchemaError
from .aggregates import AggSpec
from .expr import Expr, as_expr, parse_projection
from .windows import WINDOW_SPECS, TumblingWindow, WatermarkStrategy, WindowSpec

if TYPE_CHECKING:  # pragma: no cover
    from .environment import StreamEnvironment
    from .plan import Plan

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Steps ``set_parallelism()`` applies to: keyed aggregates, and the stateless steps that fuse.
PARALLEL_KINDS = ("window", "keyed_aggregate", "filter", "select", "with_columns", "map", "process")


def validate_name(name: str, what: str = "step name") -> str:
    """Names become path segments of checkpoints and metric labels: keep them plain."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{what} {name!r} is not valid: use 1-128 letters, digits, '_', '-' or '.' (never '..'), "
            "starting with a letter or digit"
        )
    return name


@dataclass(eq=False)
class Node:
    """One step of the logical plan."""

    kind: str
    parent: Optional["Node"]
    name: str
    params: Dict[str, Any] = field(default_factory=dict)
    batch_size: Optional[int] = None
    batch_timeout_ns: Optional[int] = None

    def source(self) -> "Node":
        n = self
        while n.parent is not None:
            n = n.parent
        return n


class Stream:
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

    def __init__(self, env: "StreamEnvironment", node: Node):
        self._env = env
        self._node = node

    # -- helpers -----------------------------------------------------------------------------
    def _then(self, kind: str, **params: Any) -> "Stream":
        return Stream(self._env, Node(kind, self._node, self._env._next_name(kind), params))

    @property
    def schema(self) -> pa.Schema:
        """The schema of this stream's records (computed from the plan; runs nothing)."""
        from .plan import output_schema

        return output_schema(self._node)

    # -- source options ------------------------------------------------------------------------
    def with_batch_size(self, n: int) -> "Stream":
        """Cut the source's micro-batches at ``n`` rows (sources only).

        >>> import heliosdb as hdb
        >>> sizes = []
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=10).with_batch_size(4).inspect(lambda b: sizes.append(b.num_rows)).collect()
        >>> sizes
        [4, 4, 2]
        """
        self._require_source("with_batch_size")
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"with_batch_size() takes a positive integer, got {n!r}")
        node = Node("source", None, self._node.name, self._node.params, n, self._node.batch_timeout_ns)
        return Stream(self._env, node)

    def with_batch_timeout(self, timeout: Duration) -> "Stream":
        """Emit a partial micro-batch once its first row has waited ``timeout`` (sources only).

        >>> import heliosdb as hdb
        >>> from datetime import timedelta
        >>> s = hdb.StreamEnvironment().from_iterable([{"x": 1}]).with_batch_timeout(timedelta(milliseconds=5))
        >>> s.collect().num_rows
        1
        """
        self._require_source("with_batch_timeout")
        ns = to_nanos(timeout, "with_batch_timeout()")
        if ns <= 0:
            raise ConfigError(f"with_batch_timeout() must be positive, got {timeout!r}")
        node = Node("source", None, self._node.name, self._node.params, self._node.batch_size, ns)
        return Stream(self._env, node)

    def _require_source(self, what: str) -> None:
        if self._node.kind != "source":
            raise PlanError(f"{what}() applies to a source; call it right after env.from_...()")

    # -- byte sources: formats (decoded a whole batch at a time; see heliosdb.formats) ----------
    def _with_source(self, what: str, change) -> "Stream":
        self._require_source(what)
        src = self._node.params["source"]
        if not src.decodes_bytes:
            raise PlanError(f"{what}() applies to a source of bytes such as kafka_source(); "
                            f"step {self._node.name!r} is a {src.kind} source")
        params = dict(self._node.params, source=change(src))
        node = Node("source", None, self._node.name, params, self._node.batch_size,
                    self._node.batch_timeout_ns)
        return Stream(self._env, node)

    def deserialize_json(self, schema: pa.Schema) -> "Stream":
        """Decode each message as a JSON object with the fields of ``schema``.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> s = hdb.StreamEnvironment().kafka_source("t").deserialize_json(pa.schema([("n", pa.int64())]))
        >>> s.schema.field("n").type
        DataType(int64)
        """
        from .formats.json import JsonFormat

        return self._with_source("deserialize_json", lambda s: s.with_format(JsonFormat(schema)))

    def deserialize_msgpack(self, schema: pa.Schema) -> "Stream":
        """Decode each message as a MessagePack map with the fields of ``schema``.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_msgpack(pa.schema([("n", pa.int64())])).schema.names[0]
        'n'
        """
        from .formats.msgpack import MsgpackFormat

        return self._with_source("deserialize_msgpack", lambda s: s.with_format(MsgpackFormat(schema)))

    def deserialize_avro(self, schema: Any, wire_format: str = "plain",
                         writer_schemas: Optional[Dict[int, Any]] = None) -> "Stream":
        """Decode each message as an Avro record of ``schema`` (a dict or JSON string):
        ``wire_format="plain"`` or ``"confluent"`` (magic byte, schema id; ``writer_schemas``
        maps the accepted ids to their schemas).

        >>> import heliosdb as hdb
        >>> avro = {"type": "record", "name": "E", "fields": [{"name": "n", "type": "long"}]}
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_avro(avro, "confluent").schema.names[0]
        'n'
        """
        from .formats.avro import AvroFormat

        fmt = AvroFormat(schema, wire_format=wire_format, writer_schemas=writer_schemas)
        return self._with_source("deserialize_avro", lambda s: s.with_format(fmt))

    def deserialize_protobuf(self, message_class: Any) -> "Stream":
        """Decode each message as a ``message_class`` protobuf message.

        >>> import heliosdb as hdb
        >>> from google.protobuf import timestamp_pb2
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_protobuf(timestamp_pb2.Timestamp).schema.names[:2]
        ['seconds', 'nanos']
        """
        from .formats.protobuf import ProtobufFormat

        fmt = ProtobufFormat(message_class)
        return self._with_source("deserialize_protobuf", lambda s: s.with_format(fmt))

    def deserialize_arrow(self, schema: Optional[pa.Schema] = None) -> "Stream":
        """Decode each message as an Arrow IPC stream (any number of rows per message).
        Without ``schema``, the first message's schema is read when the job is planned.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_arrow(pa.schema([("x", pa.float64())])).schema.names[0]
        'x'
        """
        from .formats.arrow_ipc import ArrowIpcFormat

        return self._with_source("deserialize_arrow", lambda s: s.with_format(ArrowIpcFormat(schema)))

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
            return self._then("filter", predicate=predicate)
        if callable(predicate):
            return self._then("filter", fn=predicate, compile=bool(compile))
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
        return self._function("map", fn, schema, compile)

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
        return self._function("process", fn, schema, compile)

    def _function(self, kind: str, fn: Callable, schema: Optional[pa.Schema], compile: bool) -> "Stream":
        if not callable(fn):
            raise PlanError(f"{kind}() takes a function of one record, e.g. lambda e: e.value * 2, "
                            f"got {fn!r}")
        if schema is not None and not isinstance(schema, pa.Schema):
            raise PlanError(f"{kind}(schema=) takes a pyarrow.Schema, got {schema!r}")
        return self._then(kind, fn=fn, schema=schema, compile=bool(compile))

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
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"batch() takes a positive number of rows, got {n!r}")
        return self._then("batch", size=n)

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
            if n.kind == "unbatch":
                depth += 1
            elif n.kind == "batch":
                if depth == 0:
                    return self._then("unbatch")
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
        return self._then("select", items=parse_projection(columns, "select"))

    def with_columns(self, **exprs: Any) -> "Stream":
        """Add or replace columns computed from expressions.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> env.from_iterable([{"v": 2.0}]).with_columns(v2=hdb.col("v") * 2).collect().to_pydict()
        {'v': [2.0], 'v2': [4.0]}
        """
        if not exprs:
            raise PlanError("with_columns() needs at least one name=expression")
        return self._then("with_columns", exprs={k: as_expr(v) for k, v in exprs.items()})

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
        if not callable(fn):
            raise PlanError(f"map_batches() takes a function of a RecordBatch, got {fn!r}")
        return self._then("map_batches", fn=fn, schema=schema)

    def inspect(self, fn: Callable[[pa.RecordBatch], None]) -> "Stream":
        """Call ``fn(batch)`` for each batch (to log or debug) and pass the batch on unchanged.

        >>> import heliosdb as hdb
        >>> seen = []
        >>> _ = hdb.StreamEnvironment().from_iterable([{"x": 1}]).inspect(lambda b: seen.append(b.num_rows)).collect()
        >>> seen
        [1]
        """
        if not callable(fn):
            raise PlanError(f"inspect() takes a function of a RecordBatch, got {fn!r}")
        return self._then("inspect", fn=fn)

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
        return self._then("watermark", strategy=strategy)

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
        if self._node.kind == "source" and self._node.params["source"].parallel_readers:
            # A partitioned source (Kafka): n readers, each reading its share of the partitions.
            return self._with_source("set_parallelism", lambda s: s.with_readers(n))
        if self._node.kind not in PARALLEL_KINDS:
            raise PlanError(
                f"set_parallelism() applies to a keyed aggregate or a stateless step (filter, "
                f"select, with_columns, map, process); step {self._node.name!r} is a "
                f"{self._node.kind} step, which runs once, in order"
            )
        self._node.params["parallelism"] = n
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
        if self._node.kind != "keyed_aggregate":
            raise PlanError(
                f"with_state_ttl() applies to a running keyed aggregate (key_by(...).aggregate(...)); "
                f"step {self._node.name!r} is a {self._node.kind} step (window state is dropped by "
                "the watermark)"
            )
        ttl_ns = to_nanos(ttl, "with_state_ttl(ttl)")
        every = ttl_ns if cleanup_interval is None else to_nanos(cleanup_interval, "with_state_ttl(cleanup_interval)")
        if ttl_ns <= 0 or every <= 0:
            raise ConfigError("with_state_ttl(): ttl and cleanup_interval must be positive")
        self._node.params["ttl"] = (ttl_ns, every)
        return self

    def late_output(self) -> "Stream":
        """The events the last step (a window aggregate) found too late: later than the
        allowed lateness after their windows' end.  A stream of its own with the input's
        schema, which can be transformed and sunk like any other; the events are also counted in
        ``streaming_late_events_total``.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> rows = [{"ts": 5000, "k": 1}, {"ts": 100, "k": 1}]          # 100 is 4.9 s late
        >>> w = env.from_iterable(rows).with_watermark("ts").key_by("k").window(hdb.TumblingWindow.of(1)).aggregate(n=hdb.count())
        >>> late, out = hdb.sinks.memory(), hdb.sinks.memory()
        >>> _ = w.sink(out); _ = w.late_output().sink(late)
        >>> _ = env.execute(name="doc-late")
        >>> late.to_table().to_pydict(), out.to_table()["n"].to_pylist()
        ({'ts': [100], 'k': [1]}, [1])
        """
        if self._node.kind != "window":
            raise PlanError(
                f"late_output() applies to a window aggregate; step {self._node.name!r} is a "
                f"{self._node.kind} step"
            )
        return Stream(self._env, Node("late_output", self._node, self._env._next_name("late"), {}))

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
        node = Node("sink", self._node, self._env._next_name(f"sink-{spec.kind}"), {"spec": spec})
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
        node = Node("sink", self._node, self._env._next_name("collect"), {"spec": out})
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

        return explain_nodes(self._env, [Node("sink", self._node, "collect", {"spec": MemorySink()})],
                             events_per_second)

    def __repr__(self) -> str:
        return f"<Stream {self._node.kind}[{self._node.name}]>"


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

    def aggregate(self, **aggs: AggSpec) -> "Stream":
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
        return self._stream._then("keyed_aggregate", keys=self.keys, aggs=list(aggs.items()))


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
        return self._keyed._stream._then("window", keys=self._keyed.keys, spec=self.spec, time=self.time,
                                         aggs=list(aggs.items()), lateness=self.allowed_lateness_ns)
