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
import pyarrow.compute as pc

from ..errors import ConfigError, DataError, SchemaError
from ..formats.values import CONVERT_ERRORS, cast_exact, to_column
from .splits import Splits

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

    #: The source's splits (``connectors.splits.Splits``) when it reads several, each in its
    #: own event-time order (Kafka partitions): the watermark after it is kept per split.
    splits = None

    def check_event_time(self, column: str) -> "Source":
        """A source that treats a row whose ``column`` is null as a bad record (its
        ``on_error`` policy: fail, skip or dead letter, reason ``null_event_time``), for a
        watermark on ``column`` right after it; itself if it has no such policy."""
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
        try:                        # safe: a value that would change is an error, not a cast
            return pa.Table.from_pandas(data, preserve_index=False, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise DataError(
                f"{what}(): a pandas column does not convert to Arrow exactly: {exc}. Give the "
                "column one type that holds its values (e.g. df[col].astype('float64'))") from exc
    if mod == "polars":
        return data.to_arrow()
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, pa.RecordBatch) for b in data):
        return pa.Table.from_batches(list(data))
    raise ConfigError(
        f"{what}() takes a pyarrow Table, RecordBatch, list of RecordBatches, RecordBatchReader, "
        f"pandas or polars DataFrame; got {type(data).__name__}. For Python dicts use from_iterable()"
    )


#: What ``extra=`` accepts (from_iterable, from_parquet): what to do with fields or columns
#: that the schema does not have.
EXTRA = ("error", "ignore")


class ArrowSource(Source):
    """Replays an in-memory Arrow table in slices of the batch size (zero-copy)."""

    kind = "arrow"

    replayable = True

    def __init__(self, table: pa.Table, split_by: Optional[str] = None):
        self.table = table
        self.schema = table.schema
        self._start = 0
        self._row = 0
        self.split_by = split_by
        if split_by is not None:
            if split_by not in table.column_names:
                raise SchemaError(f"from_arrow(split_by={split_by!r}): no such column; the table has "
                                  f"{table.column_names}")
            self.splits = Splits([split_by])

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self._row = self._start
        rest = self.table.slice(self._start) if self._start else self.table
        self._batches: Iterator[pa.RecordBatch] = iter(rest.to_batches(max_chunksize=batch_size))
        if self.splits is not None:
            self._declare_splits()

    def _declare_splits(self) -> None:
        """Every split of the table, and the row after which each is done (a split whose rows
        were all replayed before a restored position is done at once)."""
        self.splits.reset()
        enc = pc.dictionary_encode(self.table.column(self.split_by).combine_chunks())
        codes = enc.indices.to_numpy(zero_copy_only=False)[self._row:]
        keys = [(v,) for v in enc.dictionary.to_pylist()]
        self.splits.declare(keys)
        n = len(codes)
        uniq, last_rev, counts = np.unique(codes[::-1], return_index=True, return_counts=True)
        for k in set(range(len(keys))) - set(uniq.tolist()):
            self.splits.finish(keys[k], 0)
        last = self._row + n - 1 - last_rev                  # absolute row of each split's last row
        order = np.argsort(last, kind="stable")
        self._ends = [(int(last[i]), keys[int(uniq[i])], int(counts[i])) for i in order]

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        b = next(self._batches, None)
        if b is None:
            return None
        self._row += b.num_rows
        if self.splits is not None:
            while self._ends and self._ends[0][0] < self._row:
                _, key, rows = self._ends.pop(0)
                self.splits.finish(key, rows)
        return [(b, time.time_ns())]

    def position(self) -> Any:
        return {"row": self._row}

    def seek(self, position: Any) -> None:
        self._start = int(position["row"])

    def project(self, columns: List[str]) -> "Source":
        out = ArrowSource(self.table.select(columns))
        out._start = self._start
        if self.split_by is not None and self.split_by in columns:
            out.split_by, out.splits = self.split_by, self.splits
        return out

    def describe(self) -> str:
        return f"arrow table ({self.table.num_rows:,} rows, columns {', '.join(self.schema.names)})"


class ParquetSource(Source):
    """Reads Parquet files (an fsspec URL or glob) in order, a batch at a time.

    The first file's schema is the stream's.  Every other file must have its columns with
    the same types; a column a file has in addition is an error (``extra="error"``) or left
    unread (``extra="ignore"``).  Every error names the file, the column, and for a read
    failure the row group.
    """

    kind = "parquet"

    def __init__(self, url: str, storage_options: Optional[dict] = None, extra: str = "error"):
        import fsspec
        import pyarrow.parquet as pq

        if extra not in EXTRA:
            raise ConfigError(f"from_parquet(extra=) must be 'error' or 'ignore', got {extra!r}")
        self.url = url
        self.extra = extra
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
        self.file_schema = self.schema        # what every file must have (kept by project())
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

    def _check_schema(self, path: str, file_schema: pa.Schema) -> None:
        """Raise SchemaError naming ``path`` and the column if the file does not match."""
        first = self.files[0]
        for field in self.file_schema:
            i = file_schema.get_field_index(field.name)
            if i < 0:
                raise SchemaError(
                    f"from_parquet: file {path!r} has no column {field.name!r}, which the first file "
                    f"{first!r} has ({field.type}); all files must have the first file's columns")
            if file_schema.field(i).type != field.type:
                raise SchemaError(
                    f"from_parquet: file {path!r}, column {field.name!r} is {file_schema.field(i).type}, "
                    f"but in the first file {first!r} it is {field.type}; all files must agree "
                    "(rewrite the file, or read the files as separate sources and cast)")
        if self.extra == "error":
            extra = [n for n in file_schema.names if self.file_schema.get_field_index(n) < 0]
            if extra:
                raise SchemaError(
                    f"from_parquet: file {path!r} has column(s) {', '.join(map(repr, extra))} that the "
                    f"first file {first!r} does not have; pass extra='ignore' to leave them unread, "
                    "or make the files agree")

    def _iter(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        first_file, skip = self._start
        self._pos = [first_file, skip]
        columns = self.columns if self.columns is not None else self.schema.names
        want = pa.schema([self.schema.field(c) for c in columns], metadata=self.schema.metadata)
        for fi, path in enumerate(self.files):
            if fi < first_file:
                continue
            read = 0                       # rows of this file read so far (to name a row group)
            pf = None
            try:
                with self.fs.open(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    self._check_schema(path, pf.schema_arrow)
                    self._pos = [fi, 0]
                    for b in pf.iter_batches(batch_size=self.batch_size, columns=columns):
                        read += b.num_rows
                        if not b.schema.equals(want, check_metadata=True):
                            # Another column order, nullability or metadata: the first file's.
                            b = pa.RecordBatch.from_arrays([b.column(c) for c in columns], schema=want)
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
                where = _row_group_at(pf, read) if pf is not None else ""
                raise DataError(f"from_parquet: cannot read {path!r}{where}: {type(exc).__name__}: "
                                f"{exc}") from exc

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


def _row_group_at(pf: Any, row: int) -> str:
    """", row group i (rows a..b)" for the row group holding ``row`` of file ``pf``."""
    try:
        meta = pf.metadata
        lo = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if row < lo + n or g == meta.num_row_groups - 1:
                return f", row group {g} (rows {lo:,}..{lo + n - 1:,})"
            lo += n
    except Exception:  # noqa: BLE001 - only for the message
        pass
    return ""


def infer_schema(record: dict) -> pa.Schema:
    """The schema of one dict record, as pyarrow infers it."""
    if not isinstance(record, dict):
        raise SchemaError(f"from_iterable: records must be dicts, the first one is {type(record).__name__}")
    return pa.Table.from_pylist([record]).schema


class IterableSource(Source):
    """Python dict records from any iterable (possibly slow or blocking).

    A reader thread pulls records into a buffer; the batcher takes what is there when the
    batch is full or its timeout expires, so a slow iterable still flows.  Values are kept
    exactly (see :mod:`heliosdb.formats.values`): one that would change in its column, and
    (with ``extra="error"``) a field the schema does not have, is a DataError naming the
    record's index (0-based, in the iterable's order) and the field.
    """

    kind = "iterable"

    def __init__(self, records: Iterable[dict], schema: Optional[pa.Schema] = None,
                 extra: str = "error"):
        if extra not in EXTRA:
            raise ConfigError(f"from_iterable(extra=) must be 'error' or 'ignore', got {extra!r}")
        self._records = records
        self._schema = schema
        self._inferred = schema is None
        self.extra = extra
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
        schema = self._schema
        if not all(isinstance(r, dict) for r in rows):
            i, r = next((i, r) for i, r in enumerate(rows) if not isinstance(r, dict))
            raise DataError(
                f"from_iterable: record {start + i} is a {type(r).__name__}, not a dict; every "
                "record must be a dict of field name -> value"
            )
        names = set(schema.names)
        if self.extra == "error" and not names.issuperset(set().union(*rows)):
            i, r = next((i, r) for i, r in enumerate(rows) if not names.issuperset(r))
            raise DataError(self._extra_message(start + i, [k for k in r if k not in names]))
        try:                # one C++ pass, types inferred from the values (keys: the first row's)
            inferred: Optional[pa.RecordBatch] = pa.RecordBatch.from_pylist(rows)
        except CONVERT_ERRORS:
            inferred = None
        arrays = []
        for f in schema:
            name = f.name
            column = None
            if inferred is not None and name in inferred.schema.names:
                column = cast_exact(inferred.column(name), f.type)
            if column is None:          # absent from the first row, or a value does not fit
                values = [r.get(name) for r in rows]
                column, bad = to_column(values, f.type, first_only=True)
                if bad:
                    i, why = bad[0]
                    raise DataError(self._value_message(start + i, f, values[i], why))
            if not f.nullable and column.null_count:
                values = [r.get(name) for r in rows]
                i = next(j for j, v in enumerate(values) if v is None)
                what = "absent" if name not in rows[i] else "None"
                raise DataError(f"from_iterable: record {start + i}, field {name!r}: the value is {what}, "
                                f"but the field is non-nullable in the schema ({f.type}); give it a "
                                "value, or make the field nullable")
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _extra_message(self, index: int, fields: List[Any]) -> str:
        listed = ", ".join(repr(k) for k in fields)
        where = ("the schema inferred from record 0" if self._inferred else "the schema")
        return (f"from_iterable: record {index} has field(s) {listed} that {where} does not have "
                f"(it has {', '.join(self._schema.names)}); pass extra='ignore' to drop such "
                "fields, or schema= with them")

    def _value_message(self, index: int, f: pa.Field, value: Any, why: str) -> str:
        msg = f"from_iterable: record {index}, field {f.name!r}: {why}"
        if not self._inferred:
            return msg + "; clean the record, or declare the field with a type that holds the value"
        try:
            hint = pa.array([value]).type
        except CONVERT_ERRORS:
            hint = None
        typ = "null (record 0 had None)" if pa.types.is_null(f.type) else str(f.type)
        msg += (f". The field's type {typ} was inferred from record 0; pass schema= with the "
                "type you want")
        if hint is not None and not pa.types.is_null(hint):
            msg += f", e.g. schema=pa.schema([({f.name!r}, pa.{_type_call(hint)})])"
        return msg

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


CATEGORIES = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta")
#: Events are drawn in blocks of this many, block ``b`` from ``default_rng([seed, b])``, so
#: they do not depend on the batch size (65,536, the default batch size, gives the events
#: earlier versions gave at that batch size).
GENERATOR_BLOCK = 65_536
GENERATOR_SCHEMA = pa.schema([
    ("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()), ("category", pa.string()),
])


class GeneratorSource(Source):
    """Synthetic events: ``ts`` (epoch ms), ``key``, ``value`` in [0, 1), ``category``.

    With ``rate`` (events/s) it is paced to that rate and stamps events with the wall clock;
    without, it runs as fast as it can, with event time advancing ``events_per_ms`` per ms
    from ``start_ms``.  It stops after ``count`` events or ``duration_s`` seconds (or never).
    Event ``i``'s key, value and category depend on the seed and ``i`` alone (they are drawn
    in fixed blocks of :data:`GENERATOR_BLOCK` events), so a replay gives the same events
    whatever the batch size, batch timeout or parallelism.
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
    _start = 0

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self.emitted = self._start
        self._block: Optional[Tuple[int, np.ndarray, np.ndarray, np.ndarray]] = None
        # Paced: continue as if the run had been going at ``rate`` since it started.
        self.t0 = time.monotonic() - (self.emitted / self.rate if self.rate else 0.0)

    def position(self) -> Any:
        return {"emitted": self.emitted}

    def seek(self, position: Any) -> None:
        self._start = int(position["emitted"])

    def _block_values(self, block: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys, values and category codes of events ``block * GENERATOR_BLOCK`` onwards: a
        function of the seed and the block number alone (the last block is kept)."""
        if self._block is None or self._block[0] != block:
            rng = np.random.default_rng([self.seed, block])
            key = rng.integers(0, self.keys, GENERATOR_BLOCK, dtype=np.int64)
            value = rng.random(GENERATOR_BLOCK)
            cat = rng.integers(0, len(CATEGORIES), GENERATOR_BLOCK, dtype=np.int8)
            self._block = (block, key, value, cat)
        return self._block[1], self._block[2], self._block[3]

    def _make(self, n: int) -> pa.RecordBatch:
        lo, hi = self.emitted, self.emitted + n
        parts = []
        for block in range(lo // GENERATOR_BLOCK, (hi - 1) // GENERATOR_BLOCK + 1):
            base = block * GENERATOR_BLOCK
            a, b = max(lo, base) - base, min(hi, base + GENERATOR_BLOCK) - base
            parts.append(tuple(x[a:b] for x in self._block_values(block)))
        key, value, cat = (parts[0] if len(parts) == 1 else
                           tuple(np.concatenate(c) for c in zip(*parts)))
        if self.rate is None:
            ts = self.start_ms + np.arange(lo, hi, dtype=np.int64) // self.events_per_ms
        else:
            ts = np.full(n, time.time_ns() // 1_000_000, dtype=np.int64)
        self.emitted = hi
        return pa.RecordBatch.from_arrays(
            [pa.array(ts), pa.array(key), pa.array(value), self._cats.take(pa.array(cat))],
            schema=self.schema)

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


def _type_call(t: pa.DataType) -> str:
    """How to write ``t`` as a pyarrow call (for error messages): ``float64()``."""
    if pa.types.is_timestamp(t):
        return f"timestamp({t.unit!r}" + (f", {t.tz!r})" if t.tz else ")")
    if pa.types.is_decimal(t):
        return f"decimal128({t.precision}, {t.scale})"
    simple = {"double": "float64()", "float": "float32()", "bool": "bool_()", "string": "string()"}
    return simple.get(str(t), f"{t}()")
