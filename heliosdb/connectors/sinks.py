"""Sinks: memory (collect), Parquet through fsspec, console, callback.

``heliosdb.sinks.parquet(url)`` and friends build a *spec*; the engine binds it to a sink
operator when the job starts.  A memory sink keeps what it received after the run:
``sink.to_table()``.
"""
from __future__ import annotations

import sys
import threading
import uuid
from typing import Callable, List, Optional, TextIO

import pyarrow as pa

from ..errors import ConfigError, ExecutionError
from ..operators.base import Item, Operator


class SinkSpec:
    """Base class of sink specs; ``bind(schema, name)`` returns the sink operator."""

    kind = "sink"

    def bind(self, schema: pa.Schema, name: str) -> Operator:  # pragma: no cover - abstract
        raise NotImplementedError


class _SinkOperator(Operator):
    kind = "sink"

    def __init__(self, name: str, schema: pa.Schema):
        self.name = name
        self.schema = schema


# -- memory --------------------------------------------------------------------------------------
class MemorySink(SinkSpec):
    """Collects every batch in memory; after the run ``to_table()`` returns them as one Table.

    Examples
    --------
    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> out = hdb.sinks.memory()
    >>> _ = env.from_iterable([{"x": 1}, {"x": 5}]).filter(hdb.col("x") > 2).sink(out)
    >>> _ = env.execute(name="doc-memory")
    >>> out.to_table().to_pydict()
    {'x': [5]}
    """

    kind = "memory"

    def __init__(self) -> None:
        self.batches: List[pa.RecordBatch] = []
        self.schema: Optional[pa.Schema] = None
        self._lock = threading.Lock()

    def bind(self, schema: pa.Schema, name: str) -> Operator:
        self.schema = schema
        self.batches = []
        sink = self

        class _Op(_SinkOperator):
            kind = "memory sink"

            def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
                with sink._lock:
                    sink.batches.append(batch)
                return []

            def on_watermark(self, t: int) -> List[Item]:
                return []

        return _Op(name, schema)

    def to_table(self) -> pa.Table:
        """Everything received, as one pyarrow Table (empty with the right schema if nothing)."""
        if self.schema is None:
            raise ConfigError("this memory sink has not been part of an executed job yet")
        with self._lock:
            return pa.Table.from_batches(self.batches, schema=self.schema)


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
        import pyarrow.parquet as pq

        fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        fs.makedirs(root, exist_ok=True)
        spec = self
        spec.files = []
        run = uuid.uuid4().hex[:12]

        class _Op(_SinkOperator):
            kind = "parquet sink"

            def __init__(self) -> None:
                super().__init__(name, schema)
                self.writer = None
                self.handle = None
                self.rows = 0
                self.part = 0

            def _open(self) -> None:
                path = f"{root.rstrip('/')}/part-{self.part:05d}-{run}.parquet"
                self.part += 1
                self.handle = fs.open(path, "wb")
                self.writer = pq.ParquetWriter(self.handle, schema, compression=spec.compression)
                spec.files.append(path)
                self.rows = 0

            def _roll(self) -> None:
                if self.writer is not None:
                    self.writer.close()
                    self.handle.close()
                    self.writer = None

            def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
                try:
                    if self.writer is None:
                        self._open()
                    self.writer.write_batch(batch)
                    self.rows += batch.num_rows
                    if self.rows >= spec.rows_per_file:
                        self._roll()
                except OSError as exc:
                    raise ExecutionError(f"step {name!r}: writing Parquet under {spec.url!r} failed: {exc}") from exc
                return []

            def on_watermark(self, t: int) -> List[Item]:
                return []

            def close(self) -> List[Item]:
                self._roll()
                return []

        return _Op()


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
        spec = self

        class _Op(_SinkOperator):
            kind = "console sink"

            def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
                print(format_rows(pa.Table.from_batches([batch]), spec.max_rows),
                      file=spec.file or sys.stdout, flush=True)
                return []

            def on_watermark(self, t: int) -> List[Item]:
                return []

        return _Op(name, schema)


# -- callback ------------------------------------------------------------------------------------
class CallbackSink(SinkSpec):
    """Calls ``fn(batch)`` with every record batch that reaches the sink."""

    kind = "callback"

    def __init__(self, fn: Callable[[pa.RecordBatch], None]):
        if not callable(fn):
            raise ConfigError(f"sinks.callback() takes a function of one RecordBatch, got {fn!r}")
        self.fn = fn

    def bind(self, schema: pa.Schema, name: str) -> Operator:
        fn = self.fn

        class _Op(_SinkOperator):
            kind = "callback sink"

            def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
                fn(batch)
                return []

            def on_watermark(self, t: int) -> List[Item]:
                return []

        return _Op(name, schema)
