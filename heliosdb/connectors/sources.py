"""Sources: Arrow/pandas/polars tables and Parquet files through fsspec (this module),
Python iterables (``connectors/iterable.py``) and the synthetic event generator
(``connectors/generator.py``), each a spec that builds its reader (``connectors/base.py``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError, DataError, SchemaError
from .base import Piece, SourceReader, SourceSpec
from .generator import CATEGORIES, GENERATOR_BLOCK, GENERATOR_SCHEMA, GeneratorSource
from .iterable import EXTRA, IterableSource, infer_schema
from .splits import Splits

__all__ = ["SourceSpec", "SourceReader", "Piece", "ArrowSource", "ArrowReader", "ParquetSource",
           "ParquetReader", "IterableSource", "GeneratorSource", "to_arrow_table", "infer_schema", "EXTRA", "CATEGORIES",
           "GENERATOR_BLOCK", "GENERATOR_SCHEMA"]


def to_arrow_table(data: Any, what: str = "from_arrow") -> pa.Table:
    """A pyarrow Table from a Table, RecordBatch(es), RecordBatchReader, pandas or polars frame.

    >>> to_arrow_table([pa.record_batch({"a": [1]}), pa.record_batch({"a": [2]})]).num_rows
    2
    """
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


# -- Arrow ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ArrowSource(SourceSpec):
    """Replays an in-memory Arrow table in slices of the batch size (zero-copy).

    ``split_by`` names a column whose values are the splits the rows came from (e.g. the
    partitions of a captured topic), each in its own event-time order.

    >>> reader = ArrowSource(pa.table({"x": [1, 2, 3]})).build()
    >>> reader.open(batch_size=2)
    >>> [b["x"].to_pylist() for b, _ in reader.poll(0) + reader.poll(0)], reader.poll(0)
    ([[1, 2], [3]], None)
    """

    table: pa.Table
    split_by: Optional[str] = None
    splits: Optional[Splits] = field(default=None, repr=False)

    kind = "arrow"
    bounded = True

    def __post_init__(self) -> None:
        if self.split_by is not None:
            if self.split_by not in self.table.column_names:
                raise SchemaError(f"from_arrow(split_by={self.split_by!r}): no such column; the table has "
                                  f"{self.table.column_names}")
            if self.splits is None:
                object.__setattr__(self, "splits", Splits([self.split_by]))

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self.table.schema

    def project(self, columns: List[str]) -> "ArrowSource":
        keep = self.split_by is not None and self.split_by in columns
        return ArrowSource(self.table.select(columns), self.split_by if keep else None,
                           self.splits if keep else None)

    def describe(self) -> str:
        return f"arrow table ({self.table.num_rows:,} rows, columns {', '.join(self.schema.names)})"

    def build(self) -> "ArrowReader":
        return ArrowReader(self)


class ArrowReader(SourceReader):
    """One replay of an :class:`ArrowSource`; its position is the row it has reached."""

    replayable = True

    def __init__(self, spec: ArrowSource):
        super().__init__(spec)
        self.spec = spec
        self._start = 0
        self._row = 0
        self._batches: Iterator[pa.RecordBatch] = iter(())
        self._ends: List[Tuple[int, tuple, int]] = []

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        table = self.spec.table
        self._row = self._start
        rest = table.slice(self._start) if self._start else table
        self._batches = iter(rest.to_batches(max_chunksize=batch_size))
        if self.splits is not None:
            self._declare_splits()

    def _declare_splits(self) -> None:
        """Every split of the table, and the row after which each is done (a split whose rows
        were all replayed before a restored position is done at once)."""
        self.splits.reset()
        enc = pc.dictionary_encode(self.spec.table.column(self.spec.split_by).combine_chunks())
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


# -- Parquet -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ParquetSource(SourceSpec):
    """Reads Parquet files (an fsspec URL or glob) in order, a batch at a time.

    The first file's schema is the stream's.  Every other file must have its columns with
    the same types; a column a file has in addition is an error (``extra="error"``) or left
    unread (``extra="ignore"``).  Every error names the file, the column, and for a read
    failure the row group.  The files are listed, and the first one's schema read, when the
    spec is made.

    >>> import pyarrow.parquet as pq, fsspec
    >>> with fsspec.open("memory://doc-parquet/a.parquet", "wb") as f:
    ...     pq.write_table(pa.table({"x": [1, 2], "y": ["a", "b"]}), f)
    >>> spec = ParquetSource("memory://doc-parquet/").project(["x"])
    >>> spec.describe()
    "parquet 'memory://doc-parquet/' (1 files, columns x)"
    """

    url: str
    storage_options: Optional[dict] = None
    extra: str = "error"
    #: Filled in when the spec is made: the file system, the files in order, and the schema
    #: every file must have (the first file's).
    fs: Any = field(default=None, repr=False)
    files: Optional[Tuple[str, ...]] = None
    file_schema: Optional[pa.Schema] = field(default=None, repr=False)
    columns: Optional[Tuple[str, ...]] = None

    kind = "parquet"
    bounded = True

    def __post_init__(self) -> None:
        if self.files is not None:
            return                         # a copy (project): already listed
        import fsspec
        import pyarrow.parquet as pq

        if self.extra not in EXTRA:
            raise ConfigError(f"from_parquet(extra=) must be 'error' or 'ignore', got {self.extra!r}")
        fs, path = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
        if any(ch in path for ch in "*?["):
            files = sorted(fs.glob(path))
        elif fs.isdir(path):
            files = sorted(p for p in fs.find(path) if p.endswith(".parquet")
                           and not p.rsplit("/", 1)[-1].startswith(("_", ".")))
        else:
            files = [path] if fs.exists(path) else []
        if not files:
            raise ConfigError(f"from_parquet({self.url!r}): no Parquet files found at that path or glob")
        try:
            with fs.open(files[0], "rb") as f:
                schema = pq.read_schema(f)
        except Exception as exc:
            raise DataError(f"from_parquet: cannot read the schema of {files[0]!r}: {exc}") from exc
        set_ = object.__setattr__
        set_(self, "fs", fs)
        set_(self, "files", tuple(files))
        set_(self, "file_schema", schema)

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        if self.columns is None:
            return self.file_schema
        return pa.schema([self.file_schema.field(c) for c in self.columns])

    def project(self, columns: List[str]) -> "ParquetSource":
        for c in columns:
            self.schema.field(c)           # KeyError for a column the source does not have
        return replace(self, columns=tuple(columns))

    def describe(self) -> str:
        cols = "all columns" if self.columns is None else "columns " + ", ".join(self.columns)
        return f"parquet {self.url!r} ({len(self.files)} files, {cols})"

    def build(self) -> "ParquetReader":
        return ParquetReader(self)


class ParquetReader(SourceReader):
    """One read of a :class:`ParquetSource`; its position is (file, row within the file)."""

    replayable = True

    def __init__(self, spec: ParquetSource):
        super().__init__(spec)
        self.spec = spec
        self._start = (0, 0)
        self._pos = [0, 0]
        self._it: Optional[Iterator[pa.RecordBatch]] = None

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self._pos = list(self._start)
        self._it = self._iter()

    def position(self) -> Any:
        return {"file": self._pos[0], "row": self._pos[1]}

    def seek(self, position: Any) -> None:
        self._start = (int(position["file"]), int(position["row"]))

    def _check_schema(self, path: str, file_schema: pa.Schema) -> None:
        """Raise SchemaError naming ``path`` and the column if the file does not match."""
        spec = self.spec
        first = spec.files[0]
        for f in spec.file_schema:
            i = file_schema.get_field_index(f.name)
            if i < 0:
                raise SchemaError(
                    f"from_parquet: file {path!r} has no column {f.name!r}, which the first file "
                    f"{first!r} has ({f.type}); all files must have the first file's columns")
            if file_schema.field(i).type != f.type:
                raise SchemaError(
                    f"from_parquet: file {path!r}, column {f.name!r} is {file_schema.field(i).type}, "
                    f"but in the first file {first!r} it is {f.type}; all files must agree "
                    "(rewrite the file, or read the files as separate sources and cast)")
        if spec.extra == "error":
            extra = [n for n in file_schema.names if spec.file_schema.get_field_index(n) < 0]
            if extra:
                raise SchemaError(
                    f"from_parquet: file {path!r} has column(s) {', '.join(map(repr, extra))} that the "
                    f"first file {first!r} does not have; pass extra='ignore' to leave them unread, "
                    "or make the files agree")

    def _iter(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        spec = self.spec
        first_file, skip = self._start
        self._pos = [first_file, skip]
        schema = self.schema
        columns = list(spec.columns) if spec.columns is not None else schema.names
        want = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        for fi, path in enumerate(spec.files):
            if fi < first_file:
                continue
            read = 0                       # rows of this file read so far (to name a row group)
            pf = None
            try:
                with spec.fs.open(path, "rb") as f:
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
        if self._it is not None:
            self._it.close()          # closes the file the generator has open


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
