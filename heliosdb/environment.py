"""``StreamEnvironment``: where sources are created and jobs are run."""
from __future__ import annotations

import itertools
import logging
import weakref
from typing import Any, Iterable, List, Optional, Sequence, Union

import pyarrow as pa

from .display import in_notebook
from .config import (DEFAULT_KAFKA_PARTITION_BUFFER_ROWS, DEFAULT_KAFKA_STARTUP_TIMEOUT, Duration,
                     StreamingConfig, kafka_bootstrap, operator_metrics_enabled, to_nanos)
from .connectors import sources as _src
from ._optional import require, require_storage
from .errors import ConfigError, PlanError
from .runtime.executor import Job, JobHandle, JobResult
from .logical import Node, Source, validate_name
from .stream import Stream

log = logging.getLogger("heliosdb")


class StreamEnvironment:
    """The entry point: create sources, build pipelines, run them.

    Examples
    --------
    >>> import heliosdb as hdb
    >>> from heliosdb import col
    >>> env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1024))
    >>> t = env.from_iterable([{"x": i} for i in range(5)]).filter(col("x") % 2 == 0).collect()
    >>> t["x"].to_pylist()
    [0, 2, 4]
    """

    def __init__(self, config: Optional[StreamingConfig] = None):
        if config is not None and not isinstance(config, StreamingConfig):
            raise ConfigError(f"StreamEnvironment() takes a StreamingConfig, got {config!r}")
        self.config = config or StreamingConfig()
        self._counter = itertools.count(1)
        self._sinks: List[Node] = []
        self._metrics_use = None
        self._release: Optional[weakref.finalize] = None

    # -- metrics ---------------------------------------------------------------------------
    @property
    def metrics_url(self) -> Optional[str]:
        """Where this environment serves Prometheus metrics (``StreamingConfig(metrics=)``),
        e.g. ``http://127.0.0.1:9464/metrics``; None without a MetricsConfig.

        Servers are per process and shared: environments asking for the same host and port
        (every ``port=0`` one, too) are served by one server, jobs labelled by name (a job
        run again under the same name replaces its old series, from whichever environment).
        The server closes when no environment uses it any more: ``close()``, the environment
        garbage-collected, or a Ctrl-C that stopped its job.  So a notebook cell that creates
        an environment with ``MetricsConfig(port=9464)`` can be run again and again.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0)))
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> _ = env.execute(name="doc-metrics")
        >>> from urllib.request import urlopen
        >>> text = urlopen(env.metrics_url).read().decode()
        >>> 'streaming_events_processed_total{job="doc-metrics",operator="generate-1"} 1000.0' in text
        True
        >>> again = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0)))
        >>> again.metrics_url == env.metrics_url
        True
        >>> env.close(); again.close()
        """
        use = self._metrics()
        return None if use is None else use.url

    def _metrics(self):
        mc = self.config.metrics
        if mc is not None and self._metrics_use is None:
            from .metrics_server import attach

            use = attach(mc.port, mc.host)
            self._metrics_use = use
            # Garbage-collected without close() (a notebook cell run again): released too.
            self._release = weakref.finalize(self, use.release)
        return self._metrics_use

    def close(self) -> None:
        """Stop using the metrics server (it closes when no environment uses it any more).
        Idempotent; the environment serves again if it runs another job."""
        use, self._metrics_use = self._metrics_use, None
        if use is not None:
            self._release()

    def __enter__(self) -> "StreamEnvironment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- naming ------------------------------------------------------------------------------
    def _next_name(self, kind: str) -> str:
        return f"{kind}-{next(self._counter)}"

    def _source(self, source: _src.SourceSpec, kind: str) -> Stream:
        return Stream(self, Node(Source(source), None, self._next_name(kind)))

    # -- sources -----------------------------------------------------------------------------
    def from_arrow(self, data: Any, split_by: Optional[str] = None) -> Stream:
        """Replay a pyarrow Table / RecordBatch(es) / reader, or a pandas or polars DataFrame.

        ``split_by`` names a column whose values are the splits the rows came from (e.g.
        ``kafka_partition`` of a captured topic), each in its own event-time order: a
        ``with_watermark`` right after keeps a watermark per split, so the replay of a
        capture gives what reading the partitions live gives.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> hdb.StreamEnvironment().from_arrow(pa.table({"a": [1, 2]})).collect().num_rows
        2
        >>> capture = pa.table({"p": [0, 0, 1, 1], "ts": [5000, 6000, 1000, 2000], "k": [1] * 4})
        >>> (hdb.StreamEnvironment().from_arrow(capture, split_by="p")
        ...  .with_watermark(time="ts").key_by("k").window(hdb.TumblingWindow.of(1))
        ...  .aggregate(n=hdb.count()).collect()["n"].to_pylist())        # partition 1 is not late
        [1, 1, 1, 1]
        """
        return self._source(_src.ArrowSource(_src.to_arrow_table(data), split_by), "from_arrow")

    def from_pandas(self, df: Any) -> Stream:
        """Replay a pandas DataFrame (same as ``from_arrow``).

        >>> import heliosdb as hdb, pandas as pd
        >>> hdb.StreamEnvironment().from_pandas(pd.DataFrame({"a": [1, 2]})).collect().num_rows
        2
        """
        return self._source(_src.ArrowSource(_src.to_arrow_table(df, "from_pandas")), "from_pandas")

    def from_polars(self, df: Any) -> Stream:
        """Replay a polars DataFrame (same as ``from_arrow``).

        >>> import heliosdb as hdb, polars as pl
        >>> hdb.StreamEnvironment().from_polars(pl.DataFrame({"a": [1, 2]})).collect().num_rows
        2
        """
        return self._source(_src.ArrowSource(_src.to_arrow_table(df, "from_polars")), "from_polars")

    def from_parquet(self, url: str, storage_options: Optional[dict] = None,
                     extra: str = "error") -> Stream:
        """Read Parquet files: a path, folder, glob, or any fsspec URL (``s3://``, ``memory://``).

        Parameters
        ----------
        url
            A file, a folder (its ``*.parquet`` files), a glob, or an fsspec URL of them.
        storage_options
            fsspec options (credentials, endpoint, ...).
        extra
            What to do with a column that a later file has and the first does not:
            ``"error"`` (the default) raises a SchemaError naming the file and the column;
            ``"ignore"`` leaves it unread.

        Files are read in name order; only the columns the pipeline uses are read.  The first
        file's schema is the stream's; a later file that lacks one of its columns or has it
        with another type is a SchemaError naming the file and the column (nothing is cast).

        Examples
        --------
        >>> import heliosdb as hdb, pyarrow as pa, pyarrow.parquet as pq, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> pq.write_table(pa.table({"a": [1, 2, 3]}), f"{folder}/part-0.parquet")
        >>> pq.write_table(pa.table({"a": [4], "b": ["x"]}), f"{folder}/part-1.parquet")
        >>> env = hdb.StreamEnvironment()
        >>> env.from_parquet(folder + "/*.parquet", extra="ignore").collect()["a"].to_pylist()
        [1, 2, 3, 4]
        """
        require_storage(url, "from_parquet()")
        return self._source(_src.ParquetSource(url, storage_options, extra), "from_parquet")

    def from_iterable(self, records: Iterable[dict], schema: Optional[pa.Schema] = None,
                      extra: str = "error") -> Stream:
        """Python dict records from any iterable or generator (it may be slow or blocking).

        Parameters
        ----------
        records
            Dicts of field name -> value.  A field a record lacks is null.
        schema
            The records' schema.  Without it, the types are inferred from the first record
            (an int is ``int64``, a float ``float64``, a ``datetime`` ``timestamp[us]``, ...),
            and later records must fit them.
        extra
            What to do with a field the schema does not have: ``"error"`` (the default) raises
            a DataError naming the record and the field; ``"ignore"`` drops the field.

        Values are kept exactly or the job fails: a value that would change in its column (2.5
        in an ``int64`` column, 300 in ``int8``, a ``datetime`` with microseconds in a
        ``timestamp[ms]`` column, "3" in an ``int64`` column) raises a DataError naming the
        record's index (0-based) and the field.  There is no silent widening: after ``{"a": 1}``
        a record ``{"a": 2.5}`` is an error that says to pass ``schema=`` (as in Spark;
        Polars would look further ahead, which a stream cannot).  Ints go into float columns
        when the float holds them exactly; floats into ``float32`` round to the nearest
        ``float32``, but never to infinity.

        Examples
        --------
        >>> import heliosdb as hdb, pyarrow as pa
        >>> env = hdb.StreamEnvironment()
        >>> env.from_iterable([{"a": 1}, {"a": 2}]).collect().to_pydict()
        {'a': [1, 2]}
        >>> schema = pa.schema([("a", pa.float64())])
        >>> env.from_iterable([{"a": 1}, {"a": 2.5, "b": "x"}], schema=schema,
        ...                   extra="ignore").collect().to_pydict()
        {'a': [1.0, 2.5]}
        >>> env.from_iterable([{"a": 1}, {"a": 2.5}]).collect()
        Traceback (most recent call last):
        ...
        heliosdb.errors.DataError: from_iterable: record 1, field 'a': value 2.5 would change to 2 as int64. ...
        """
        if isinstance(records, (dict, str, bytes)):
            raise ConfigError("from_iterable() takes an iterable of dict records, e.g. a list of dicts")
        if schema is not None and not isinstance(schema, pa.Schema):
            raise ConfigError(f"from_iterable(schema=) takes a pyarrow.Schema, got {schema!r}")
        return self._source(_src.IterableSource(records, schema, extra), "from_iterable")

    def generate(self, rate: Optional[float] = None, count: Optional[int] = None,
                 duration: Optional[Duration] = None, keys: int = 10_000, seed: int = 42,
                 start_ms: int = 1_700_000_000_000, events_per_ms: int = 100) -> Stream:
        """Synthetic events ``ts`` (epoch ms), ``key``, ``value``, ``category``.

        ``rate`` paces it to that many events/s with wall-clock event times; without ``rate``
        it runs flat out with event time advancing ``events_per_ms`` events per millisecond
        from ``start_ms``.  It ends after ``count`` events or ``duration``, else runs until
        stopped.

        Event ``i``'s ``key``, ``value`` and ``category`` are a function of ``seed`` and ``i``
        alone, so a replay with the same seed is the same stream whatever the batch size,
        batch timeout or parallelism (and without ``rate``, so is ``ts``).

        Examples
        --------
        >>> import heliosdb as hdb
        >>> small = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=7))
        >>> a = small.generate(count=1000, seed=1).collect()
        >>> b = hdb.StreamEnvironment().generate(count=1000, seed=1).collect()
        >>> a.num_rows, a.equals(b)
        (1000, True)
        """
        dur = None if duration is None else to_nanos(duration, "generate(duration=)") / 1e9
        return self._source(
            _src.GeneratorSource(rate, count, dur, keys, seed, start_ms, events_per_ms), "generate")

    def kafka_source(self, topics: Union[str, Sequence[str]], bootstrap_servers: Optional[str] = None,
                     group_id: Optional[str] = None, *, start_offsets: Optional[dict] = None,
                     bounded: bool = False, event_time: Optional[str] = None,
                     on_error: str = "fail", dead_letter: Any = None,
                     max_record_bytes: Optional[int] = None,
                     startup_timeout: Duration = DEFAULT_KAFKA_STARTUP_TIMEOUT,
                     **librdkafka_conf: Any) -> Stream:
        """Read Kafka topic(s) with confluent-kafka, in batches; see :mod:`heliosdb.connectors.kafka`.

        Without a format each row is the raw ``value`` (binary); ``.deserialize_json(schema)``,
        ``.deserialize_msgpack(schema)``, ``.deserialize_avro(schema)``,
        ``.deserialize_protobuf(cls)`` and ``.deserialize_arrow()`` decode a whole batch of
        messages at once.  Columns ``kafka_topic``, ``kafka_partition``, ``kafka_offset``,
        ``kafka_timestamp`` and ``kafka_key`` are there too (built only when used).

        - ``bootstrap_servers``: default ``$HELIOSDB_KAFKA_BOOTSTRAP``, else 127.0.0.1:9092.
        - ``group_id``: the consumer group positions are committed to, for monitoring; a new
          job without ``start_offsets`` starts at the group's committed offsets, else at
          ``auto_offset_reset`` (default ``"earliest"``).
        - ``start_offsets``: ``{topic: {partition: offset}}`` to start at (a position as
          ``KafkaSource.position()`` reports it; checkpoints restore through the same seek).
        - ``startup_timeout``: how long the source keeps trying, with backoff, to find the
          topics and read the group's committed offsets and the log offsets at start (default
          30 s); then the job fails naming the group, topic and partitions.  A start position
          is never guessed from an error.
        - ``bounded=True``: stop at the end offsets the topic has when the job starts.
        - ``event_time``: merge partitions by this column (or ``"kafka_timestamp"``), so a
          backlog is read in event-time order whatever the partitioning.
        - ``on_error``: ``"fail"`` (default), ``"dead_letter"`` (to the ``dead_letter`` sink),
          or ``"skip"``, for messages that do not decode or exceed ``max_record_bytes``.
        - ``**librdkafka_conf``: consumer settings, ``auto_offset_reset="latest"`` meaning
          ``auto.offset.reset``.

        Partitions are read in parallel by ``.set_parallelism(n)`` readers (default: one less
        than the core count, at most one per partition).  Examples that need a broker are in
        the README; building a stream contacts none:

        >>> import heliosdb as hdb, pyarrow as pa
        >>> env = hdb.StreamEnvironment()
        >>> s = (env.kafka_source("events", bootstrap_servers="127.0.0.1:9092", group_id="g")
        ...      .with_batch_size(1000).deserialize_json(pa.schema([("user", pa.string())])))
        >>> s.schema.names
        ['user', 'kafka_topic', 'kafka_partition', 'kafka_offset', 'kafka_timestamp', 'kafka_key']
        """
        require("confluent_kafka", "kafka", "kafka_source()")
        from .connectors.kafka import KafkaSource, client_conf

        source = KafkaSource(topics, kafka_bootstrap(bootstrap_servers), group_id, start_offsets=start_offsets,
                             bounded=bounded, event_time=event_time, on_error=on_error,
                             dead_letter=dead_letter, max_record_bytes=max_record_bytes,
                             startup_timeout_s=to_nanos(startup_timeout, "kafka_source(startup_timeout=)") / 1e9,
                             buffer_rows=DEFAULT_KAFKA_PARTITION_BUFFER_ROWS, conf=client_conf(librdkafka_conf))
        return self._source(source, "kafka")

    # -- running -----------------------------------------------------------------------------
    def _job(self, sinks: List[Node], name: str) -> Job:
        from .plan import build

        validate_name(name, "job name")
        if not sinks:
            raise PlanError("nothing to run: add a sink with stream.sink(hdb.sinks....) first")
        plan, _, state_ops, _ = build(self, sinks)
        mc = self.config.metrics
        job = Job(plan, name, self.config.buffer_size, self.config.slow_batch_warning_ns, state_ops,
                  freeze_gc=self.config.freeze_gc, timed=operator_metrics_enabled(),
                  sample_interval_s=to_nanos(self.config.metrics_sample_interval, "metrics_sample_interval") / 1e9,
                  **({"metrics_window_ns": mc.window_ns} if mc is not None else {}))
        plan.source.attach_metrics(job.metrics)     # e.g. a Kafka source's dead-letter counts
        server = self._metrics()
        if server is not None:
            server.add(job.metrics)
            job.interrupt_hooks.append(self.close)     # a Ctrl-C frees the port too
        try:
            if self.config.checkpoint is not None:
                self._attach_checkpoints(job, plan, name)
            job.start()
        except BaseException as exc:
            # e.g. a Ctrl-C while restoring: the lease must not outlive the job that never ran
            if job.coordinator is not None and not job.threads():
                job.coordinator.close(failed=True)
            if isinstance(exc, KeyboardInterrupt):
                self.close()                        # and the port, as after any Ctrl-C
            raise
        return job

    def _attach_checkpoints(self, job: Job, plan, name: str) -> None:
        """Restore the newest valid checkpoint of job ``name`` and let the job take new ones."""
        from .checkpoint.coordinator import Coordinator
        from .operators.exchange import HashPartitioner

        if not plan.source.replayable:
            raise ConfigError(
                f"checkpoints need a source that can seek back after a crash; the {plan.source.kind} "
                "source cannot. Use from_arrow, from_parquet, generate or kafka_source, or drop "
                "StreamingConfig(checkpoint=)"
            )
        coord = Coordinator(self.config.checkpoint, name, job.metrics.checkpoints)
        coord.stages = len(plan.stages)
        state_ops, sinks = [], []
        for st in plan.stages:
            for op in st.operators:
                if op.commits:
                    sinks.append(op)
                elif op.stateful:
                    select = None
                    where = op.placement
                    if where.partitioned:

                        def select(table, where=where, step=op.name):
                            parts = HashPartitioner(table.schema, list(where.keys), where.parallelism, step,
                                                    where.key_types or None)
                            return parts.partitions(table) == where.subtask
                    state_ops.append((op, select))
        coord.restore(state_ops, plan.source, sinks)
        job.coordinator = coord

    def _run(self, sinks: List[Node], name: str) -> JobResult:
        for node in sinks[0].sources():
            src = node.step.source
            if isinstance(src, _src.GeneratorSource) and src.count is None and src.duration_s is None:
                raise PlanError("collect() needs a bounded source: give generate() a count= or duration=")
        return self._job(sinks, name).wait()

    def execute(self, name: str = "job", progress: bool = False) -> JobResult:
        """Run every sink added with ``stream.sink(...)``; block until done.

        Returns a :class:`JobResult` with the job's metrics.  An error in any step stops the
        job and is raised here (a ``HeliosError`` as it is, anything else as ExecutionError).
        ``progress=True`` shows live throughput, latency and backpressure meanwhile.

        Ctrl-C (a KeyboardInterrupt) stops the job cleanly and is re-raised: the source stops,
        in-flight batches reach the sinks, a checkpointed job takes a final checkpoint, every
        thread ends, the lease and the metrics server are freed; running the job again (same
        name, same storage) resumes from that checkpoint.  A second Ctrl-C aborts without the
        final checkpoint (a restart resumes from the previous one).  SIGTERM stops the job the
        same way, then ends the process as SIGTERM would have (see
        :mod:`heliosdb.runtime.stopping`).

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> env.execute(name="doc-execute").metrics["streaming_events_processed_total"]
        1000
        """
        return JobHandle(self._job(list(self._sinks), name)).wait(progress=progress)

    def execute_async(self, name: str = "job", progress: Optional[bool] = None) -> JobHandle:
        """Start every sink's pipeline and return at once with a :class:`JobHandle`; the job
        runs on threads in the background.

        ``handle.stop()`` stops the job as Ctrl-C stops ``execute()`` (with a final checkpoint
        if checkpointed); a Ctrl-C or SIGTERM while ``handle.wait()`` blocks does the same, and
        so does cancelling a task that awaits it (``await handle``).

        ``progress``: show the handle's live display (``handle.show()``); None (the default)
        shows it when running in a Jupyter kernel, True or False force it.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(rate=1000).sink(hdb.sinks.memory())    # unbounded
        >>> handle = env.execute_async(name="doc-async-stop")
        >>> handle.stop()
        >>> handle.wait().name
        'doc-async-stop'
        """
        if progress is not None and not isinstance(progress, bool):
            raise ConfigError(f"execute_async(progress=) takes True, False or None (automatic in a "
                              f"notebook), got {progress!r}")
        handle = JobHandle(self._job(list(self._sinks), name))
        if progress or (progress is None and in_notebook()):
            handle.show()
        return handle

    def explain(self, events_per_second: Optional[float] = None):
        """The physical plan of ``execute()``: stages, fused kernels, operators, parallelism,
        and each window's state memory estimate.

        The estimate is the user guide's formula, events/s x window seconds x event bytes x
        parallelism, with the event size taken from the window's input schema; events/s is
        ``events_per_second`` if given, else the source's declared rate (``generate(rate=)``).

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.from_iterable([{"x": 1}]).filter(hdb.col("x") > 0).sink(hdb.sinks.console())
        >>> print(env.explain())  # doctest: +ELLIPSIS
        batch_size=65,536 ...
        """
        from .plan import explain_nodes

        if not self._sinks:
            raise PlanError("nothing to explain: add a sink with stream.sink(...) first")
        return explain_nodes(self, list(self._sinks), events_per_second)
