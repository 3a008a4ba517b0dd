"""Sinks: memory (collect), Parquet through fsspec, console, callback.

``heliosdb.sinks.parquet(url)`` and friends build a *spec*; the engine binds it to a sink
operator when the job starts.  A memory sink keeps what it received after the run:
``sink.to_table()``.
"""
from __future__ import annotations

import re
import sys
import threading
import uuid
from typing import Callable, List, Optional, TextIO

import pyarrow as pa

from ..errors import ConfigError, ExecutionError
from ..operators.base import Item, Operator, Snapshot


class SinkSpec:
    """Base class of sink specs; ``bind(schema, name)`` returns the sink operator."""

    kind = "sink"

    def bind(self, schema: pa.Schema, name: str) -> Operator:  # pragma: no cover - abstract
        raise NotImplementedError


class _SinkOperator(Operator):
    """Sink operators are module-level classes holding their spec as an attribute: a class made
    inside ``bind()`` would sit in a reference cycle and keep a run's results alive until the
    cyclic garbage collector happened to run."""

    kind = "sink"

    def __init__(self, name: str, schema: pa.Schema, spec: "SinkSpec"):
        self.name = name
        self.schema = schema
        self.spec = spec

    def on_watermark(self, t: int) -> List[Item]:
        return []


class _MemorySinkOp(_SinkOperator):
    kind = "memory sink"

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        with self.spec._lock:
            self.spec.batches.append(batch)
        return []


class _ConsoleSinkOp(_SinkOperator):
    kind = "console sink"

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        print(format_rows(pa.Table.from_batches([batch]), self.spec.max_rows),
              file=self.spec.file or sys.stdout, flush=True)
        return []


class _CallbackSinkOp(_SinkOperator):
    kind = "callback sink"

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        self.spec.fn(batch)
        return []


_PENDING = ".pending"
_OUTPUT = re.compile(r"^(.+)-(\d{10})-(\d{5})\.parquet$")


def _hidden(name: str) -> str:
    """Where an epoch's file waits for its commit: a leading ``_`` (pyarrow datasets and pandas
    skip it) and no ``.parquet`` suffix (so ``*.parquet`` globs, as DuckDB's, skip it too)."""
    return f"_{name}{_PENDING}"


def _visible(hidden: str) -> str:
    return hidden[1: -len(_PENDING)]


class _ParquetSinkOp(_SinkOperator):
    """Writes rolled Parquet files.

    In a checkpointed job (``epoch`` set) it is exactly-once: an epoch's files are written under
    hidden names (``_{step}-{epoch:010d}-{n:05d}.parquet.pending``: the leading ``_`` makes
    pyarrow datasets and pandas skip them, the suffix ``*.parquet`` globs), the barrier closes them
    (``snapshot()``), and once the epoch's manifest is committed ``commit()`` renames them to
    their final, deterministic names.  ``recover()`` redoes the publishing of the restored
    epoch and deletes whatever later, uncommitted epochs left.
    """

    kind = "parquet sink"

    def __init__(self, name: str, schema: pa.Schema, spec: "ParquetSink", fs, root: str, run: str):
        super().__init__(name, schema, spec)
        self.fs, self.root, self.run = fs, root.rstrip("/"), run
        self.writer = None
        self.handle = None
        self.rows = 0
        self.part = 0
        self.epoch: Optional[int] = None          # set by recover(): exactly-once mode
        self.pending: List[str] = []              # closed, unpublished files (final names)

    #: With checkpoints, files are published when their epoch commits (exactly-once).
    commits = True

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.epoch is not None

    def _name(self) -> str:
        if self.epoch is None:
            return f"part-{self.part:05d}-{self.run}.parquet"
        return f"{self.name}-{self.epoch:010d}-{self.part:05d}.parquet"

    def _open(self) -> None:
        import pyarrow.parquet as pq

        name = self._name()
        path = f"{self.root}/{name}" if self.epoch is None else f"{self.root}/{_hidden(name)}"
        self.part += 1
        self.handle = self.fs.open(path, "wb")
        try:
            self.writer = pq.ParquetWriter(self.handle, self.schema, compression=self.spec.compression)
        except BaseException:
            self.handle.close()
            self.handle = None
            raise
        self.spec.files.append(path)
        self.rows = 0

    def _close_file(self) -> None:
        try:
            self.writer.close()
        finally:
            self.writer = None
            self.handle.close()
            self.handle = None

    def _roll(self) -> None:
        if self.writer is not None:
            self._close_file()
            if self.epoch is not None:
                self.pending.append(_visible(self.spec.files[-1].rsplit("/", 1)[-1]))

    # -- exactly-once (checkpointed jobs) ---------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Barrier: close the epoch's file; the files to publish when the epoch commits."""
        self._roll()
        out = Snapshot({}, {"publish": list(self.pending)})
        self.pending = []
        self.epoch += 1
        self.part = 0
        return out

    def on_commit(self, meta: dict) -> None:
        """The epoch committed: give its files their final names (idempotent)."""
        for name in meta.get("publish", []):
            hidden, final = f"{self.root}/{_hidden(name)}", f"{self.root}/{name}"
            if self.fs.exists(hidden):
                self.fs.mv(hidden, final)

    def recover(self, meta: dict, epoch: int, tables: Optional[dict] = None) -> None:
        """Before the run: publish what the restored epoch committed, delete what later epochs
        left (hidden or, after a fallback to an older checkpoint, published), then write
        epoch ``epoch + 1``."""
        self.on_commit(meta)
        prefix = f"{self.name}-"
        try:
            listing = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:           # an object store's empty prefix
            listing = []
        for path in listing:
            base = path.rstrip("/").rsplit("/", 1)[-1]
            hidden = base.startswith("_") and base.endswith(_PENDING)
            name = _visible(base) if hidden else base
            m = _OUTPUT.match(name)
            if m is None or m.group(1) != self.name:
                continue                    # not this sink's file: never touched
            file_epoch = int(m.group(2))
            if hidden or file_epoch > epoch:
                self.fs.rm(path)
        self.epoch = epoch + 1
        self.part = 0

    def abort(self) -> None:
        """Close and delete the unfinished file (earlier, rolled files stay, complete)."""
        if self.writer is None:
            return
        path = self.spec.files.pop()
        try:
            self._close_file()
        finally:
            if self.fs.exists(path):
                self.fs.rm(path)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        try:
            if self.writer is None:
                self._open()
            self.writer.write_batch(batch)
            self.rows += batch.num_rows
            if self.rows >= self.spec.rows_per_file:
                self._roll()
        except OSError as exc:
            raise ExecutionError(
                f"step {self.name!r}: writing Parquet under {self.spec.url!r} failed: {exc}"
            ) from exc
        return []

    def close(self) -> List[Item]:
        self._roll()
        return []


# -- memory --------------------------------------------------------------------------------------
class MemorySink(SinkSpec):
    """Collects every batch in memory; after the run ``to_table()`` returns them as one Table,
    and while it runs ``snapshot()`` (or ``to_pandas()``) gives the rows so far.

    Examples
    --------
    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> out = hdb.sinks.memory()
    >>> _ = env.from_iterable([{"x": 1}, {"x": 5}]).filter(hdb.col("x") > 2).sink(out)
    >>> _ = env.execute(name="doc-memory")
    >>> out.to_table().to_pydict()
    {'x': [5]}
    >>> out.num_rows, out.to_pandas().shape
    (1, (1, 1))
    """

    kind = "memory"

    def __init__(self) -> None:
        self.batches: List[pa.RecordBatch] = []
        self.schema: Optional[pa.Schema] = None
        self._lock = threading.Lock()

    def bind(self, schema: pa.Schema, name: str) -> Operator:
        self.schema = schema
        self.batches = []
        return _MemorySinkOp(name, schema, self)

    def to_table(self) -> pa.Table:
        """Everything received, as one pyarrow Table (empty with the right schema if nothing)."""
        if self.schema is None:
            raise ConfigError("this memory sink has not been part of an executed job yet")
        with self._lock:
            return pa.Table.from_batches(self.batches, schema=self.schema)

    def snapshot(self) -> pa.Table:
        """The rows received so far, as a pyarrow Table; safe to call while the job runs (the
        batches are shared, not copied, and later batches do not change it).

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> out = hdb.sinks.memory()
        >>> _ = env.generate(rate=50_000).sink(out)
        >>> handle = env.execute_async(name="doc-memory-snapshot")
        >>> first = out.snapshot()                     # while it runs: the rows so far
        >>> handle.stop(); _ = handle.wait()
        >>> first.num_rows <= out.snapshot().num_rows
        True
        """
        if self.schema is None:
            raise ConfigError("this memory sink is not part of a running or finished job yet: "
                              "run one with env.execute_async() first")
        with self._lock:
            batches = list(self.batches)
        return pa.Table.from_batches(batches, schema=self.schema)

    def to_pandas(self):
        """The rows received so far, as a pandas DataFrame (see :meth:`snapshot`)."""
        return self.snapshot().to_pandas()

    @property
    def num_rows(self) -> int:
        """Rows received so far."""
        with self._lock:
            batches = list(self.batches)
        return sum(b.num_rows for b in batches)

    def __repr__(self) -> str:
        return "<MemorySink (not run yet)>" if self.schema is None else f"<MemorySink: {self.num_rows:,} rows>"


def memory_sinks(operators: List[Operator]) -> List[MemorySink]:
    """The memory sinks that ``operators`` (a job's) write to, each once.

    >>> import pyarrow as pa
    >>> out = MemorySink(); op = out.bind(pa.schema([("x", pa.int64())]), "sink-1")
    >>> memory_sinks([op, op]) == [out]
    True
    """
    out: List[MemorySink] = []
    for op in operators:
        if isinstance(op, _MemorySinkOp) and not any(s is op.spec for s in out):
            out.append(op.spec)
    return out


# -- parquet -------------------------------------------------------------------------------------
class ParquetSink(SinkSpec):
    """Writes zstd Parquet files under a folder URL (local path, ``memory://``, ``s3://``...).

    Files are named ``part-{n:05d}-{run}.parquet`` and rolled every ``rows_per_file`` rows.
    """

    kind = "parquet"

    def __init__(self, url: str, storage_options: Optional[dict] = None,
                 rows_per_file: int = 1_000_000, compression: str = "zstd"):
        if rows_per_file <= 0:
            raise ConfigError(f"sinks.parquet(rows_per_file=) must be positive, got {rows_per_file}")
        self.url = url
        self.storage_options = storage_options or {}
        self.rows_per_file = rows_per_file
        self.compression = compression
        self.files: List[str] = []

    def bind(self, schema: pa.Schema, name: str) -> Operator:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        fs.makedirs(root, exist_ok=True)
        self.files = []
        return _ParquetSinkOp(name, schema, self, fs, root, uuid.uuid4().hex[:12])


# -- console -------------------------------------------------------------------------------------
def format_rows(table: pa.Table, max_rows: int = 20) -> str:
    """A small plain-text table of the first ``max_rows`` rows."""
    names = table.column_names
    rows = table.slice(0, max_rows).to_pylist()
    cells = [[str(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    line = " | ".join(n.ljust(w) for n, w in zip(names, widths))
    out = [line, "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    if table.num_rows > max_rows:
        out.append(f"... ({table.num_rows - max_rows:,} more rows)")
    return "\n".join(out)


class ConsoleSink(SinkSpec):
    """Prints each batch as a small text table (at most ``max_rows`` rows of each)."""

    kind = "console"

    def __init__(self, max_rows: int = 20, file: Optional[TextIO] = None):
        self.max_rows = max_rows
        self.file = file

    def bind(self, schema: pa.Schema, name: str) -> Operator:
        return _ConsoleSinkOp(name, schema, self)


# -- callback ------------------------------------------------------------------------------------
class CallbackSink(SinkSpec):
    """Calls ``fn(batch)`` with every record batch that reaches the sink."""

    kind = "callback"

    def __init__(self, fn: Callable[[pa.RecordBatch], None]):
        if not callable(fn):
            raise ConfigError(f"sinks.callback() takes a function of one RecordBatch, got {fn!r}")
        self.fn = fn

    def bind(self, schema: pa.Schema, name: str) -> Operator:
        return _CallbackSinkOp(name, schema, self)
