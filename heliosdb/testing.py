"""Test helpers shipped with the package: crash sentinels, output readers, the crash oracle.

- :class:`CrashAt`: an ``inspect()`` function that raises :class:`InjectedCrash` on its k-th
  batch, once, so a job fails at a chosen micro-batch and the same pipeline, run again,
  completes.
- :func:`read_parquet_output`: the committed rows of a Parquet sink's folder, read with
  pyarrow.dataset, pandas *and* DuckDB, which must agree (and so must all skip the sink's
  hidden, uncommitted files).
- :func:`assert_same_rows` and :func:`last_per_key`: compare results as multisets of rows
  (floats within a tolerance), or, for update streams, by the last row of each key.
- :func:`kafka_new_topic`, :func:`kafka_produce`, :func:`kafka_read`: set up and read back
  topics on a real broker (tests and benchmarks).
- :func:`run_job` and :func:`crash_and_restore`: the checkpoint oracle runner. A job crashed at
  batch ``k`` and started again with the same name and storage must give exactly the output of
  an uninterrupted run.

The pandas and DuckDB imports happen inside the functions that need them (test-only
dependencies, ``pip install heliosdb-streaming[test]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from .config import StreamingConfig
from .environment import StreamEnvironment
from .errors import ExecutionError
from .runtime.executor import JobResult

__all__ = ["InjectedCrash", "CrashAt", "read_parquet_output", "visible_files", "hidden_files",
           "assert_same_rows", "last_per_key", "run_job", "crash_and_restore", "RestoreRun",
           "kafka_new_topic", "kafka_produce", "kafka_read"]


class InjectedCrash(RuntimeError):
    """The failure :class:`CrashAt` injects.

    It stands for a user's function failing, which the engine reports as an ``ExecutionError``
    naming the step; it is deliberately not a ``HeliosError`` (those live in
    :mod:`heliosdb.errors` and mean the engine itself refused something).
    """


class CrashAt:
    """An ``inspect()`` function that raises :class:`InjectedCrash` on its ``k``-th batch
    (1-based), once: after it fired it lets every batch through, so the same pipeline object
    can be run again to restore.

    Examples
    --------
    >>> import heliosdb as hdb, pyarrow as pa
    >>> crash = CrashAt(2)
    >>> env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=2))
    >>> _ = env.from_arrow(pa.table({"x": [1, 2, 3, 4]})).inspect(crash).sink(hdb.sinks.memory())
    >>> try:
    ...     env.execute(name="doc-crash-at")
    ... except hdb.ExecutionError as e:
    ...     print(type(e.__cause__).__name__, crash.fired)
    InjectedCrash True
    >>> crash.seen
    2
    """

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"CrashAt(k) takes the 1-based number of the batch to fail on, got {k!r}")
        self.k = k
        self.seen = 0
        self.fired = False

    def __call__(self, batch: pa.RecordBatch) -> None:
        self.seen += 1
        if not self.fired and self.seen == self.k:
            self.fired = True
            raise InjectedCrash(f"injected crash at batch {self.k}")

    def __repr__(self) -> str:
        return f"CrashAt({self.k})"


# -- reading a Parquet sink's output --------------------------------------------------------------
def _fs(url: str, storage_options: Optional[dict]):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def _names(url: str, storage_options: Optional[dict]) -> List[str]:
    fs, root = _fs(url, storage_options)
    fs.invalidate_cache()
    try:
        paths = fs.ls(root, detail=False)
    except FileNotFoundError:
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in paths)


def visible_files(url: str, storage_options: Optional[dict] = None) -> List[str]:
    """Names of the Parquet files in folder ``url`` readers should see (not ``_``/``.``-prefixed)."""
    return [n for n in _names(url, storage_options) if n.endswith(".parquet") and not n.startswith(("_", "."))]


def hidden_files(url: str, storage_options: Optional[dict] = None) -> List[str]:
    """Names of the ``_``/``.``-prefixed files in folder ``url`` (uncommitted sink output)."""
    return [n for n in _names(url, storage_options) if n.startswith(("_", "."))]


def _canonical(t: pa.Table) -> pa.Table:
    if not t.num_columns or not t.num_rows:
        return t
    return t.sort_by([(c, "ascending") for c in t.column_names])


READERS = ("pyarrow", "pandas", "duckdb")


def read_parquet_output(url: str, storage_options: Optional[dict] = None,
                        readers: Sequence[str] = READERS) -> pa.Table:
    """The rows a Parquet sink committed under folder ``url``, in file-name order.

    The folder is read three ways (``readers``): ``pyarrow.dataset``, ``pandas.read_parquet``
    and DuckDB (``read_parquet('{url}/*.parquet')``; remote folders through the fsspec
    filesystem).  They must hold the same rows, so none may see the sink's hidden (``_``-prefixed),
    uncommitted files; an ``AssertionError`` says which reader disagrees.  An empty or missing
    folder gives an empty table.

    Examples
    --------
    >>> import pyarrow.parquet as pq, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> pq.write_table(pa.table({"x": [2, 1]}), f"{folder}/b.parquet")
    >>> pq.write_table(pa.table({"x": [3]}), f"{folder}/a.parquet")
    >>> read_parquet_output(folder)["x"].to_pylist()
    [3, 2, 1]
    """
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    fs, root = _fs(url, storage_options)
    fs.invalidate_cache()
    names = _names(url, storage_options)
    parquet = [n for n in names if n.endswith(".parquet")]
    visible = [n for n in parquet if not n.startswith(("_", "."))]
    if not parquet:
        return pa.table({})
    found = ds.dataset(root, filesystem=fs, format="parquet")
    seen = sorted(f.rsplit("/", 1)[-1] for f in found.files)
    assert seen == visible, f"pyarrow.dataset reads {seen}, the visible files are {visible}"
    if visible:
        ordered = ds.dataset([f"{root}/{n}" for n in visible], filesystem=fs, format="parquet").to_table()
    else:
        ordered = pa.table({})
    expected = _canonical(ordered)

    def agree(what: str, other: pa.Table) -> None:
        if not visible:
            assert other.num_rows == 0, f"{what} reads {other.num_rows} rows, but no committed file exists"
            return
        assert other.column_names == ordered.column_names, (
            f"{what} reads columns {other.column_names}, pyarrow {ordered.column_names}")
        other = _canonical(other.cast(ordered.schema))
        assert other.num_rows == expected.num_rows and other.equals(expected), (
            f"{what} reads {other.num_rows} rows, pyarrow.dataset {expected.num_rows}; they differ")

    if visible and "pandas" in readers:
        pdf = pd.read_parquet(url if "://" in url else root, storage_options=storage_options or None)
        agree("pandas.read_parquet", pa.Table.from_pandas(pdf, preserve_index=False))
    if "duckdb" not in readers:
        return ordered
    con = duckdb.connect()
    try:
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        glob = f"{root}/*.parquet"
        if "file" not in protocols:
            con.register_filesystem(fs)          # e.g. s3:// through s3fs, no DuckDB extension
            glob = f"{protocols[0]}://{glob}"
        got = con.sql(f"SELECT * FROM read_parquet('{glob}')").arrow()
        agree("DuckDB read_parquet", got.read_all() if isinstance(got, pa.RecordBatchReader) else got)
    finally:
        con.close()
    return ordered


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or ``timeout_s`` passes; its last answer.

    >>> wait_until(lambda: True)
    True
    """
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# -- comparing results ----------------------------------------------------------------------------
def _is_float(t: pa.DataType) -> bool:
    return pat.is_floating(t)


def assert_same_rows(actual: pa.Table, expected: pa.Table, rtol: float = 1e-9) -> None:
    """``actual`` and ``expected`` hold the same rows in any order: exact for every column but
    floating-point ones, which may differ by ``rtol`` (relative; NaN equals NaN).

    >>> assert_same_rows(pa.table({"k": [1, 2], "v": [0.5, 1.0]}), pa.table({"k": [2, 1], "v": [1.0, 0.5]}))
    """
    assert actual.column_names == expected.column_names, (
        f"columns differ: {actual.column_names} vs expected {expected.column_names}")
    actual = actual.cast(expected.schema)
    exact = [c for c in expected.column_names if not _is_float(expected.schema.field(c).type)]
    floats = [c for c in expected.column_names if c not in exact]
    order = [(c, "ascending") for c in exact + floats]
    a = actual.sort_by(order) if actual.num_rows else actual
    e = expected.sort_by(order) if expected.num_rows else expected
    if a.num_rows != e.num_rows or not a.select(exact).equals(e.select(exact)):
        raise AssertionError(_row_diff(actual, expected, exact))
    for c in floats:
        x = a.column(c).to_numpy(zero_copy_only=False).astype(float)
        y = e.column(c).to_numpy(zero_copy_only=False).astype(float)
        bad = ~np.isclose(x, y, rtol=rtol, atol=0.0, equal_nan=True)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AssertionError(
                f"column {c!r}: {int(bad.sum())} of {len(x)} values differ beyond rtol={rtol}; first at "
                f"{ {k: a.column(k)[i].as_py() for k in exact} }: {x[i]!r} vs expected {y[i]!r}")


def _row_diff(actual: pa.Table, expected: pa.Table, exact: Sequence[str], limit: int = 10) -> str:
    a = actual.select(list(exact)).to_pylist()
    e = expected.select(list(exact)).to_pylist()
    from collections import Counter

    ca = Counter(tuple(sorted(r.items())) for r in a)
    ce = Counter(tuple(sorted(r.items())) for r in e)
    extra = list((ca - ce).elements())
    missing = list((ce - ca).elements())
    lines = [f"{actual.num_rows} rows vs {expected.num_rows} expected; {len(extra)} extra "
             f"(duplicated or wrong), {len(missing)} missing"]
    lines += [f"  extra:   {dict(r)}" for r in extra[:limit]]
    lines += [f"  missing: {dict(r)}" for r in missing[:limit]]
    return "\n".join(lines)


def last_per_key(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The last row of each key in ``table``'s order (an update stream's current value),
    sorted by the keys.

    >>> t = pa.table({"k": ["a", "b", "a"], "total": [1, 5, 3]})
    >>> last_per_key(t, ["k"]).to_pydict()
    {'k': ['a', 'b'], 'total': [3, 5]}
    """
    if not table.num_rows:
        return table
    idx = "__row"
    t = table.append_column(idx, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = t.group_by(list(keys), use_threads=False).aggregate([(idx, "max")])
    rows = table.take(last.column(f"{idx}_max"))
    return rows.sort_by([(k, "ascending") for k in keys])


# -- the crash oracle -----------------------------------------------------------------------------
Build = Callable[[StreamEnvironment, Optional[CrashAt]], None]
"""Adds a pipeline and its sinks to ``env``; applies the crash sentinel (if given) with
``.inspect(crash)`` where the test wants the failure."""


@dataclass
class RestoreRun:
    """What :func:`crash_and_restore` did: whether the first run crashed, its checkpoint
    counters (``count``: checkpoints it committed), and the restarted run's result and counters
    (``restores``, ``fallbacks``, ``epoch``...)."""

    crashed: bool
    crashed_checkpoints: object  # heliosdb.metrics.CheckpointStats of the crashed run
    result: JobResult
    checkpoints: object          # heliosdb.metrics.CheckpointStats of the restarted run


def run_job(build: Build, config: StreamingConfig, name: str = "job",
            crash: Optional[CrashAt] = None):
    """Build the pipeline in a fresh environment and run it to its end.

    Returns ``(JobResult or None, CheckpointStats, error)``: a failure caused by the ``crash``
    sentinel is returned as ``error`` (with a None result); any other failure is raised.
    """
    env = StreamEnvironment(config)
    try:
        build(env, crash)
        handle = env.execute_async(name=name)
        try:
            return handle.wait(), handle._job.metrics.checkpoints, None
        except ExecutionError as exc:
            if crash is None or not isinstance(exc.__cause__, InjectedCrash):
                raise
            return None, handle._job.metrics.checkpoints, exc
    finally:
        env.close()


def crash_and_restore(build: Build, config: StreamingConfig, crash_at: int, name: str = "job",
                      restore_config: Optional[StreamingConfig] = None) -> RestoreRun:
    """Run ``build`` with a :class:`CrashAt` ``crash_at`` sentinel (the run fails there, unless
    the input has fewer batches), then again with the same job ``name`` and checkpoint
    storage (``restore_config``, default ``config``: e.g. another parallelism or state
    backend) until it completes."""
    crash = CrashAt(crash_at)
    _, crashed_stats, _ = run_job(build, config, name, crash)
    result, stats, _ = run_job(build, restore_config or config, name, crash)
    return RestoreRun(crash.fired, crashed_stats, result, stats)


# -- Kafka ---------------------------------------------------------------------------------------
def kafka_new_topic(bootstrap: str, partitions: int = 1, prefix: str = "t", timeout: float = 30.0) -> str:
    """Create a topic with a unique name and wait until every partition has a leader.

    Needs a broker (``confluent-kafka``; ``pip install heliosdb-streaming[kafka]``), e.g.
    ``kafka_new_topic("127.0.0.1:9092", partitions=4)`` -> ``"t-1f0c2a9b3d"``.
    """
    import time
    import uuid

    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # retention.ms=-1: test data carries historical timestamps, which a broker's time-based
    # retention would delete between produce and read.
    topic = NewTopic(name, partitions, 1, config={"retention.ms": "-1"})
    for f in admin.create_topics([topic]).values():
        f.result(timeout=timeout)
    deadline = time.monotonic() + timeout            # metadata can lag the creation
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=10).topics.get(name)
        if md is not None and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            return name
        time.sleep(0.1)
    raise AssertionError(f"topic {name} at {bootstrap} has no leaders after {timeout:g}s")


def kafka_produce(bootstrap: str, topic: str, values: Sequence[Optional[bytes]],
                  keys: Optional[Sequence[Optional[bytes]]] = None,
                  partitions: Optional[Sequence[int]] = None,
                  timestamps: Optional[Sequence[int]] = None, conf: Optional[dict] = None,
                  timeout: float = 120.0) -> None:
    """Produce ``values`` (with optional keys, partitions and ms timestamps, one per value) and
    wait until every one is acknowledged; ``conf`` adds librdkafka producer settings.

    Needs a broker, e.g. ``kafka_produce("127.0.0.1:9092", "events", [b'{"x": 1}'])``.
    """
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                  "queue.buffering.max.messages": 2_000_000, **(conf or {})})
    for i, v in enumerate(values):
        kw = {}
        if keys is not None:
            kw["key"] = keys[i]
        if partitions is not None:
            kw["partition"] = int(partitions[i])
        if timestamps is not None:
            kw["timestamp"] = int(timestamps[i])
        while True:
            try:
                p.produce(topic, v, **kw)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(timeout)
    assert left == 0, f"{left} messages to {topic!r} unacknowledged after {timeout:g}s"


def kafka_read(bootstrap: str, topic: str, committed: bool = True, timeout: float = 30.0) -> List:
    """Every message of ``topic`` up to the end offsets it has now (``read_committed`` by
    default: what exactly-once output made visible), as confluent-kafka Message objects in
    (partition, offset) order.

    Needs a broker, e.g. ``[m.value() for m in kafka_read("127.0.0.1:9092", "out")]``.
    """
    import time
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    conf = {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False, "enable.partition.eof": True}
    # The end offsets are the high watermarks, asked without isolation: a read_committed
    # client answers with the last stable offset, which lags a just-committed transaction
    # until the broker has written its commit markers (the read would stop short of it).
    probe = Consumer(dict(conf, **{"isolation.level": "read_uncommitted"}))
    try:
        md = probe.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(md.partitions)
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        probe.close()
    c = Consumer(dict(conf, **{"isolation.level": "read_committed" if committed else "read_uncommitted"}))
    try:
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        todo = {p for p in parts if ends[p] > 0}
        out = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.2):
                if m.error() is not None:
                    if m.offset() >= ends.get(m.partition(), 0):
                        todo.discard(m.partition())
                    continue
                out.append(m)
                if m.offset() + 1 >= ends[m.partition()]:
                    todo.discard(m.partition())
        assert not todo, f"{topic}: partitions {sorted(todo)} not read to their end within {timeout:g}s"
        out.sort(key=lambda m: (m.partition(), m.offset()))
        return out
    finally:
        c.close()
