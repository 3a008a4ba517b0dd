"""Sources: Arrow/pandas/polars tables, Parquet files through fsspec, Python iterables, and the
synthetic event generator.

A source is polled by the micro-batcher on the source thread: ``poll(timeout_s)`` returns the
pieces (record batches with their ingestion time) that are ready, waiting at most
``timeout_s`` for the first one, or ``None`` once the source is exhausted.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, DataError, SchemaError

Piece = Tuple[pa.RecordBatch, int]


class Source:
    """Base class of every source."""

    kind = "source"
    schema: pa.Schema

    def open(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    #: Whether the source can report a position and seek back to it (checkpoints need it).
    replayable = False

    def position(self) -> Any:
        """JSON-able position after the last row ``poll`` returned (replayable sources)."""
        return None

    def seek(self, position: Any) -> None:
        """Start the next ``open()`` at ``position`` (from ``position()`` of an earlier run)."""
        raise ConfigError(f"the {self.kind} source cannot seek, so it cannot restore a checkpoint")

    def describe(self) -> str:
        return self.kind

    def project(self, columns: List[str]) -> "Source":
        """A source that yields only ``columns`` (itself if it cannot prune)."""
        return self


def to_arrow_table(data: Any, what: str = "from_arrow") -> pa.Table:
    """A pyarrow Table from a Table, RecordBatch(es), RecordBatchReader, pandas or polars frame."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    mod = type(data).__module__.split(".")[0]
    if mod == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if mod == "polars":
        return data.to_arrow()
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, pa.RecordBatch) for b in data):
        return pa.Table.from_batches(list(data))
    raise ConfigError(
        f"{what}() takes a pyarrow Table, RecordBatch, list of RecordBatches, RecordBatchReader, "
        f"pandas or polars DataFrame; got {type(data).__name__}. For Python dicts use from_iterable()"
    )


class ArrowSource(Source):
    """Replays an in-memory Arrow table in slices of the batch size (zero-copy)."""

    kind = "arrow"

    replayable = True

    def __init__(self, table: pa.Table):
        self.table = table
        self.schema = table.schema
        self._start = 0
        self._row = 0

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self._row = self._start
        rest = self.table.slice(self._start) if self._start else self.table
        self._batches: Iterator[pa.RecordBatch] = iter(rest.to_batches(max_chunksize=batch_size))

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        b = next(self._batches, None)
        if b is None:
            return None
        self._row += b.num_rows
        return [(b, time.time_ns())]

    def position(self) -> Any:
        return {"row": self._row}

    def seek(self, position: Any) -> None:
        self._start = int(position["row"])

    def project(self, columns: List[str]) -> "Source":
        out = ArrowSource(self.table.select(columns))
        out._start = self._start
        return out

    def describe(self) -> str:
        return f"arrow table ({self.table.num_rows:,} rows, columns {', '.join(self.schema.names)})"


class ParquetSource(Source):
    """Reads Parquet files (an fsspec URL or glob) in order, a batch at a time."""

    kind = "parquet"

    def __init__(self, url: str, storage_options: Optional[dict] = None):
        import fsspec
        import pyarrow.parquet as pq

        self.url = url
        self.fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if any(ch in path for ch in "*?["):
            files = sorted(self.fs.glob(path))
        elif self.fs.isdir(path):
            files = sorted(p for p in self.fs.find(path) if p.endswith(".parquet")
                           and not p.rsplit("/", 1)[-1].startswith(("_", ".")))
        else:
            files = [path] if self.fs.exists(path) else []
        if not files:
            raise ConfigError(f"from_parquet({url!r}): no Parquet files found at that path or glob")
        self.files = files
        try:
            with self.fs.open(files[0], "rb") as f:
                self.schema = pq.read_schema(f)
        except Exception as exc:
            raise DataError(f"from_parquet: cannot read the schema of {files[0]!r}: {exc}") from exc
        self.columns: Optional[List[str]] = None

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self._pos = list(self._start)
        self._it = self._iter()

    replayable = True
    _start = (0, 0)

    def position(self) -> Any:
        return {"file": self._pos[0], "row": self._pos[1]}

    def seek(self, position: Any) -> None:
        self._start = (int(position["file"]), int(position["row"]))

    def _iter(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        first_file, skip = self._start
        self._pos = [first_file, skip]
        for fi, path in enumerate(self.files):
            if fi < first_file:
                continue
            try:
                with self.fs.open(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    file_schema = pf.schema_arrow
                    for field in self.schema:
                        i = file_schema.get_field_index(field.name)
                        if i < 0 or file_schema.field(i).type != field.type:
                            raise SchemaError(
                                f"from_parquet: file {path!r} has schema {file_schema}, but the first "
                                f"file {self.files[0]!r} has {field.name!r} as {field.type}; all files "
                                "must agree"
                            )
                    self._pos = [fi, 0]
                    for b in pf.iter_batches(batch_size=self.batch_size, columns=self.columns):
                        if skip:
                            cut = min(skip, b.num_rows)
                            skip -= cut
                            self._pos[1] += cut
                            b = b.slice(cut)
                            if not b.num_rows:
                                continue
                        self._pos[1] += b.num_rows
                        yield b
                    self._pos = [fi + 1, 0]
            except (SchemaError, DataError):
                raise
            except Exception as exc:
                raise DataError(f"from_parquet: cannot read {path!r}: {exc}") from exc

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        b = next(self._it, None)
        return None if b is None else [(b, time.time_ns())]

    def close(self) -> None:
        it = getattr(self, "_it", None)
        if it is not None:
            it.close()          # closes the file the generator has open

    def project(self, columns: List[str]) -> "Source":
        import copy

        out = copy.copy(self)
        out.columns = list(columns)
        out.schema = pa.schema([self.schema.field(c) for c in columns])
        return out

    def describe(self) -> str:
        cols = "all columns" if self.columns is None else "columns " + ", ".join(self.columns)
        return f"parquet {self.url!r} ({len(self.files)} files, {cols})"


def infer_schema(record: dict) -> pa.Schema:
    """The schema of one dict record, as pyarrow infers it."""
    if not isinstance(record, dict):
        raise SchemaError(f"from_iterable: records must be dicts, the first one is {type(record).__name__}")
    return pa.Table.from_pylist([record]).schema


class IterableSource(Source):
    """Python dict records from any iterable (possibly slow or blocking).

    A reader thread pulls records into a buffer; the batcher takes what is there when the
    batch is full or its timeout expires, so a slow iterable still flows.
    """

    kind = "iterable"

    def __init__(self, records: Iterable[dict], schema: Optional[pa.Schema] = None):
        self._records = records
        self._schema = schema
        self._first: List[dict] = []
        self._iter: Optional[Iterator[dict]] = None
        self._consumed = False

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        if self._schema is None:
            self._iter = iter(self._records)
            first = next(self._iter, None)
            if first is None:
                raise SchemaError("from_iterable: the iterable is empty, so no schema can be inferred; pass schema=")
            self._first = [first]
            self._schema = infer_schema(first)
        return self._schema

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        schema = self.schema
        if self._iter is None or self._consumed:
            if self._consumed and iter(self._records) is self._records:
                raise ConfigError(
                    "from_iterable: this source wraps a one-shot iterator (e.g. a generator) that an "
                    "earlier run consumed; pass a list, or create the source again for each run"
                )
            self._iter = iter(self._records)
            self._first = []
        self._consumed = True
        self._rows: List[dict] = list(self._first)
        self._first_ns = time.time_ns() if self._rows else 0
        self._done = False
        self._error: Optional[BaseException] = None
        self._closed = False
        self._cond = threading.Condition()
        self._index = 0
        self._schema = schema
        self._reader = threading.Thread(target=self._read, name="iterable-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for rec in self._iter:
                with self._cond:
                    if self._closed:
                        return
                    self._rows.append(rec)
                    if len(self._rows) == 1:
                        self._first_ns = time.time_ns()
                        self._cond.notify()
                    elif len(self._rows) >= self.batch_size:
                        self._cond.notify()
                        # Bound the buffer: wait while a whole batch is already waiting.
                        self._cond.wait_for(lambda: len(self._rows) < 2 * self.batch_size or self._closed)
        except BaseException as exc:  # noqa: BLE001 - reported from poll()
            self._error = exc
        with self._cond:
            self._done = True
            self._cond.notify()

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        with self._cond:
            if not self._rows and not self._done:
                self._cond.wait_for(lambda: self._rows or self._done, timeout_s)
            if self._error is not None:
                raise DataError(f"from_iterable: the iterable raised {type(self._error).__name__}: "
                                f"{self._error}") from self._error
            if not self._rows:
                return None if self._done else []
            rows, self._rows = self._rows[: self.batch_size], self._rows[self.batch_size:]
            ingest = self._first_ns
            self._first_ns = time.time_ns() if self._rows else 0
            self._cond.notify_all()
        start = self._index
        self._index += len(rows)
        return [(self._to_batch(rows, start), ingest)]

    def _to_batch(self, rows: List[dict], start: int) -> pa.RecordBatch:
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise DataError(
                    f"from_iterable: record {start + i} is a {type(r).__name__}, not a dict; every "
                    "record must be a dict of field name -> value"
                )
        try:
            return pa.RecordBatch.from_pylist(rows, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            for i, r in enumerate(rows):
                for f in self._schema:
                    try:
                        pa.array([r.get(f.name)], type=f.type)
                    except Exception:
                        raise DataError(
                            f"from_iterable: record {start + i}, field {f.name!r}: value "
                            f"{r.get(f.name)!r} does not fit type {f.type}; pass schema= with the "
                            "right type or clean the record"
                        ) from exc
            raise DataError(f"from_iterable: records {start}..{start + len(rows) - 1}: {exc}") from exc

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


CATEGORIES = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta")
GENERATOR_SCHEMA = pa.schema([
    ("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()), ("category", pa.string()),
])


class GeneratorSource(Source):
    """Synthetic events: ``ts`` (epoch ms), ``key``, ``value`` in [0, 1), ``category``.

    With ``rate`` (events/s) it is paced to that rate and stamps events with the wall clock;
    without, it runs as fast as it can, with event time advancing ``events_per_ms`` per ms
    from ``start_ms``.  It stops after ``count`` events or ``duration_s`` seconds (or never).
    Chunk ``i`` is generated from the seed and ``i`` alone, so a run is reproducible.
    """

    kind = "generate"

    def __init__(self, rate: Optional[float], count: Optional[int], duration_s: Optional[float],
                 keys: int, seed: int, start_ms: int, events_per_ms: int):
        if rate is not None and rate <= 0:
            raise ConfigError(f"generate(rate=) must be positive events/s, got {rate!r}")
        if count is not None and count < 0:
            raise ConfigError(f"generate(count=) must be >= 0, got {count!r}")
        if keys <= 0:
            raise ConfigError(f"generate(keys=) must be positive, got {keys!r}")
        self.rate, self.count, self.duration_s = rate, count, duration_s
        self.keys, self.seed = keys, seed
        self.start_ms, self.events_per_ms = start_ms, events_per_ms
        self.schema = GENERATOR_SCHEMA
        self._cats = pa.array(CATEGORIES)

    replayable = True
    _start = (0, 0)

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self.emitted, self.chunk = self._start
        # Paced: continue as if the run had been going at ``rate`` since it started.
        self.t0 = time.monotonic() - (self.emitted / self.rate if self.rate else 0.0)

    def position(self) -> Any:
        return {"emitted": self.emitted, "chunk": self.chunk}

    def seek(self, position: Any) -> None:
        self._start = (int(position["emitted"]), int(position["chunk"]))

    def _make(self, n: int) -> pa.RecordBatch:
        rng = np.random.default_rng([self.seed, self.chunk])
        self.chunk += 1
        i = np.arange(self.emitted, self.emitted + n, dtype=np.int64)
        if self.rate is None:
            ts = self.start_ms + i // self.events_per_ms
        else:
            ts = np.full(n, time.time_ns() // 1_000_000, dtype=np.int64)
        key = rng.integers(0, self.keys, n, dtype=np.int64)
        value = rng.random(n)
        cat = self._cats.take(pa.array(rng.integers(0, len(CATEGORIES), n, dtype=np.int8)))
        self.emitted += n
        return pa.RecordBatch.from_arrays(
            [pa.array(ts), pa.array(key), pa.array(value), cat], schema=self.schema)

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        elapsed = time.monotonic() - self.t0
        if self.duration_s is not None and elapsed >= self.duration_s:
            return None
        left = None if self.count is None else self.count - self.emitted
        if left == 0:
            return None
        if self.rate is None:
            n = self.batch_size
        else:
            due = int(self.rate * elapsed) - self.emitted
            if due <= 0:
                # Sleep until the next event is due (at most the batcher's wait, at least 0.2 ms).
                next_at = (self.emitted + 1) / self.rate
                time.sleep(min(max(next_at - elapsed, 0.0002), max(timeout_s, 0.0002)))
                return []
            n = min(due, self.batch_size)
        if left is not None:
            n = min(n, left)
        return [(self._make(n), time.time_ns())]

    def describe(self) -> str:
        rate = "max rate" if self.rate is None else f"{self.rate:,.0f} events/s"
        return f"generate({rate})"
